"""Window policies: *when* the target runs and how long each sample's next window is.

The sampler loop only executes windows; a policy decides them, per sample, and observes how each
finished (METHOD.md sections 2 and 8). A window is ``(kind, k)``:

* ``("target", 0)``     — one target step.
* ``("draft", 0)``      — one draft step (draft-only / Improved-Draft baselines).
* ``("speculate", k)``  — k draft steps verified by the target in one batched call (section 3),
  closed by one target step from the last accepted state.
* ``("unverified", k)`` — k draft steps kept as they are, closed by one target step from the last
  draft state (the TaylorSeer / FORA-style cache). With ``closing_error`` the draft is also
  evaluated at that last state, one cheap call, so the window's forecast error is known there
  for free: ``e = sigma_k rms(t_k - d_k)``; a policy may then reject the window (the sample redoes
  it from the same state) or size the next one from ``e``.

:class:`~sdsv.plan.StagePlan` is the stateless policy of the paper. :class:`FixedInterval` and
:class:`ErrorControlled` are the schedules of the forecast self-draft (section 8). Every policy's
``start(batch)`` returns the per-call state; a policy object itself is never mutated by sampling,
so one policy serves concurrent calls.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ._checks import as_float, as_int

WINDOW_KINDS = ("target", "draft", "speculate", "unverified")


def _shorten(kind: str, k: int, step: int, end: int) -> tuple[str, int]:
    """A window of ``k`` draft steps + 1 target step that must end at or before ``end``;
    a window shortened to 0 draft steps is a plain target step."""
    k = min(k, end - step - 1)
    return (kind, k) if k > 0 else ("target", 0)


def next_window_length(k: int, error: float, tol: float, order: int, k_min: int, k_max: int) -> int:
    """The classic step-size controller on a window of ``k`` forecast steps + 1 target step
    (METHOD.md section 8): the error of an order-``p`` forecast grows like horizon^(p+1), so the
    horizon that would have met ``tol`` is ``(k + 1) (tol / e)^(1/(p+1))``, taken with a safety
    factor 0.9 and a growth limited to [0.5, 2] per window. A zero error grows the window 2x;
    a NaN error (a broken draft) shrinks it to ``k_min``."""
    if math.isnan(error):
        return k_min
    factor = 2.0 if error <= 0 else min(2.0, max(0.5, 0.9 * (tol / error) ** (1.0 / (order + 1))))
    return int(min(k_max, max(k_min, round((k + 1) * factor) - 1)))


class WindowPolicy:
    """What every policy provides. ``start(batch)`` -> a per-call :class:`PolicyRun`."""

    num_steps: int
    name: str = "custom"
    #: evaluate the draft at the last state of unverified windows (the window's error)
    closing_error: bool = False

    def start(self, batch: int) -> "PolicyRun":
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


class PolicyRun:
    """Per-call state of a policy: the next window of a sample, and what became of it."""

    def window(self, sample: int, step: int) -> tuple[str, int]:
        raise NotImplementedError

    def observe(self, sample: int, step: int, kind: str, k: int, accepted: int, error: float) -> bool:
        """A window of ``sample`` starting at ``step`` finished with ``accepted`` draft steps kept
        and (unverified windows with ``closing_error``, else NaN) the closing ``error``. Returns
        False to reject an unverified window: nothing of it is committed, the sample stays."""
        return True


class _Stateless(PolicyRun):
    def __init__(self, window_at):
        self.window_at = window_at

    def window(self, sample: int, step: int) -> tuple[str, int]:
        return self.window_at(step)


@dataclass(frozen=True)
class FixedInterval(WindowPolicy):
    """Unverified cache (the TaylorSeer analogue): ``warmup`` target steps, then the target
    every ``every``-th step with the draft's forecast in between. No verification: the baseline
    users would pick, and a mode of its own."""

    num_steps: int
    every: int = 3
    warmup: int = 2
    name: str = "fixed_interval"
    closing_error: bool = False

    def __post_init__(self) -> None:
        _check_steps(self)
        object.__setattr__(self, "every", as_int("every (1 = the target every step)", self.every, minimum=1))

    def start(self, batch: int) -> PolicyRun:
        return _Stateless(self.window_at)

    def window_at(self, step: int) -> tuple[str, int]:
        if step < self.warmup:
            return "target", 0
        return _shorten("unverified", self.every - 1, step, self.num_steps)

    @property
    def uses_draft(self) -> bool:
        return self.every > 1 and self.warmup < self.num_steps - 1

    @property
    def verifies(self) -> bool:
        return False

    def describe(self) -> str:
        return f"{self.name}[0-{self.warmup}:target, then target every {self.every}]"


@dataclass(frozen=True)
class ErrorControlled(WindowPolicy):
    """Error-controlled windows (METHOD.md section 8 (c)): ``warmup`` target steps, then
    unverified windows whose closing target evaluation also measures the forecast's error
    there (one cheap draft call); each sample's next window length follows
    :func:`next_window_length`. With ``reject_above`` a window whose error exceeds it is
    rejected — nothing committed, no anchor kept — and redone shorter from the same state.
    ``order`` is the forecast's order (the controller's exponent)."""

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
    closing_error: bool = field(default=True, init=False)

    def __post_init__(self) -> None:
        _check_steps(self)
        for name in ("order", "k_init", "k_min", "k_max"):
            object.__setattr__(self, name, as_int(name, getattr(self, name)))
        object.__setattr__(self, "tol", as_float("tol", self.tol, positive=True))
        if self.reject_above is not None:
            object.__setattr__(self, "reject_above", as_float("reject_above", self.reject_above, positive=True))
        if not 1 <= self.k_min <= self.k_init <= self.k_max:
            raise ValueError(f"need 1 <= k_min ({self.k_min}) <= k_init ({self.k_init}) <= k_max ({self.k_max})")
        if self.order < 0:
            raise ValueError(f"order must be >= 0, got {self.order}")
        if self.error_metric not in ("x0_rms", "v_rms"):
            raise ValueError(f"error_metric must be 'x0_rms' or 'v_rms', got {self.error_metric!r}")
        if self.reject_above is not None and not self.reject_above > 0:
            raise ValueError(f"reject_above must be > 0 or None, got {self.reject_above!r}")

    def start(self, batch: int) -> PolicyRun:
        return _ErrorControlledRun(self, batch)

    @property
    def verifies(self) -> bool:
        return False

    def describe(self) -> str:
        rej = "" if self.reject_above is None else f", reject>{self.reject_above:g}"
        return (f"{self.name}[0-{self.warmup}:target, then tol={self.tol:g}, k in [{self.k_min}, {self.k_max}], "
                f"order {self.order}{rej}]")


class _ErrorControlledRun(PolicyRun):
    def __init__(self, policy: ErrorControlled, batch: int):
        self.p = policy
        self.k_next = [policy.k_init] * batch

    def window(self, sample: int, step: int) -> tuple[str, int]:
        if step < self.p.warmup:
            return "target", 0
        return _shorten("unverified", self.k_next[sample], step, self.p.num_steps)

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


def _check_steps(policy) -> None:
    """``num_steps`` >= 1 and ``warmup`` in [0, num_steps], as ints (``sdsv._checks``)."""
    object.__setattr__(policy, "num_steps", as_int("num_steps", policy.num_steps, minimum=1))
    warmup = as_int("warmup", policy.warmup, minimum=0)
    if warmup > policy.num_steps:
        raise ValueError(f"warmup must be an int in [0, num_steps={policy.num_steps}], got {warmup!r}")
    object.__setattr__(policy, "warmup", warmup)
