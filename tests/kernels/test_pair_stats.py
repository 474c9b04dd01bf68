"""pair_stats on every native backend vs the reference and a float64 oracle.

Tolerance (all dtypes: the inputs are upcast exactly, the arithmetic is fp32 either way): error
relative to each column's scale <= 2e-5 for rows up to ~2e4 elements, <= 1e-4 at >= 1M elements.
"""

from __future__ import annotations

import pytest
import torch

import sdsv_kernels
from sdsv_kernels import reference

from .conftest import DTYPES, assert_stats_close

# (R, latent shape): odd sizes, never a multiple of the 16-lane / 2048 / 8192-element blocks
SHAPES = [(1, (7,)), (2, (3, 5, 7)), (3, (1, 1000)), (7, (4, 33, 17)), (10, (2, 8197)), (13, (16, 61)), (20, (5, 13))]
SHAPE_IDS = [f"R{r}-D{'x'.join(map(str, s))}" for r, s in SHAPES]


def _inputs(rows, shape, dtype, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    t = torch.randn((rows, *shape), generator=g)
    d = t + 0.3 * torch.randn((rows, *shape), generator=g)
    y = 2.0 * torch.randn((rows, *shape), generator=g)
    h = -torch.rand(rows, generator=g) * 0.2
    return [x.to(device=device, dtype=dtype) for x in (t, d, y)] + [h.to(device)]


@pytest.mark.parametrize("rows,shape", SHAPES, ids=SHAPE_IDS)
@pytest.mark.parametrize("dtype", DTYPES.values(), ids=DTYPES.keys())
def test_matches_reference_and_oracle(backend, rows, shape, dtype):
    _, dev = backend
    t, d, y, h = _inputs(rows, shape, dtype, dev)
    got = sdsv_kernels.pair_stats(t, d, y, h)
    assert got.shape == (rows, 5) and got.dtype == torch.float32 and got.device.type == dev
    assert_stats_close(got, t, d, y, h, rtol=2e-5)
    ref = reference.pair_stats(t.cpu(), d.cpu(), y.cpu(), h.cpu())
    torch.testing.assert_close(got.cpu(), ref, rtol=4e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", DTYPES.values(), ids=DTYPES.keys())
def test_reference_matches_oracle(dtype):
    for rows, shape in SHAPES:
        t, d, y, h = _inputs(rows, shape, dtype, "cpu", seed=rows)
        assert_stats_close(reference.pair_stats(t, d, y, h), t, d, y, h, rtol=2e-5)


@pytest.mark.parametrize("layout", ["row-strided", "transposed", "expanded-h"])
@pytest.mark.parametrize("dtype", DTYPES.values(), ids=DTYPES.keys())
def test_non_contiguous(backend, layout, dtype):
    _, dev = backend
    t, d, y, h = _inputs(12, (6, 37), dtype, dev, seed=3)
    if layout == "row-strided":  # every other row of a window buffer: rows apart, rows contiguous
        t, d, y, h = t[::2], d[::2], y[::2], h[::2]
    elif layout == "transposed":  # elements of a row not contiguous: one documented copy
        t, d, y = (x.transpose(1, 2) for x in (t, d, y))
    else:  # h as a broadcast view
        h = h[:1].expand(12)
    assert not t.is_contiguous() or layout == "expanded-h"
    got = sdsv_kernels.pair_stats(t, d, y, h)
    assert_stats_close(got, t, d, y, h, rtol=2e-5)


def test_large_row_once(backend):
    """>= 1M elements per row (odd size): chunked reductions, many blocks, fp32 accumulation."""
    _, dev = backend
    numel = 1_048_583
    t, d, y, h = _inputs(2, (numel,), torch.float32, dev, seed=7)
    got = sdsv_kernels.pair_stats(t, d, y, h)
    assert_stats_close(got, t, d, y, h, rtol=1e-4)
    # and the fused commit over the same large rows
    window_k = torch.tensor([1], device=dev)
    x, a = sdsv_kernels.accept_commit(got, y, t, h, torch.ones(2, device=dev), window_k, "cosine", -1.0, "endpoints")
    assert a.tolist() == [1]
    torch.testing.assert_close(x[0], y[1] + h[1] * t[1], rtol=1e-6, atol=1e-6)


def test_deterministic(backend):
    name, dev = backend
    t, d, y, h = _inputs(3, (70_001,), torch.float32, dev, seed=11)
    first = sdsv_kernels.pair_stats(t, d, y, h)
    assert torch.equal(first, sdsv_kernels.pair_stats(t, d, y, h))
    if name == "cpp":  # fixed chunking: the thread count must not change a single bit
        n = torch.get_num_threads()
        try:
            torch.set_num_threads(1)
            assert torch.equal(first, sdsv_kernels.pair_stats(t, d, y, h))
        finally:
            torch.set_num_threads(n)


@pytest.mark.parametrize("where", ["t", "d", "y"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf")], ids=["nan", "inf"])
def test_non_finite_propagates_to_its_row_only(backend, where, bad):
    _, dev = backend
    t, d, y, h = _inputs(4, (3, 101), torch.float32, dev, seed=5)
    {"t": t, "d": d, "y": y}[where][2, 1, 50] = bad
    got = sdsv_kernels.pair_stats(t, d, y, h).cpu()
    assert not torch.isfinite(got[2]).all()
    assert torch.isfinite(got[[0, 1, 3]]).all()
