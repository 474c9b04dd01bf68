"""What a window policy is: *when* the target runs and how long each sample's next window is.

The sampler loop only executes windows; a policy decides them, per sample, and observes how each
finished (docs/method.md). A window is ``(kind, k)``, one of :data:`WINDOW_KINDS`:

* ``("target", 0)``     — one target step.
* ``("draft", 0)``      — one draft step (draft-only / Improved-Draft baselines).
* ``("speculate", k)``  — k draft steps verified by the target in one batched call, closed by
  one target step from the last accepted state.
* ``("unverified", k)`` — k draft steps kept as they are, closed by one target step from the last
  draft state (the TaylorSeer / FORA-style cache). With ``closing_error`` the draft is also
  evaluated at that last state, one cheap call, so the window's forecast error is known there
  for free; a policy may then reject the window (the sample redoes it from the same state) or
  size the next one from it.
* ``("corrected", k)``  — an unverified window (with its closing error) whose draft steps the
  self-draft redoes once the closing target evaluation is on record, interpolating the deep
  residual through it instead of forecasting (:class:`sdsv.windows.CorrectedWithError`); the
  closing step is then taken from the corrected state. Needs a self-draft.
* ``("corrected_velocity", k)`` — the same, its steps first predicted with a forecast of the
  sampler's velocity (no model call) instead of the draft (:class:`sdsv.windows.VelocityPredicted`).

Every policy's ``start(batch)`` returns the per-call :class:`PolicyState`; a policy object itself
is never mutated by sampling, so one policy serves concurrent calls.
"""

from __future__ import annotations

import math
from typing import Callable

from .._checks import as_int, as_str

WINDOW_KINDS = ("target", "draft", "speculate", "unverified", "corrected", "corrected_velocity")
ERROR_METRICS = ("x0_rms", "v_rms")


class WindowPolicy:
    """What every policy provides. ``start(batch)`` -> a per-call :class:`PolicyState`.

    The sampler reads only what is declared here: ``num_steps``, ``name``, ``uses_target`` /
    ``uses_draft``, ``closing_error`` (evaluate the draft at the last state of unverified
    windows: the window's error) and ``error_metric`` (how that error is measured:
    ``x0_rms`` = sigma rms(t - d), ``v_rms`` = rms(t - d)), ``corrects`` (it opens corrected
    windows, which need a self-draft) and ``predicts_velocity`` (some of them velocity-predicted:
    the call keeps the sampler's velocity at each anchor)."""

    num_steps: int
    name: str = "custom"
    closing_error: bool = False
    error_metric: str = "x0_rms"
    corrects: bool = False
    predicts_velocity: bool = False

    def start(self, batch: int) -> "PolicyState":
        raise NotImplementedError

    @property
    def uses_target(self) -> bool:
        return True

    @property
    def uses_draft(self) -> bool:
        return True

    @property
    def verifies(self) -> bool:
        """Whether the policy opens verified (``"speculate"``) windows, the only ones that use
        ``verify=`` and ``accept=``; a custom policy is assumed to."""
        return True

    def describe(self) -> str:
        return self.name


class PolicyState:
    """Per-call state of a policy: the next window of a sample, and what became of it."""

    def window(self, sample: int, step: int) -> tuple[str, int]:
        """``(kind, k)``: a name of :data:`WINDOW_KINDS`, or a :class:`sdsv.windows.Window`
        subclass of the policy's own (a new kind of window), and its draft steps."""
        raise NotImplementedError

    def observe(self, sample: int, step: int, kind: str, k: int, accepted: int, error: float) -> bool:
        """A window of ``sample`` starting at ``step`` finished with ``accepted`` draft steps kept
        and (unverified windows with ``closing_error``, else NaN) the closing ``error``. Returns
        False to reject an unverified window: nothing of it is committed, the sample stays."""
        return True


class StatelessState(PolicyState):
    """The state of a policy whose windows depend on the step alone (``window_at(step)``)."""

    def __init__(self, window_at: Callable[[int], tuple[str, int]]):
        self.window_at = window_at

    def window(self, sample: int, step: int) -> tuple[str, int]:
        return self.window_at(step)


def shortened(kind: str, k: int, step: int, end: int) -> tuple[str, int]:
    """A window of ``k`` draft steps + 1 target step that must end at or before ``end``;
    a window shortened to 0 draft steps is a plain target step."""
    k = min(k, end - step - 1)
    return (kind, k) if k > 0 else ("target", 0)


def next_window_length(k: int, error: float, tol: float, order: int, k_min: int, k_max: int) -> int:
    """The classic step-size controller on a window of ``k`` forecast steps + 1 target step: the
    error of an order-``p`` forecast grows like horizon^(p+1), so the horizon that would have met
    ``tol`` is ``(k + 1) (tol / e)^(1/(p+1))``, taken with a safety factor 0.9 and a growth
    limited to [0.5, 2] per window. A zero error grows the window 2x; a NaN error (a broken
    draft) shrinks it to ``k_min``."""
    if math.isnan(error):
        return k_min
    factor = 2.0 if error <= 0 else min(2.0, max(0.5, 0.9 * (tol / error) ** (1.0 / (order + 1))))
    return int(min(k_max, max(k_min, round((k + 1) * factor) - 1)))


def check_steps(policy) -> None:
    """``num_steps`` >= 1 and ``warmup`` in [0, num_steps], as ints, and ``name`` a str (``sdsv._checks``)."""
    as_str("name", policy.name)
    object.__setattr__(policy, "num_steps", as_int("num_steps", policy.num_steps, minimum=1))
    warmup = as_int("warmup", policy.warmup, minimum=0)
    if warmup > policy.num_steps:
        raise ValueError(f"warmup must be an int in [0, num_steps={policy.num_steps}], got {warmup!r}")
    object.__setattr__(policy, "warmup", warmup)
