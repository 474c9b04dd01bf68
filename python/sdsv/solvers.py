"""Step rules of the speculative sampler: Euler and DPM-Solver++(2M) on flow-matching sigmas.

Every rule here is *linear*: a step from state ``y`` with the model's velocity ``v`` at ``y`` and
the sample's multistep history ``H = (H_0 .. H_{m-1})`` (rows of the latent's shape) gives::

    y_next   = M[0, 0] v + M[0, 1] y + sum_s M[0, 2+s] H_s
    H_next_s = M[1+s, 0] v + M[1+s, 1] y + sum_s' M[1+s, 2+s'] H_s'

with a float64 matrix ``M`` per step (``m + 1`` rows, ``m + 2`` columns) computed on the host
from the sigmas. Columns start with ``v`` because the sampler applies each row of ``M`` with one
:func:`sdsv_kernels.gather_combine` call whose ``base`` is the model output and whose bank holds
the window's states and history rows. Euler has no history (``m = 0``, ``M = [[h, 1]]``) and keeps
its fused ops (``rollout_step``, ``accept_commit``).

**Which prediction enters the history** (DPM-Solver++(2M), ``m = 1``, ``H_0 = D_prev``): the data
prediction ``D = y - sigma v`` of the prediction that *was used to step from* the previous state
on the sample's path. Inside a window the draft's rollout steps with the draft's predictions, so
its history is the draft's; the window's closing target step from the last accepted state
``y_a`` uses the target's ``v`` at ``y_a`` and the history ``y_a`` carries (the draft's ``D`` at
``y_{a-1}``, or the committed history when ``a = 0``); what the sample carries into its next
window is the target's ``D`` at ``y_a``. A rejected window's rollout is discarded with its
history. This rule costs no model call, makes a draft identical to the target reproduce
target-only sampling, and makes an impossible threshold reproduce target steps exactly (every
window closes with the same op and inputs as a target step with per-sample history).
"""

from __future__ import annotations

import math
from typing import Sequence

Coefficients = tuple[float, float, float]  # (c_x, c_d, c_prev): x_next = c_x x + c_d D + c_prev D_prev


def _flow_lambda(sigma: float) -> float:
    """``log((1 - sigma) / sigma)``, with its limits ``+inf`` at 0 and ``-inf`` at 1."""
    if sigma == 0.0:
        return math.inf
    if sigma == 1.0:
        return -math.inf
    return math.log1p(-sigma) - math.log(sigma)


def dpm_solver_2m_coefficients(sigmas: Sequence[float]) -> list[Coefficients]:
    """Per step ``n``, the float64 coefficients ``(c_x, c_d, c_prev)`` of
    ``x_{n+1} = c_x x_n + c_d D_n + c_prev D_{n-1}`` along ``sigmas`` (flow-matching, in [0, 1],
    strictly decreasing, ending in 0). Steps 0 and ``N - 1`` are first order (``c_prev = 0``)."""
    if float(sigmas[0]) > 1.0:
        raise ValueError(
            f"flow-matching sigmas must lie in [0, 1] (alpha = 1 - sigma), got sigmas[0]={float(sigmas[0]):g}")
    lam = [_flow_lambda(float(s)) for s in sigmas]
    n_steps = len(lam) - 1
    out = []
    for n in range(n_steps):
        s, s_next = float(sigmas[n]), float(sigmas[n + 1])
        h = lam[n + 1] - lam[n]  # > 0; inf when sigma_n = 1 or sigma_{n+1} = 0
        phi = -(1.0 - s_next) * math.expm1(-h)
        if n == 0 or n == n_steps - 1:
            out.append((s_next / s, phi, 0.0))
        else:
            k = h / (2.0 * (lam[n] - lam[n - 1]))  # 1 / (2 r); 0 after a step from sigma = 1
            out.append((s_next / s, phi * (1.0 + k), -phi * k))
    return out


class Solver:
    """A linear step rule with ``history`` multistep rows per sample (see the module docstring)."""

    name: str = ""
    history: int = 0

    def step_matrices(self, sigmas: Sequence[float]) -> list[list[list[float]]]:
        """Per step ``n``, the float64 matrix ``M_n`` (``history + 1`` rows, ``history + 2`` columns)."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class Euler(Solver):
    """``y_next = y + (sigma_next - sigma) v``: the paper's sampler and FlowMatchEulerDiscreteScheduler's."""

    name, history = "euler", 0

    def step_matrices(self, sigmas):
        return [[[float(b) - float(a), 1.0]] for a, b in zip(sigmas, sigmas[1:])]


class DPMSolver2M(Solver):
    """DPM-Solver++(2M), data prediction on flow sigmas (``x0 = y - sigma v``), first order at the
    first and last step: diffusers' ``DPMSolverMultistepScheduler(algorithm_type="dpmsolver++",
    solver_order=2, prediction_type="flow_prediction", use_flow_sigmas=True)``. History: one row,
    the previous step's data prediction (:func:`dpm_solver_2m_coefficients`)."""

    name, history = "dpm++2m", 1

    def step_matrices(self, sigmas):
        out = []
        for n, (c_x, c_d, c_prev) in enumerate(dpm_solver_2m_coefficients(sigmas)):
            s = float(sigmas[n])
            # y_next = c_x y + c_d (y - s v) + c_prev D_prev ;  D = y - s v
            out.append([[-c_d * s, c_x + c_d, c_prev], [-s, 1.0, 0.0]])
        return out


