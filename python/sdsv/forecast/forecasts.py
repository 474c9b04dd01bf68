"""How the self-draft forecasts a sample's deep residual at a new sigma from its anchors.

Every forecast here is a combination of a key's newest anchors ``r_a`` (newest), ``r_b``, ``r_c``
with weights that depend on their sigmas and the new one, so that the fused
:func:`sdsv_kernels.gather_combine` applies it in one pass. :class:`NewtonForecast` writes it in
Newton form around the newest anchor: with ``p0, p1, p2`` the polynomials of order 0, 1, 2 in
sigma through the newest 1, 2, 3 anchors,

    forecast = p0 + slope * (p1 - p0) + curvature * (p2 - p1)

``slope = 1, curvature = 0`` is the line through the last two anchors (TaylorSeer's first-order
finite difference in sigma); ``1, 1`` the parabola through three; ``0, 0`` reuses the newest.
Measured on the tiny target (docs/tail.md, "Forecasts"): a least-squares fit of the two weights
on its own trajectories lands near ``slope 0.85, curvature 0.3`` and misses 1-2 dB less than the
line; inside error-controlled windows, where a forecast's bias accumulates over the window, a
slope nearer 1 does better: :data:`DAMPED` (``0.95, 0.3``) raises the tail for the same target
calls, or keeps it for fewer. Forecasts of other kinds (DMD over the anchors, FoCa's recursion,
frequency splits, input-aware Jacobians, Hermite contraction, the cubic) missed more; so did the
forecast per block output before its gate (diffusers' TaylorSeer grain), the model's output in
place of the deep residual, and a forecaster learned per model on its steps, inside the windows
(one trained on whole runs, correcting DAMPED, is ahead of it by 0.3-0.7 dB on unseen images: a
lab result, not shipped). What moved the faithful windows further was not a forecast: once a
window's closing anchor is on record, the corrected windows (:mod:`sdsv.windows`) redo its steps
with :data:`INTERPOLATION` between the anchors around it.
"""

from __future__ import annotations

import math
from typing import Sequence

from .._checks import as_float, as_int


def lagrange_coefficients(sigmas: Sequence[float], at: float) -> list[float]:
    """Weights ``c_j`` with ``sum_j c_j f(s_j) = p(at)``, ``p`` the polynomial through the points
    ``(s_j, f(s_j))``: order 0 = reuse, order 1 = ``r_a + (s - s_a)(r_a - r_b)/(s_a - s_b)``
    (TaylorSeer's finite differences in sigma), order 2 with three anchors."""
    out = []
    for j, sj in enumerate(sigmas):
        c = 1.0
        for m, sm in enumerate(sigmas):
            if m != j:
                c *= (at - sm) / (sj - sm)
        out.append(c)
    return out


class NewtonForecast:
    """The forecast ``p0 + slope (p1 - p0) + curvature (p2 - p1)`` (module docstring).

    ``anchors``: how many of a key's newest anchors it reads (1, 2 or 3). With fewer anchors on
    record (the first steps of a call) it uses the terms it has.
    """

    def __init__(self, slope: float = 1.0, curvature: float = 0.0, name: str | None = None):
        self.slope = as_float("slope", slope)
        self.curvature = as_float("curvature", curvature)
        for what, v in (("slope", self.slope), ("curvature", self.curvature)):
            if not math.isfinite(v) or not -2.0 <= v <= 2.0:
                raise ValueError(f"{what} must be a finite weight in [-2, 2] (1 = the full polynomial term), got {v!r}")
        self.anchors = 3 if self.curvature else (2 if self.slope else 1)
        self.name = name

    @classmethod
    def of_order(cls, order: int, name: str = "order") -> "NewtonForecast":
        """The polynomial through the newest ``order + 1`` anchors (0 reuse, 1 line, 2 parabola);
        ``name``: the argument's name in the error for anything else."""
        if as_int(name, order) not in (0, 1, 2):
            raise ValueError(f"{name} must be 0, 1 or 2 (the forecast's order in sigma), got {order!r}")
        order = int(order)
        return cls(slope=float(order >= 1), curvature=float(order >= 2), name=("reuse", "line", "parabola")[order])

    def coefficients(self, sigmas: Sequence[float], at: float) -> list[float]:
        """Weights over ``sigmas`` (a key's anchors, oldest first; those before the newest
        :attr:`anchors` get weight 0)."""
        n = len(sigmas)
        if n == 0:
            raise ValueError("a forecast needs at least one anchor")
        if self.slope == 1.0 and self.curvature in (0.0, 1.0):  # a polynomial: its weights exactly
            use = min(n, self.anchors)
            return [0.0] * (n - use) + lagrange_coefficients(sigmas[n - use:], at)
        # p_m: the polynomial through the newest m + 1 anchors, as weights over all n
        p = [[0.0] * (n - m - 1) + lagrange_coefficients(sigmas[n - m - 1:], at) for m in range(min(n, 3))]
        out = list(p[0])
        for m, w in ((1, self.slope), (2, self.curvature))[:len(p) - 1]:
            if w:
                out = [o + w * (hi - lo) for o, hi, lo in zip(out, p[m], p[m - 1])]
        return out

    def __eq__(self, other) -> bool:
        return isinstance(other, NewtonForecast) and (self.slope, self.curvature) == (other.slope, other.curvature)

    def __hash__(self) -> int:
        return hash((self.slope, self.curvature))

    def __repr__(self) -> str:
        label = f", name={self.name!r}" if self.name else ""
        return f"NewtonForecast(slope={self.slope:g}, curvature={self.curvature:g}{label})"


#: the forecast chosen inside the windows on the tiny target (module docstring); the faithful
#: intent's (:mod:`sdsv.intents`)
DAMPED = NewtonForecast(slope=0.95, curvature=0.3, name="damped")

#: the line through the last two anchors (TaylorSeer's order 1); the accurate intent's, whose short
#: windows on DPM-Solver++(2M) lose with the damped forecast (docs/tail.md, "Forecasts")
LINE = NewtonForecast.of_order(1)

#: what a corrected window's draft steps read once the window's closing anchor is on record (the
#: parabola through the two anchors before the window and the closing one): an interpolation,
#: never a forecast (docs/tail.md, "Corrected windows")
INTERPOLATION = NewtonForecast.of_order(2)

#: what a self-draft forecasts with when neither it nor its intent is told otherwise
DEFAULT_FORECAST = DAMPED


def resolve_forecast(forecast: NewtonForecast | None, order: int | None, order_name: str = "order",
                     default: NewtonForecast = DEFAULT_FORECAST) -> NewtonForecast:
    """The forecast an entry point was given: ``forecast``, or the polynomial of ``order`` (the
    argument called ``order_name`` there), or ``default`` (an intent's); both given, or either of
    the wrong kind, is refused."""
    if forecast is not None and order is not None:
        raise ValueError(f"give forecast or {order_name}, not both")
    if forecast is not None:
        if not isinstance(forecast, NewtonForecast):
            raise TypeError(f"forecast must be a sdsv.forecast.NewtonForecast, got {type(forecast).__name__}")
        return forecast
    return default if order is None else NewtonForecast.of_order(order, order_name)
