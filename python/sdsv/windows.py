"""One object per window kind: what the draft evaluates, what the target verifies, what is kept.

A policy names a window ``(kind, k)``; :func:`window_kinds` maps the name to one of the classes
here, and the sampler loop only schedules them: it rolls every window's draft levels out
together, evaluates every window's verification rows in one target call, and hands each
window its :class:`Verdict` to commit. A window's states are ``y_0 .. y_k`` (``y_0`` the
sample's committed state); rows are local to the window.

A new kind (say, one that estimates its error inside the window) is one more class with these
members, which a policy names directly (``(MyWindow, k)`` instead of ``("speculate", k)``) or
:func:`window_kinds` maps a name to; the loop does not change.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from .policies import PolicyState
from .result import WindowRecord

NAN = float("nan")


@dataclass
class Verdict:
    """What the round's verification says about one window: its draft steps that passed the
    acceptance test, the metric at each of its rows (verified windows) and the closing error
    (unverified windows with ``closing_error``); None / NaN where not computed."""

    accepted: int
    values: list[float] | None
    error: float


class Window:
    """A window of ``k`` draft steps of ``sample`` from ``start`` (see the module docstring).

    ``levels``: states the draft evaluates (``y_0 .. y_{levels-1}``); ``rolls``: draft steps
    taken inside the window (state ``j < rolls`` steps to ``j + 1`` with the draft's output);
    ``verify_rows``: states the target evaluates, the window's closing step among them;
    ``tested_k``: the rows the fused acceptance op tests (0: none); ``needs_verdict``: whether
    :meth:`commit` reads the round's statistics; ``corrects``: whether a kept window's draft
    steps are redone once its closing target evaluation is on record (:class:`CorrectedWithError`);
    ``predicts``: whether its draft levels are a forecast of the sampler's velocity instead of
    draft calls (:class:`VelocityPredicted`)."""

    kind = ""
    counts_draft_steps = True  # False: a one-step window, whose k must be 0
    levels = rolls = tested_k = 0
    verify_rows: Sequence[int] = (0,)
    needs_verdict = False
    corrects = False  # redo the draft steps once the closing anchor is on record (CorrectedWithError)
    predicts = False  # its draft levels are the sampler's velocity forecast, no model call (VelocityPredicted)

    def __init__(self, sample: int, start: int, k: int):
        self.sample, self.start, self.k = sample, start, k

    def commit(self, verdict: Verdict | None, state: PolicyState, records: list[WindowRecord]) -> int:
        """Observe the outcome (``state``), record it, and return how many steps the sample advances."""
        raise NotImplementedError

    def on_path(self, advance: int) -> list[int]:
        """The verification rows (indices into ``verify_rows``) on the sample's committed path."""
        return [0] if advance else []

    def closing_row(self, advance: int) -> int:
        """The verification row whose target output closes the window (from state ``advance - 1``)."""
        return self.verify_rows.index(advance - 1)


class TargetStep(Window):
    """One target step."""

    kind = "target"
    counts_draft_steps = False

    def commit(self, verdict, state, records):
        state.observe(self.sample, self.start, self.kind, 0, 0, NAN)
        return 1


class DraftStep(Window):
    """One draft step, unverified (the draft-only baselines): the draft's output is the step's."""

    kind = "draft"
    counts_draft_steps = False
    levels = 1
    verify_rows = ()

    def commit(self, verdict, state, records):
        return 1


class VerifiedEndpoints(Window):
    """``k`` draft steps; the target evaluates the first and the last state only and accepts all
    ``k`` when both pass, else none; closed by the target's step from the last accepted state."""

    kind = "speculate"
    needs_verdict = True

    def __init__(self, sample, start, k):
        super().__init__(sample, start, k)
        self.levels, self.rolls, self.tested_k = k + 1, k, k
        self.verify_rows = (0, k) if k else (0,)

    def commit(self, verdict, state, records):
        a = verdict.accepted
        records.append(WindowRecord(self.sample, self.start, self.k, a, verdict.values))
        state.observe(self.sample, self.start, self.kind, self.k, a, NAN)
        return a + 1

    def on_path(self, advance):
        return [0, 1] if advance == self.k + 1 and self.k else [0]


class VerifiedFull(Window):
    """``k`` draft steps; the target evaluates every state and keeps the passing prefix; row ``k``
    only closes the window (it is not tested)."""

    kind = "speculate"
    needs_verdict = True

    def __init__(self, sample, start, k):
        super().__init__(sample, start, k)
        self.levels, self.rolls, self.tested_k = k, k, k
        self.verify_rows = tuple(range(k + 1))

    def commit(self, verdict, state, records):
        a = verdict.accepted
        values = list(verdict.values)
        values[self.k] = NAN  # row k closes the window; it is not tested
        records.append(WindowRecord(self.sample, self.start, self.k, a, values))
        state.observe(self.sample, self.start, self.kind, self.k, a, NAN)
        return a + 1

    def on_path(self, advance):
        return list(range(advance))


class Unverified(Window):
    """``k`` draft steps kept as they are, closed by the target at the last draft state; with
    ``closing_error`` the draft is evaluated there too and its policy may reject the window
    (nothing committed; the sample stays)."""

    kind = "unverified"
    closing_error = False

    def __init__(self, sample, start, k):
        super().__init__(sample, start, k)
        self.levels, self.rolls = k + (1 if self.closing_error else 0), k
        self.verify_rows = (k,)
        self.needs_verdict = self.closing_error

    def commit(self, verdict, state, records):
        err = verdict.error if self.closing_error else NAN
        keep = state.observe(self.sample, self.start, self.kind, self.k, self.k, err)
        records.append(WindowRecord(self.sample, self.start, self.k, self.k if keep else 0, [err], kind=self.kind))
        return self.k + 1 if keep else 0


class UnverifiedWithError(Unverified):
    """An unverified window whose closing state the draft evaluates too (its forecast error)."""

    closing_error = True


class CorrectedWithError(UnverifiedWithError):
    """A predictor-corrector window. *Predict*: ``k`` draft steps, the draft's error measured at
    the last state as an unverified window's. *Evaluate*: the target there, whose residual becomes
    the newest anchor. *Correct*, once kept: the self-draft redoes the ``k`` steps from the
    window's first state with the deep residual interpolated through that anchor and the two
    before the window (:meth:`sdsv.forecast.AnchorBank.interpolating`), and the closing step is
    taken from the corrected last state with the closing anchor's residual there. The target's
    evaluation was made at the predicted state: like a predictor-corrector's, it is reused, not
    repeated. ``k + 1`` more draft calls, no more target calls (docs/tail.md, "Corrected
    windows"). Needs a self-draft and a policy that declares ``corrects`` (the sampler refuses it
    otherwise)."""

    corrects = True


class VelocityPredicted(CorrectedWithError):
    """A corrected window whose ``k`` steps and closing error are predicted with a forecast of the
    sampler's velocity from its values at the sample's anchors
    (:meth:`sdsv.forecast.AnchorBank.predict_velocity`): no model runs before the target, so the
    window costs the draft calls of an uncorrected one. On the tiny DiT it matches the
    draft-predicted window; on the tiny Flux it lost the tail (docs/tail.md)."""

    predicts = True


def window_kinds(verify: str, closing_error: bool) -> dict[str, type[Window]]:
    """The window class of each kind a policy may name, for a call's verification mode
    (``"endpoints"`` or ``"full"``) and its policy's ``closing_error``."""
    return {
        "target": TargetStep,
        "draft": DraftStep,
        "speculate": {"endpoints": VerifiedEndpoints, "full": VerifiedFull}[verify],
        "unverified": UnverifiedWithError if closing_error else Unverified,
        "corrected": CorrectedWithError,
        "corrected_velocity": VelocityPredicted,
    }


def is_finite(values: Sequence[float]) -> bool:
    return all(math.isfinite(v) for v in values)
