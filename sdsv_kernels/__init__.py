"""Ops of the SDSV sampler, behind one stable interface.

The sampler (``sdsv.sample``) only ever calls the functions below. Each has a pure-torch
reference in :mod:`sdsv_kernels.reference` (the spec and the fallback); faster backends plug in
behind the same signatures through :func:`use_backend`, chosen per call by the registry.

* :func:`pair_stats`   — per-row ``dot(t,d), |t|^2, |d|^2, |t-d|^2, |y+ht|^2`` in fp32
* :func:`accept_commit` — accepted prefix per sample + the window's closing target step
* :func:`rollout_step` — ``x + h v`` (optionally guided) into a preallocated buffer row
* :func:`metric_values` — the acceptance metric of each row from its statistics
"""

from __future__ import annotations

from ._backend import backends, current_backend, use_backend
from .reference import METRICS, STAT_COLUMNS, VERIFY_MODES, accept_mask, metric_values, rows_per_sample
from ._backend import dispatch as _dispatch


def pair_stats(t, d, y, h):
    """See :func:`sdsv_kernels.reference.pair_stats`."""
    return _dispatch("pair_stats", t)(t, d, y, h)


def accept_commit(stats, y, t, h, sigma, window_k, metric, tau, verify, out=None):
    """See :func:`sdsv_kernels.reference.accept_commit`."""
    return _dispatch("accept_commit", y)(stats, y, t, h, sigma, window_k, metric, tau, verify, out)


def rollout_step(x, v, h, out=None, uncond=None, scale=None):
    """See :func:`sdsv_kernels.reference.rollout_step`."""
    return _dispatch("rollout_step", x)(x, v, h, out, uncond, scale)


__all__ = [
    "pair_stats", "accept_commit", "rollout_step", "metric_values", "accept_mask", "rows_per_sample",
    "backends", "use_backend", "current_backend", "METRICS", "STAT_COLUMNS", "VERIFY_MODES",
]
