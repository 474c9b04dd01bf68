"""Ops of the SDSV sampler, behind one stable interface.

The sampler (``sdsv.sample``) only ever calls the functions below. Each has a pure-torch
reference in :mod:`sdsv_kernels.reference` (the spec and the fallback); faster backends plug in
behind the same signatures through :func:`use_backend`, chosen per call by the registry.

* :func:`pair_stats`   — per-row ``dot(t,d), |t|^2, |d|^2, |t-d|^2, |y+ht|^2`` in fp32
* :func:`accept_commit` — accepted prefix per sample + the window's closing target step
* :func:`rollout_step` — ``x + h v`` into a preallocated buffer row
* :func:`gather_combine` — ``c0 base + sum_a c_a bank[index_a]`` per row (forecast, multistep)
* :func:`metric_values` — the acceptance metric of each row from its statistics
"""

from __future__ import annotations

from ._backend import backends, current_backend, resolve, use_backend
from .reference import METRICS, STAT_COLUMNS, VERIFY_MODES, accept_mask, metric_values, rows_per_sample

import torch as _torch

from . import _library as _plain  # registers the torch.library ops sdsv::*
from . import reference as _ref


def _op(name: str):
    """The custom op ``sdsv::name`` while ``torch.compile`` traces (one opaque graph node), else
    the same implementation called directly (no dispatcher round trip; see ``_library``)."""
    if _torch.compiler.is_compiling():
        return getattr(_torch.ops.sdsv, name)
    return getattr(_plain, name)


def _as_acc(x, like: _torch.Tensor) -> _torch.Tensor:
    """A step size as a tensor in the update's precision: fp32, or fp64 for fp64
    latents (a Python float must not be rounded to fp32 on its way to an fp64 update)."""
    acc = _torch.promote_types(like.dtype, _torch.float32)
    if isinstance(x, _torch.Tensor):
        return x.to(device=like.device, dtype=acc)
    return _torch.as_tensor(x, device=like.device, dtype=acc)


def pair_stats(t, d, y, h):
    """``[R, 5]`` fp32 per-row statistics; see :func:`sdsv_kernels.reference.pair_stats`."""
    _ref.check_pair_stats_args(t, d, y, h)
    if t.shape[0] == 0:
        return t.new_zeros((0, 5), dtype=_torch.float32)
    return _op("pair_stats")(t, d, y, h)


def accept_commit(stats, y, t, h, sigma, window_k, metric, tau, verify, out=None):
    """``(x_next, accepted)``; see :func:`sdsv_kernels.reference.accept_commit`. With ``out``
    the next states are written there and ``out`` is returned as ``x_next``."""
    _ref.check_accept_commit_args(stats, y, t, h, sigma, window_k, metric, verify, out)
    if window_k.shape[0] == 0:  # no windows: nothing to decide or commit
        return (y.new_empty((0, *y.shape[1:])) if out is None else out), window_k.new_zeros((0,), dtype=_torch.int64)
    if out is None:
        return _op("accept_commit")(stats, y, t, h, sigma, window_k, metric, float(tau), verify)
    accepted = _op("accept_commit_out")(stats, y, t, h, sigma, window_k, metric, float(tau), verify, out)
    return out, accepted


def rollout_step(x, v, h, out=None):
    """``x + h v``; see :func:`sdsv_kernels.reference.rollout_step`. ``h`` may be a Python
    number or a tensor (one value, or one per row)."""
    _ref.check_rollout_args(x, v, h, out)
    if x.shape[0] == 0:
        return x.new_empty(x.shape) if out is None else out
    hf = _as_acc(h, x)
    if out is None:
        return _op("rollout_step")(x, v, hf)
    _op("rollout_step_out")(x, v, hf, out)
    return out


def gather_combine(base, bank, index, coeffs, out=None):
    """``out[r] = coeffs[r,0] base[r] + sum_a coeffs[r,a+1] bank[index[r,a]]``, accumulated in
    fp32 (fp64 for fp64 data); see :func:`sdsv_kernels.reference.gather_combine`. Floating
    ``coeffs`` of another dtype are converted to the accumulation dtype (not moved: every tensor
    must already be on base's device). With ``out`` (which may be ``base``) the result is
    written there and ``out`` is returned."""
    if isinstance(coeffs, _torch.Tensor) and coeffs.is_floating_point() and isinstance(base, _torch.Tensor):
        coeffs = coeffs.to(_torch.promote_types(base.dtype, _torch.float32))
    if out is None:
        return _op("gather_combine")(base, bank, index, coeffs)
    _op("gather_combine_out")(base, bank, index, coeffs, out)
    return out


__all__ = [
    "pair_stats", "accept_commit", "rollout_step", "gather_combine", "metric_values", "accept_mask", "rows_per_sample",
    "backends", "use_backend", "current_backend", "resolve", "METRICS", "STAT_COLUMNS", "VERIFY_MODES",
]
