"""What an intent means, for every pipeline, and the window policy a call gets when it names none.

An intent is a set of defaults, not a mode: whatever a call names (its solver, step count,
policy or forecast) wins over them. ``"faithful"`` stays close to the images the pipeline gives
without sdsv: its own step rule and step count, and the self-draft's
:meth:`ErrorControlled.faithful` windows (corrected: each window redone, interpolating through its
closing anchor; the last step the draft's) with the damped forecast (``sdsv.forecast.DAMPED``).
``"accurate"`` gets closer to the model's exact sample (the converged ODE solution) for fewer
target calls: UniPC, 26 of every 50 steps where the pipeline picks the step count, and
:meth:`ErrorControlled.accurate` windows (short, corrected) with the line
(``sdsv.forecast.LINE``); docs/tail.md
measures both intents against both yardsticks. :func:`sdsv.enable` and the tiny pipeline both
read this table and take their default policy from :func:`default_policy`.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Callable

from ._checks import as_str
from .forecast import DAMPED, LINE, NewtonForecast
from .policies import ErrorControlled, StagePlan, WindowPolicy


@dataclass(frozen=True)
class Intent:
    """``solver``: the sampler's step rule (None: the pipeline's own); ``step_share``: the share of
    the pipeline's default step count a call that names none samples with (a pipeline that takes
    its step count from the caller, such as a diffusers pipeline under :func:`sdsv.enable`, uses
    the caller's); ``windows``: the self-draft's window policy for ``num_steps``; ``forecast``:
    the self-draft's forecast, chosen with the windows' tolerance (a call's ``forecast`` or
    ``forecast_order`` wins over it)."""

    name: str
    solver: str | None
    step_share: Fraction
    windows: Callable[[int], WindowPolicy]
    forecast: NewtonForecast

    def solver_for(self, own: str) -> str:
        """The step rule of a call on a pipeline whose own rule is ``own``."""
        return own if self.solver is None else self.solver

    def num_steps(self, default: int) -> int:
        """The step count of a call that names none, on a pipeline whose own default is ``default``."""
        return max(1, round(self.step_share * default))


INTENTS = {
    "faithful": Intent("faithful", None, Fraction(1), ErrorControlled.faithful, DAMPED),
    "accurate": Intent("accurate", "unipc", Fraction(26, 50), ErrorControlled.accurate, LINE),
}


def intent_named(name: str) -> Intent:
    """The :class:`Intent` called ``name``; a :class:`ValueError` naming the others otherwise (a
    :class:`TypeError` for a value that is not a str)."""
    return INTENTS[as_str("intent", name, tuple(INTENTS))]


def default_policy(intent: str, self_draft: bool) -> Callable[[int], WindowPolicy]:
    """The window policy of a call that names none, as a function of its step count: the
    intent's windows with the self-draft, the paper's multi-stage plan with a trained draft."""
    windows = intent_named(intent).windows
    return windows if self_draft else StagePlan.paper_default
