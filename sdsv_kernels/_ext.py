"""The optional native extension ``sdsv_kernels._C`` (C++ CPU kernels, plus CUDA kernels when
it was built against a CUDA torch with nvcc). Absent -> ``C is None`` and ``REASON`` says why;
the package then runs on the reference (and Triton) backends."""

from __future__ import annotations

import torch

from .reference import METRIC_IDS, check_accept_args, check_gather_combine_args

try:
    from . import _C as C  # type: ignore[attr-defined]

    REASON: str | bool = True
except ImportError as exc:  # not built (SDSV_BUILD_EXT=0, no compiler, sdist) or ABI mismatch
    C = None
    REASON = f"the C++ extension sdsv_kernels._C is not built ({exc}); see docs/kernels.md"

HAS_CUDA = bool(C is not None and C.has_cuda())


def _f32(x, device) -> torch.Tensor:
    return torch.as_tensor(x, device=device).reshape(-1).to(torch.float32).contiguous()


def pair_stats(t, d, y, h):
    return C.pair_stats(t, d, y, _f32(h, t.device))


def accept_commit(stats, y, t, h, sigma, window_k, metric, tau, verify, out=None):
    check_accept_args(metric, verify)
    dev = y.device
    kk = window_k.to(device=dev, dtype=torch.int64).reshape(-1).contiguous()
    st = stats.to(device=dev, dtype=torch.float32).contiguous()
    x, a = C.accept_commit(st, y, t, _f32(h, dev), _f32(sigma, dev), kk, METRIC_IDS[metric], float(tau), verify == "full", out)
    return x, a


def rollout_step(x, v, h, out=None):
    return C.rollout_step(x, v, _f32(h, x.device), out)


def gather_combine(base, bank, index, coeffs, out=None):
    check_gather_combine_args(base, bank, index, coeffs, out)
    return C.gather_combine(base, bank, index, coeffs, out)


CPU_OPS = CUDA_OPS = {
    "pair_stats": pair_stats, "accept_commit": accept_commit, "rollout_step": rollout_step,
    "gather_combine": gather_combine,
}
