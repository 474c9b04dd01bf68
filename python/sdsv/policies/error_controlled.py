"""Error-controlled windows: each sample's next window length follows its last closing error."""

from __future__ import annotations

from dataclasses import dataclass, field

from .._checks import as_bool, as_float, as_int, as_str
from .base import ERROR_METRICS, PolicyState, WindowPolicy, check_steps, next_window_length, shortened


#: the self-draft's default windows (:meth:`ErrorControlled.faithful`): corrected and predicted by
#: the draft, up to 5 steps, sized by the forecast's error in x0 at tolerance 0.3, the last step the
#: draft's alone — chosen with the faithful intent's damped forecast on 480 of the tiny image
#: model's calibration images as the windows of at most 12.4 target calls per image with the
#: highest mean + 5th percentile of PSNR against the pipeline's own output; the draft's prediction,
#: not the velocity forecast's, because only it kept the tail on the trained tiny Flux
#: (docs/tail.md, "Corrected windows" and "The last step")
FAITHFUL_TOL = 0.3
FAITHFUL_K_MAX = 5
FAITHFUL_ERROR = "x0_rms"
#: the faithful windows' last step is the draft's: a closing target evaluation there reaches the
#: image through a corrected state it was not made at, where the velocity is most sensitive to the
#: state (sigma near 0), and missed more than the forecast one step past the last anchor
#: (docs/tail.md, "The last step")
FAITHFUL_DRAFT_LAST = 1
#: how a corrected window's steps are predicted (``ErrorControlled(predict=)``): by the draft itself,
#: or by a forecast of the sampler's velocity that runs no model (docs/tail.md, "Corrected windows")
PREDICTIONS = ("draft", "velocity")
#: short windows for a second-order solver with fewer steps: one or two forecast steps, then the target
SHORT_WINDOWS = dict(tol=0.2, k_min=1, k_init=1, k_max=2)
#: the accurate intent's windows (:meth:`ErrorControlled.accurate`): short, corrected and predicted by
#: the draft, tolerance 0.25 — chosen with the line forecast on UniPC with 26 of 50 steps on the tiny
#: image model's calibration seeds as the windows of at most 12.4 target calls per image with the
#: highest 5th percentile of PSNR against the converged sample (docs/tail.md, "Corrected windows")
ACCURATE_TOL = 0.25


