"""One argument contract for every backend: the same inputs are refused with the same error by
reference, cpp, triton and cuda alike (checked once, at the op boundary), and empty batches work."""

import pytest
import torch

import sdsv_kernels

from .conftest import backend_params


@pytest.fixture(params=[pytest.param(("reference", "cpu"), id="reference-cpu")] + backend_params())
def any_backend(request):
    name, dev = request.param
    with sdsv_kernels.use_backend(name):
        yield name, dev


def _rows(r=3, f=(4, 5), dtype=torch.float32, dev="cpu"):
    g = torch.Generator().manual_seed(0)
    return [torch.randn((r, *f), generator=g).to(dev, dtype) for _ in range(3)] + [torch.full((r,), -0.1, device=dev)]


BAD_PAIR_STATS = {
    "shape": (lambda t, d, y, h: (t, d[:, :3], y, h), ValueError, r"d has shape \(3, 3, 5\), t has \(3, 4, 5\)"),
    "mixed dtype": (lambda t, d, y, h: (t, d.bfloat16(), y, h), TypeError, "d is torch.bfloat16, t is torch.float32"),
    "int latents": (lambda t, d, y, h: (t.long(), d.long(), y.long(), h), TypeError, "must be a floating tensor"),
    "h length": (lambda t, d, y, h: (t, d, y, h[:2]), ValueError, r"h must hold 3 values \(one per row\)"),
    "h not a tensor": (lambda t, d, y, h: (t, d, y, 0.1), TypeError, "h must be a tensor, got float"),
    "0-d": (lambda t, d, y, h: (t[0, 0, 0], d[0, 0, 0], y[0, 0, 0], h), ValueError, "must be \\[R, ...\\]"),
}


@pytest.mark.parametrize("what", BAD_PAIR_STATS)
def test_pair_stats_refuses_alike(any_backend, what):
    _, dev = any_backend
    change, exc, match = BAD_PAIR_STATS[what]
    with pytest.raises(exc, match=match):
        sdsv_kernels.pair_stats(*change(*_rows(dev=dev)))


def test_rollout_step_refuses_alike(any_backend):
    _, dev = any_backend
    x, v, _, h = _rows(dev=dev)
    with pytest.raises(ValueError, match="out has internal overlap"):
        sdsv_kernels.rollout_step(x, v, h, out=torch.empty((1, 4, 5), device=dev).expand(3, 4, 5))
    with pytest.raises(ValueError, match=r"out must be \(3, 4, 5\) torch.float32"):
        sdsv_kernels.rollout_step(x, v, h, out=torch.empty((3, 4, 5), device=dev, dtype=torch.float64))
    with pytest.raises(TypeError, match="v is torch.float16, x is torch.float32"):
        sdsv_kernels.rollout_step(x, v.half(), h)
    with pytest.raises(ValueError, match="h must hold 3 values"):
        sdsv_kernels.rollout_step(x, v, h[:2])


def test_accept_commit_refuses_alike(any_backend):
    _, dev = any_backend
    t, d, y, h = _rows(dev=dev)
    stats = sdsv_kernels.pair_stats(t, d, y, h)
    k = torch.tensor([2], device=dev)
    with pytest.raises(ValueError, match=r"stats must be pair_stats' \[R=3, 5\] fp32"):
        sdsv_kernels.accept_commit(stats[:2], y, t, h, h.abs(), k, "x0_rms", 0.3, "full")
    with pytest.raises(TypeError, match="window_k must be a 1-d int tensor"):
        sdsv_kernels.accept_commit(stats, y, t, h, h.abs(), k.float(), "x0_rms", 0.3, "full")
    with pytest.raises(ValueError, match="sigma must hold 3 values"):
        sdsv_kernels.accept_commit(stats, y, t, h, h.abs()[:1], k, "x0_rms", 0.3, "full")
    with pytest.raises(ValueError, match="unknown verify mode"):
        sdsv_kernels.accept_commit(stats, y, t, h, h.abs(), k, "x0_rms", 0.3, "some")


def test_empty_batches(any_backend):
    _, dev = any_backend
    t, d, y, h = _rows(r=0, dev=dev)
    assert sdsv_kernels.pair_stats(t, d, y, h).shape == (0, 5)
    assert sdsv_kernels.rollout_step(y, d, h).shape == (0, 4, 5)
    x, a = sdsv_kernels.accept_commit(torch.zeros((0, 5), device=dev), y, t, h, h, torch.zeros(0, dtype=torch.long,
                                      device=dev), "x0_rms", 0.3, "full")
    assert x.shape == (0, 4, 5) and a.shape == (0,)
