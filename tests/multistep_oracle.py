"""The plain target-only DPM-Solver++(2M) loop: the test oracle of ``sdsv.sample(..., solver="dpm++2m")``
with a target-only policy (which must give the very same numbers), and the baseline any
speculative or caching schedule must beat.

Flow matching is the schedule ``x = alpha x0 + sigma eps`` with ``alpha = 1 - sigma``; the model's
velocity ``v`` gives the data prediction ``D = x - sigma v``. With ``lambda = log(alpha / sigma)``
and ``h_n = lambda_{n+1} - lambda_n``, step ``n`` from ``s_n`` to ``s_{n+1}`` is::

    x_{n+1} = (s_{n+1} / s_n) x_n - (1 - s_{n+1}) expm1(-h_n) D'_n
    D'_n    = D_n                                      first order (DPM-Solver++ 1 = DDIM)
    D'_n    = (1 + 1/(2 r)) D_n - 1/(2 r) D_{n-1}      second order, r = h_{n-1} / h_n

The first step and the step to ``sigma = 0`` are first order; the latter is ``x_N = D_{N-1}``
(``lambda = inf``). A schedule starting at ``sigma = 1`` (``lambda = -inf``) makes the first step
exactly Euler and, since ``r = inf`` there, the second step first order too. This is diffusers'
``DPMSolverMultistepScheduler(algorithm_type="dpmsolver++", solver_order=2,
prediction_type="flow_prediction", use_flow_sigmas=True)`` with its default
``final_sigmas_type="zero"``, which forces the first-order final step whatever
``lower_order_final`` and ``euler_at_final`` say; ``lower_order_final``'s other effect (for fewer
than 15 steps) only concerns third order. Only the sigmas differ: diffusers spaces
``0.999 * linspace(1, 0)`` before the shift, :func:`sdsv.schedule.flow_match_sigmas` spaces
``linspace(1, 0)``; given the same sigmas, the two agree to fp32 rounding.

Coefficients are computed on the host in float64 (``sdsv.solvers.dpm_solver_2m_coefficients``);
one pure-torch op applies them (:func:`dpm_solver_2m_step`, the textbook form: ``D = x - sigma v``
first), accumulating in fp32 (fp64 for fp64 latents). The sampler applies the same rule as a
step matrix (``sdsv.solvers.DPMSolver2M``) and agrees with this loop to fp32 rounding.
"""

from __future__ import annotations

import time
from typing import Sequence

import torch
from tqdm.auto import tqdm

from sdsv.contract import is_pure, timed_call
from sdsv.errors import NonFiniteOutputError
from sdsv.progress import progress_options
from sdsv.result import SampleResult, SampleStats
from sdsv.sampler import PerSampleConditioning, check_noise_and_sigmas
from sdsv.solvers import Coefficients, dpm_solver_2m_coefficients


def dpm_solver_2m_step(
    x: torch.Tensor, v: torch.Tensor, sigma: float, coeffs: Coefficients, d_prev: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """One DPM-Solver++(2M) step: ``D = x - sigma v`` and ``x_next = c_x x + c_d D + c_prev d_prev``.

    Computed in fp32 (fp64 for fp64 latents); returns ``x_next`` in ``x``'s dtype and ``D`` in the
    accumulation dtype (the next step's ``d_prev``). ``d_prev`` may be None when ``c_prev == 0``."""
    acc = torch.promote_types(x.dtype, torch.float32)
    c_x, c_d, c_prev = coeffs
    xf = x.to(acc)
    d = xf - sigma * v.to(acc)
    out = c_x * xf + c_d * d
    if c_prev != 0.0:
        out = out + c_prev * d_prev
    return out.to(x.dtype), d


def _check_inputs(target, noise, sigmas) -> None:
    if not callable(target):
        raise TypeError(f"target must be callable, got {type(target).__name__}")
    check_noise_and_sigmas(noise, sigmas)
    if float(sigmas[0]) > 1.0:
        raise ValueError(
            f"flow-matching sigmas must lie in [0, 1] (alpha = 1 - sigma), got sigmas[0]={float(sigmas[0]):g}"
        )


def sample_dpm_solver_2m(target, noise: torch.Tensor, sigmas: torch.Tensor, *, progress: bool | dict = False,
                         per_sample: Sequence[str] | None = None, **cond) -> SampleResult:
    """Sample from ``noise`` along ``sigmas`` with the target alone and DPM-Solver++(2M), one call
    per step on the whole batch (one sigma for all rows); ``cond`` passes unchanged."""
    _check_inputs(target, noise, sigmas)
    t_start = time.perf_counter()
    batch, dev = noise.shape[0], noise.device
    PerSampleConditioning(cond, batch, per_sample)  # validates the per-sample kwargs; they need no gathering
    sig_host = [float(s) for s in sigmas.double().tolist()]
    coeffs = dpm_solver_2m_coefficients(sig_host)
    n_steps = len(coeffs)
    sdt = torch.promote_types(noise.dtype, torch.float32)  # the sigmas the model sees, as sdsv.sample
    stats = SampleStats()
    x, d_prev = noise, None
    copy = not is_pure(target)
    with torch.no_grad(), tqdm(total=n_steps * batch, **progress_options(progress, "dpm++2m")) as bar:
        for n in range(n_steps):
            sig = torch.full((batch,), sig_host[n], dtype=sdt, device=dev)
            v = timed_call("target", target, x, sig, cond, stats, copy)
            if not torch.isfinite(v).all():
                b = int((~torch.isfinite(v.reshape(v.shape[0], -1))).any(1).nonzero()[0])
                raise NonFiniteOutputError(f"the target model returned NaN/inf at step {n} (sigma={sig_host[n]:.4g}) "
                                           f"for sample {b}")
            x, d_prev = dpm_solver_2m_step(x, v, sig_host[n], coeffs[n], d_prev)
            bar.update(batch)
    if not torch.isfinite(x).all():
        raise NonFiniteOutputError("the solver's latents are not finite although the target's outputs are (overflow?)")
    stats.sampler_s = max(0.0, time.perf_counter() - t_start - stats.target_s)
    return SampleResult(latents=x, stats=stats)
