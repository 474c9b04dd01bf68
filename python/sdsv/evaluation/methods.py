"""One way of sampling with the tiny pipeline, named — the rows of `sdsv demo` and `sdsv eval`.

A :class:`Method` is a window policy, the draft it uses (a trained ``lite``/``svd`` draft, the
``self`` forecast, or none), the solver, and how speculative windows are verified and accepted.
The configurations both commands show — the baselines a user would pick instead of speculation
(fewer steps, DPM-Solver++(2M), the unverified forecast cache) and the self-draft's schedules —
are built here once. :func:`dominated_by` is how both say which rows lose on (speed, worst image).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..acceptance import AcceptanceTest
from ..forecast import LINE, NewtonForecast
from ..policies import ErrorControlled, FixedInterval, StagePlan, WindowPolicy
from ..policies.error_controlled import FAITHFUL_K_MAX, FAITHFUL_TOL, SHORT_WINDOWS
from ..intents import INTENTS
from ..solvers import SOLVERS

DRAFTS = (None, "lite", "svd", "self")


@dataclass(frozen=True)
class Method:
    """A labelled sampling configuration; ``pipeline_kwargs()`` are its TinyPipeline arguments."""

    label: str
    policy: WindowPolicy
    draft: str | None = None          # "lite", "svd", "self" or None (target only)
    verify: str = "endpoints"
    accept: AcceptanceTest | None = None  # None: the sampler's default test
    solver: str = "euler"
    forecast: NewtonForecast = LINE   # of the self-draft

    def __post_init__(self) -> None:
        if self.draft not in DRAFTS:
            raise ValueError(f"{self.label}: draft must be one of {DRAFTS}, got {self.draft!r}")
        if self.solver not in SOLVERS:
            raise ValueError(f"{self.label}: solver must be one of {tuple(SOLVERS)}, got {self.solver!r}")
        if self.verify not in ("endpoints", "full"):
            raise ValueError(f"{self.label}: verify must be 'endpoints' or 'full', got {self.verify!r}")

    @property
    def speculates(self) -> bool:
        """Whether the policy opens verified windows (a custom policy is assumed to)."""
        return self.policy.verifies

    @property
    def key(self) -> tuple:
        """What determines the images: not the label; verify/accept only with verified windows,
        the draft only where the policy uses one, the forecast only for the self-draft."""
        uses_draft = self.policy.uses_draft
        return (self.policy, self.draft if uses_draft else None, self.verify if self.speculates else None,
                self.accept if self.speculates else None, self.solver,
                self.forecast if uses_draft and self.draft == "self" else None)

    @property
    def schedule_type(self) -> str:
        """What kind of schedule it is, for the verdicts: ``target`` (the target alone, any number
        of steps, any solver), ``draft`` (a trained draft unverified: draft-only, Improved-Draft),
        ``cache`` (unverified forecast cache), ``error-controlled`` or ``SDSV`` (verified windows)."""
        if not self.policy.uses_draft:
            return "target"
        if isinstance(self.policy, FixedInterval):
            return "cache"
        if isinstance(self.policy, ErrorControlled):
            return "error-controlled"
        return "SDSV" if self.speculates else "draft"

    def pipeline_kwargs(self) -> dict:
        kw = dict(policy=self.policy, solver=self.solver, forecast=self.forecast)
        if self.speculates:  # the other policies refuse verification options
            kw.update(verify=self.verify, accept=self.accept)
        if self.draft is not None:
            kw["draft"] = self.draft
        return kw


# ---- the configurations both commands show ------------------------------------------------
# the self-draft's configurations (benchmarks/results/self_draft_sweep.md): SDSV's verified windows
# need a stricter test than the trained drafts' (the forecast is closer, its misses smaller)
SELF_SDSV_ACCEPT = AcceptanceTest("x0_rms", 0.2)
ERROR_CONTROLLED = {"error-ctrl (self)": dict(tol=0.3), "error-ctrl (self, tol 0.5)": dict(tol=0.5)}


def fewer_steps(steps: int, solver: str = "euler") -> Method:
    """The target alone with ``steps`` steps: the plainest competitor of any speed-up."""
    return Method(f"target-only ({steps} steps{'' if solver == 'euler' else ', ' + solver})",
                  StagePlan.target_only(steps), solver=solver)


def cache(num_steps: int, every: int) -> Method:
    """The unverified forecast cache: the target every ``every``-th step, the self-draft between."""
    return Method(f"cache (every {every})", FixedInterval(num_steps, every=every), "self")


def sdsv_self(num_steps: int, accept: AcceptanceTest = SELF_SDSV_ACCEPT, label: str = "sdsv (self)",
              verify: str = "endpoints") -> Method:
    """SDSV's verified windows with the self-draft (the slow plan, the stricter test)."""
    return Method(label, StagePlan.slow(num_steps), "self", verify, accept)


