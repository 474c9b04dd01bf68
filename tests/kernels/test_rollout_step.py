"""rollout_step on every native backend vs the reference. Tolerance: conftest.OUT_TOL (~1 ulp
of the output dtype; fp32 a few fp32 ulps)."""

from __future__ import annotations

import pytest
import torch

import sdsv_kernels
from sdsv_kernels import reference

from .conftest import DTYPES, OUT_TOL

SHAPES = [(1, (7,)), (2, (3, 5, 7)), (5, (1, 1000)), (9, (4, 33, 17)), (20, (2, 301))]
SHAPE_IDS = [f"R{r}-D{'x'.join(map(str, s))}" for r, s in SHAPES]


def _inputs(rows, shape, dtype, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    x, v = (torch.randn((rows, *shape), generator=g).to(device=device, dtype=dtype) for _ in range(2))
    h = (-torch.rand(rows, generator=g) * 0.2).to(device)
    return x, v, h


@pytest.mark.parametrize("rows,shape", SHAPES, ids=SHAPE_IDS)
@pytest.mark.parametrize("dtype", DTYPES.values(), ids=DTYPES.keys())
def test_matches_reference(backend, rows, shape, dtype):
    _, dev = backend
    x, v, h = _inputs(rows, shape, dtype, dev)
    got = sdsv_kernels.rollout_step(x, v, h)
    ref = reference.rollout_step(x.cpu(), v.cpu(), h.cpu())
    assert got.dtype == dtype and got.shape == x.shape
    torch.testing.assert_close(got.cpu().float(), ref.float(), **OUT_TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES.values(), ids=DTYPES.keys())
def test_scalar_h(backend, dtype):
    _, dev = backend
    x, v, _ = _inputs(3, (5, 41), dtype, dev, seed=1)
    got = sdsv_kernels.rollout_step(x, v, -0.05)
    ref = reference.rollout_step(x.cpu(), v.cpu(), -0.05)
    torch.testing.assert_close(got.cpu().float(), ref.float(), **OUT_TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES.values(), ids=DTYPES.keys())
def test_writes_into_window_buffer_rows(backend, dtype):
    """out = rows of a preallocated window buffer (contiguous slice, strided rows, and a
    transposed view that needs the staging path); nothing else in the buffer changes."""
    _, dev = backend
    x, v, h = _inputs(3, (4, 29), dtype, dev, seed=2)
    ref = reference.rollout_step(x.cpu(), v.cpu(), h.cpu())
    buf = torch.full((8, 4, 29), 7.0, device=dev, dtype=dtype)
    for rows in (slice(1, 4), slice(1, 7, 2)):
        buf.fill_(7.0)
        out = buf[rows]
        res = sdsv_kernels.rollout_step(x, v, h, out=out)
        assert res.data_ptr() == out.data_ptr()
        torch.testing.assert_close(buf[rows].cpu().float(), ref.float(), **OUT_TOL[dtype])
        untouched = torch.ones(8, dtype=torch.bool)
        untouched[rows] = False
        assert (buf[untouched] == 7.0).all()
    tbuf = torch.zeros((3, 29, 4), device=dev, dtype=dtype)
    sdsv_kernels.rollout_step(x, v, h, out=tbuf.transpose(1, 2))
    torch.testing.assert_close(tbuf.transpose(1, 2).cpu().float(), ref.float(), **OUT_TOL[dtype])


def test_non_contiguous_inputs(backend):
    _, dev = backend
    x, v, h = _inputs(6, (9, 31), torch.float32, dev, seed=4)
    xs, vs = (a.transpose(1, 2) for a in (x, v))
    got = sdsv_kernels.rollout_step(xs[::2], vs[::2], h[::2])
    ref = reference.rollout_step(xs[::2].cpu(), vs[::2].cpu(), h[::2].cpu())
    torch.testing.assert_close(got.cpu(), ref, **OUT_TOL[torch.float32])


def test_float64_takes_the_reference(backend):
    """fp64 latents are served by the reference (fp64 updates) even under a forced native backend."""
    _, dev = backend
    x, v, h = _inputs(3, (4, 5), torch.float64, dev, seed=8)
    assert sdsv_kernels.resolve(x) == "reference"
    got = sdsv_kernels.rollout_step(x, v, h)
    assert got.dtype == torch.float64
    torch.testing.assert_close(got.cpu(), x.cpu() + h.cpu().double().view(-1, 1, 1) * v.cpu(), rtol=0, atol=1e-15)
    # a Python-float step keeps fp64 precision on its way to an fp64 update
    got = sdsv_kernels.rollout_step(x, v, 0.1)
    torch.testing.assert_close(got.cpu(), x.cpu() + 0.1 * v.cpu(), rtol=0, atol=1e-15)
    stats = sdsv_kernels.pair_stats(x, v, x, h)
    xn, a = sdsv_kernels.accept_commit(stats, x, v, h, torch.ones(3, device=dev), torch.tensor([1, 0], device=dev), "cosine", -1.0, "endpoints")
    assert a.tolist() == [1, 0] and xn.dtype == torch.float64
