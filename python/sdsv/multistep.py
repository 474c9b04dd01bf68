"""Deprecated, kept for one release: target-only DPM-Solver++(2M) is ``sdsv.sample(target, None,
noise, sigmas, policy=StagePlan.target_only(n), solver="dpm++2m")``; the coefficients and the
update live in :mod:`sdsv.solvers`."""

from __future__ import annotations

import warnings

from .policies import StagePlan
from .solvers import Coefficients, dpm_solver_2m_coefficients, dpm_solver_2m_step

__all__ = ["Coefficients", "dpm_solver_2m_coefficients", "dpm_solver_2m_step", "sample_dpm_solver_2m"]


def sample_dpm_solver_2m(target, noise, sigmas, *, progress=False, per_sample=None, **cond):
    """Deprecated: ``sdsv.sample`` with a target-only policy and ``solver="dpm++2m"`` (the same numbers)."""
    from .sampler import sample

    warnings.warn("sdsv.multistep.sample_dpm_solver_2m is deprecated; use sdsv.sample(target, None, noise, sigmas, "
                  "policy=StagePlan.target_only(n), solver='dpm++2m')", DeprecationWarning, stacklevel=2)
    return sample(target, None, noise, sigmas, policy=StagePlan.target_only(sigmas.numel() - 1), solver="dpm++2m",
                  progress=progress, per_sample=per_sample, **cond)