def error_controlled(num_steps: int, label: str | None = None, **policy) -> Method:
    """Error-controlled windows of the self-draft; ``policy``: :class:`ErrorControlled`'s options."""
    p = ErrorControlled(num_steps, **policy)
    return Method(label or f"error-ctrl (self, tol {p.tol:g})", p, "self")


def self_draft_methods(num_steps: int, verify: str = "endpoints") -> list[Method]:
    """The self-draft's rows of the demo: the cache every 3rd and 4th step, SDSV, and the
    error-controlled windows of :data:`ERROR_CONTROLLED`."""
    ms = [cache(num_steps, n) for n in (3, 4)]
    ms.append(sdsv_self(num_steps, verify=verify))
    ms += [error_controlled(num_steps, name, **kw) for name, kw in ERROR_CONTROLLED.items()]
    return ms


def faithful_method(num_steps: int, own_solver: str = "euler") -> Method:
    """The faithful intent as a pipeline whose own sampler is ``own_solver`` with ``num_steps``
    steps runs it by default: its windows and forecast on that solver."""
    faithful = INTENTS["faithful"]
    return Method(f"faithful: error-ctrl corrected (self, {faithful.forecast.name}, x0 tol {FAITHFUL_TOL:g}, "
                  f"k<={FAITHFUL_K_MAX}, last step draft)",
                  faithful.windows(num_steps), "self", solver=faithful.solver_for(own_solver), forecast=faithful.forecast)


def intent_methods(num_steps: int) -> list[Method]:
    """The self-draft's two intents (:mod:`sdsv.intents`) as the tiny pipeline runs them with
    ``intent=`` when its own sampler has ``num_steps`` Euler steps: faithful (error-controlled
    windows on Euler with ``num_steps``) and accurate (short corrected windows on the intent's
    solver, UniPC, with the intent's share of the steps: 26 of 50)."""
    accurate = INTENTS["accurate"]
    n = max(3, accurate.num_steps(num_steps))
    solver = accurate.solver_for("euler")
    return [faithful_method(num_steps),
            Method(f"accurate: error-ctrl corrected on {solver} (self, {n} steps)", accurate.windows(n), "self",
                   solver=solver, forecast=accurate.forecast)]


# speculation on DPM-Solver++(2M): half the Euler reference's steps, the target every
# other step (the cache) or error-controlled windows of 1-2 forecast steps; chosen in an
# exploration on the demo prompts (docs/self_draft.md, "On DPM-Solver++(2M)")
def on_dpm_methods(num_steps: int) -> list[Method]:
    """The self-draft's schedules on DPM-Solver++(2M) with ``num_steps // 2`` steps: the cache
    every 2nd step and uncorrected error-controlled windows of ``SHORT_WINDOWS`` (one or two forecast steps)."""
    n = max(2, num_steps // 2)
    return [Method(f"cache on dpm++2m ({n} steps, every 2)", FixedInterval(n, every=2), "self", solver="dpm++2m"),
            Method(f"error-ctrl on dpm++2m (self, {n} steps)", ErrorControlled(n, **SHORT_WINDOWS), "self",
                   solver="dpm++2m")]


def dominated_by(rows: list[dict], row: dict, x: str = "speedup", y: str = "psnr_min") -> list[str]:
    """The rows at least as fast (``x``) AND at least as good on the worst image (``y``), one of
    them strictly; rows without ``y`` (the reference) neither dominate nor are dominated."""
    out = []
    for o in rows:
        if o is row or o.get(y) is None or row.get(y) is None:
            continue
        if o[x] >= row[x] and o[y] >= row[y] and (o[x] > row[x] or o[y] > row[y]):
            out.append(o["method"])
    return out