@dataclass(frozen=True)
class ErrorControlled(WindowPolicy):
    """Error-controlled windows (docs/method.md): ``warmup`` target steps, then
    unverified windows whose closing target evaluation also measures the forecast's error
    there (one cheap draft call); each sample's next window length follows
    :func:`next_window_length`. With ``reject_above`` a window whose error exceeds it is
    rejected — nothing committed, no anchor kept — and redone shorter from the same state.
    ``order`` is the forecast's order (the controller's exponent). ``draft_last``: the last
    ``draft_last`` steps are the draft's alone (its forecast, no target evaluation closes them;
    the windows end before them). ``correct``: every kept window
    is corrected (:class:`sdsv.windows.CorrectedWithError`: its draft steps redone with the deep
    residual interpolated through the closing anchor; a self-draft only); the closing error that
    sizes the windows stays the prediction's. ``predict``: how a corrected window's steps are
    first taken — ``"draft"`` (the self-draft's forecast, as an uncorrected window's) or
    ``"velocity"`` (a forecast of the sampler's velocity, no model call: half the draft calls,
    but on the tiny Flux it lost the tail, docs/tail.md)."""

    num_steps: int
    tol: float = 0.3
    order: int = 1
    k_init: int = 2
    k_min: int = 2
    k_max: int = 4
    warmup: int = 2
    reject_above: float | None = None
    error_metric: str = "v_rms"
    name: str = "error_controlled"
    draft_last: int = 0
    correct: bool = False
    predict: str = "draft"
    closing_error: bool = field(default=True, init=False)

    def __post_init__(self) -> None:
        check_steps(self)
        for name in ("order", "k_init", "k_min", "k_max"):
            object.__setattr__(self, name, as_int(name, getattr(self, name)))
        object.__setattr__(self, "draft_last", as_int("draft_last", self.draft_last, minimum=0))
        if self.warmup + self.draft_last > self.num_steps:
            raise ValueError(f"warmup ({self.warmup}) + draft_last ({self.draft_last}) must be <= num_steps "
                             f"({self.num_steps}): the warm-up's target steps come first")
        object.__setattr__(self, "tol", as_float("tol", self.tol, positive=True))
        object.__setattr__(self, "correct", as_bool("correct", self.correct))
        as_str("predict", self.predict, PREDICTIONS)
        if self.reject_above is not None:
            object.__setattr__(self, "reject_above", as_float("reject_above", self.reject_above, positive=True))
        if not 1 <= self.k_min <= self.k_init <= self.k_max:
            raise ValueError(f"need 1 <= k_min ({self.k_min}) <= k_init ({self.k_init}) <= k_max ({self.k_max})")
        if self.order < 0:
            raise ValueError(f"order must be >= 0, got {self.order}")
        as_str("error_metric", self.error_metric, ERROR_METRICS)
        if self.reject_above is not None and not self.reject_above > 0:
            raise ValueError(f"reject_above must be > 0 or None, got {self.reject_above!r}")

    @classmethod
    def faithful(cls, num_steps: int) -> "ErrorControlled":
        """The self-draft's default: close to what the pipeline's own sampler gives with every
        step computed (fidelity), in corrected windows predicted by the draft (``correct``), sized
        by the forecast's error in x0, the last step the draft's (:data:`FAITHFUL_DRAFT_LAST`). A
        call of fewer than 3 steps runs the target alone (its 2 warm-up steps are the whole call)."""
        num_steps = as_int("num_steps", num_steps, minimum=1)
        warmup = min(2, num_steps)
        return cls(num_steps, tol=FAITHFUL_TOL, k_max=FAITHFUL_K_MAX, correct=True, predict="draft",
                   error_metric=FAITHFUL_ERROR, warmup=warmup,
                   draft_last=min(FAITHFUL_DRAFT_LAST, num_steps - warmup), name="faithful")

    @classmethod
    def accurate(cls, num_steps: int) -> "ErrorControlled":
        """Short windows (:data:`SHORT_WINDOWS`) for a second-order solver (UniPC) with fewer steps
        than the pipeline's default, corrected and predicted by the draft at :data:`ACCURATE_TOL`:
        closer to the model's exact sample (the converged ODE solution) than the pipeline's own Euler
        sampler, at a fraction of its target calls."""
        num_steps = as_int("num_steps", num_steps, minimum=1)
        windows = dict(SHORT_WINDOWS, tol=ACCURATE_TOL)
        return cls(num_steps, warmup=min(2, num_steps), name="accurate", correct=True, predict="draft", **windows)

    def start(self, batch: int) -> PolicyState:
        return ErrorControlledState(self, batch)

    @property
    def has_windows(self) -> bool:
        # a window's closing step is the target's: it needs a step after the warm-up and one before
        # the steps the draft takes alone
        return self.warmup < self.num_steps - self.draft_last - 1

    @property
    def uses_draft(self) -> bool:
        return self.has_windows or self.draft_last > 0

    @property
    def verifies(self) -> bool:
        return False

    @property
    def corrects(self) -> bool:
        return self.correct and self.has_windows

    @property
    def predicts_velocity(self) -> bool:
        return self.corrects and self.predict == "velocity"

    def describe(self) -> str:
        rej = "" if self.reject_above is None else f", reject>{self.reject_above:g}"
        corrected = f", corrected ({self.predict}-predicted)" if self.correct else ""
        error = "" if self.error_metric == "v_rms" else f", {self.error_metric} error"
        last = f", last {self.draft_last} draft" if self.draft_last else ""
        return (f"{self.name}[0-{self.warmup}:target, then tol={self.tol:g}{error}, k in [{self.k_min}, {self.k_max}], "
                f"order {self.order}{rej}{corrected}{last}]")


class ErrorControlledState(PolicyState):
    def __init__(self, policy: ErrorControlled, batch: int):
        self.p = policy
        self.k_next = [policy.k_init] * batch

    def window(self, sample: int, step: int) -> tuple[str, int]:
        if step < self.p.warmup:
            return "target", 0
        end = self.p.num_steps - self.p.draft_last
        if step >= end:
            return "draft", 0
        kind = ("corrected" if self.p.predict == "draft" else "corrected_velocity") if self.p.correct else "unverified"
        return shortened(kind, self.k_next[sample], step, end)

    def observe(self, sample: int, step: int, kind: str, k: int, accepted: int, error: float) -> bool:
        if kind != "unverified":
            # a target step after a rejected 1-step window: windows start again at k_min
            self.k_next[sample] = max(self.k_next[sample], self.p.k_min)
            return True
        p = self.p
        k_new = next_window_length(k, error, p.tol, p.order, p.k_min, p.k_max)
        keep = p.reject_above is None or error <= p.reject_above  # NaN: rejected
        if not keep:
            # redo shorter: at most k - 1 draft steps (k = 0 is a plain target step, never rejected)
            k_new = min(k_new, k - 1)
        self.k_next[sample] = max(0, k_new)
        return keep