def _unipc_corrector_weights(h: float, lam_prev: float, lam_prev2: float, order: int) -> tuple[float, float]:
    """UniC's weights (bh2, data prediction): ``rho_last`` on ``D_n - D_{n-1}`` and ``rho_0 / r`` on
    ``D_{n-2} - D_{n-1}`` (``r = (lambda_{n-2} - lambda_{n-1}) / h``), as diffusers solves them; the
    limits where a lambda is infinite (a schedule from sigma = 1) taken exactly."""
    if order == 1:
        return 0.5, 0.0
    hh = -h
    phi1 = math.expm1(hh)
    b_h = phi1
    if math.isinf(hh):  # h = inf: phi_k(h) h^k terms from the recursion's limits
        b = (1.0, 1.0)
    else:
        k1 = phi1 / hh - 1.0
        k2 = k1 / hh - 0.5
        b = (k1 / b_h, 2.0 * k2 / b_h)
    r = (lam_prev2 - lam_prev) / h
    if math.isinf(r):  # the older prediction's weight vanishes: rho_0 ~ 1/r
        return b[0], 0.0
    # R = [[1, 1], [r, 1]] @ (rho_0, rho_last) = b
    rho0 = (b[1] - b[0]) / (r - 1.0)
    return b[0] - rho0, rho0 / r


class UniPC(Solver):
    """UniPC, bh2, second order, data prediction on flow sigmas, with the corrector (UniC) at every
    step after the first and first order at the first and last step: diffusers'
    ``UniPCMultistepScheduler(solver_order=2, prediction_type="flow_prediction", use_flow_sigmas=True)``
    with its defaults (``solver_type="bh2"``, ``predict_x0``, ``lower_order_final``, no
    ``disable_corrector``) — what the Wan2.1 checkpoints ship.

    The model is evaluated at the *predicted* state ``y_n``; its data prediction ``D_n = y_n -
    sigma_n v`` first corrects the previous step (``x^c_n`` from ``x^c_{n-1}``, ``D_{n-2}``,
    ``D_{n-1}``, ``D_n``), then the predictor steps from ``x^c_n``. History: three rows,
    ``(x^c_{n-1}, D_{n-1}, D_{n-2})``."""

    name, history = "unipc", 3

    def step_matrices(self, sigmas):
        sig = [float(s) for s in sigmas]
        lam = [_flow_lambda(s) for s in sig]
        n_steps = len(sig) - 1
        order = [1 if n == 0 or n == n_steps - 1 else 2 for n in range(n_steps)]
        out = []
        for n in range(n_steps):
            # columns: v, y, H0 = x^c_{n-1}, H1 = D_{n-1}, H2 = D_{n-2}
            d_n = [-sig[n], 1.0, 0.0, 0.0, 0.0]
            if n == 0:
                xc = [0.0, 1.0, 0.0, 0.0, 0.0]
            else:
                h = lam[n] - lam[n - 1]
                alpha = 1.0 - sig[n]
                phi1 = math.expm1(-h)
                rho_last, rho0_over_r = _unipc_corrector_weights(
                    h, lam[n - 1], lam[n - 2] if n >= 2 else -math.inf, order[n - 1])
                # x^c = s_n/s_{n-1} H0 - a phi1 H1 - a B (rho0/r (H2 - H1) + rho_last (D_n - H1)),  B = phi1
                a_b = alpha * phi1
                coef_h0 = sig[n] / sig[n - 1]
                coef_h1 = -a_b + a_b * rho0_over_r + a_b * rho_last
                coef_h2 = -a_b * rho0_over_r
                coef_d = -a_b * rho_last
                xc = [coef_d * d_n[0], coef_d * d_n[1], coef_h0, coef_h1, coef_h2]
            h1 = lam[n + 1] - lam[n]
            alpha1 = 1.0 - sig[n + 1]
            phi1 = math.expm1(-h1)
            if order[n] == 2:
                r = (lam[n - 1] - lam[n]) / h1
                half_over_r = 0.0 if math.isinf(r) else 0.5 / r
            else:
                half_over_r = 0.0
            # x^p_{n+1} = s_{n+1}/s_n x^c - a1 phi1 D_n - a1 B 0.5/r (D_{n-1} - D_n),  B = phi1
            p_xc = sig[n + 1] / sig[n]
            p_d = -alpha1 * phi1 + alpha1 * phi1 * half_over_r
            p_h1 = -alpha1 * phi1 * half_over_r
            y_next = [p_xc * c + p_d * dn for c, dn in zip(xc, d_n)]
            y_next[3] += p_h1
            out.append([y_next, xc, d_n, [0.0, 0.0, 0.0, 1.0, 0.0]])
        return out


SOLVERS: dict[str, Solver] = {"euler": Euler(), "dpm++2m": DPMSolver2M(), "unipc": UniPC()}


def get_solver(solver: str | Solver) -> Solver:
    """A :class:`Solver` from its name (``"euler"``, ``"dpm++2m"``) or itself."""
    if isinstance(solver, Solver):
        return solver
    if isinstance(solver, str) and solver in SOLVERS:
        return SOLVERS[solver]
    raise ValueError(f"unknown solver {solver!r}; choose from {', '.join(SOLVERS)} (or pass a sdsv.solvers.Solver)")


def check_matrices(solver: Solver, mats, n_steps: int) -> None:
    """A solver's matrices have the promised shape and are finite (a clear error, not NaN latents)."""
    m = solver.history
    if len(mats) != n_steps:
        raise ValueError(f"solver {solver.name!r} gave {len(mats)} step matrices for {n_steps} steps")
    for n, mat in enumerate(mats):
        if len(mat) != m + 1 or any(len(row) != m + 2 for row in mat):
            raise ValueError(f"solver {solver.name!r}: step {n}'s matrix must be {m + 1} x {m + 2}")
        if not all(math.isfinite(c) for row in mat for c in row):
            raise ValueError(f"solver {solver.name!r}: step {n}'s matrix is not finite: {mat}")
