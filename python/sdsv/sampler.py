"""``sdsv.sample``: speculative sampling of a flow-matching model (docs/method.md).

Every round, each unfinished sample takes one *window* at its own position, as its window
policy (:mod:`sdsv.policies`) says: the draft proposes ``k`` steps of the solver (Euler, or a
multistep rule of :mod:`sdsv.solvers` with each sample's history), the target verifies them in
ONE batched forward call (rows of all samples together), and the window closes with one target
step from the last accepted state; a rejected window costs one target step, never more.
Unverified windows (the forecast-cache schedules) skip the test and close with the target at
their last draft state. With a self-draft, the target evaluations on the committed trajectory
become its forecast anchors; a corrected window (:class:`sdsv.windows.CorrectedWithError`) is,
once kept, redone by the self-draft interpolating through its closing anchor.

The loop here only schedules rounds. What a window of each kind drafts, verifies and keeps is
its object's (:mod:`sdsv.windows`); how a step is applied is the stepper's
(:mod:`sdsv.steppers`). All arithmetic on latents goes through :mod:`sdsv_kernels` (rollout,
pair statistics, accept+commit, ``gather_combine``), so faster backends plug in without touching
this file. The host synchronises once per round, to learn how far each sample advanced. Models
get copies of their input rows unless they declare ``sdsv_pure = True`` (:mod:`sdsv.contract`).
"""

from __future__ import annotations

import contextlib
import math
import time
import warnings
from typing import Callable, Sequence

import torch
from tqdm.auto import tqdm

import sdsv_kernels

from ._rows import gather_rows, gather_rows_and_index, scatter_rows
from .acceptance import AcceptanceTest
from .contract import all_finite, check_model_output, is_per_row, is_pure, per_row_names, timed_call
from .errors import NonFiniteOutputError
from .forecast import SelfDraft
from .policies import WINDOW_KINDS, WindowPolicy
from .progress import check_progress, progress_options
from .result import SampleResult, SampleStats
from .schedule import check_sigmas
from .solvers import Solver, get_solver
from .steppers import Closing, stepper_for
from .windows import Verdict, Window, is_finite, window_kinds

_DIFF = sdsv_kernels.STAT_COLUMNS.index("diff")

Denoiser = Callable[..., torch.Tensor]  # (x[b, ...], sigma[b], **cond) -> v[b, ...]

__all__ = ["Denoiser", "NonFiniteOutputError", "check_model_output", "check_noise_and_sigmas", "is_pure", "sample"]


class PerSampleConditioning:
    """Per-row views of the per-sample conditioning kwargs.

    Per-sample kwargs are the ones named in ``per_sample``; when that is None, every tensor whose
    first dimension equals the batch size (:func:`sdsv.contract.per_row_names`)."""

    def __init__(self, cond: dict, batch: int, per_sample=None):
        self.cond, self.batch = cond, batch
        check_per_sample(per_sample, cond)
        per_sample = per_row_names(cond, batch, per_sample)  # one name is a name, not its letters
        for k in per_sample:
            v = cond.get(k)
            if not is_per_row(v, batch):
                shape = tuple(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__
                raise ValueError(f"per-sample conditioning {k!r} must be a tensor with first dim {batch} (the batch), got {shape}")
        self.per_sample = per_sample

    def rows(self, samples: Sequence[int]) -> dict:
        if not self.per_sample:
            return self.cond
        out = dict(self.cond)
        first = samples[0]
        same = all(s == first for s in samples)
        identity = list(samples) == list(range(self.batch))
        for k in self.per_sample:
            v = self.cond[k]
            if identity:
                continue
            if same:  # one sample's rows: broadcast its conditioning, no copy
                out[k] = v[first : first + 1].expand(len(samples), *v.shape[1:])
            else:
                out[k] = v.index_select(0, torch.tensor(samples, device=v.device))
        return out


def check_per_sample(per_sample, cond: dict) -> None:
    """``per_sample``: None, one conditioning kwarg's name or a list of them, each given."""
    names = [per_sample] if isinstance(per_sample, str) else per_sample
    if names is None:
        return
    if not isinstance(names, (list, tuple, set, frozenset)) or not all(isinstance(k, str) for k in names):
        raise TypeError(f"per_sample must be None, a conditioning kwarg's name or a list of them, got {per_sample!r}")
    missing = [k for k in names if k not in cond]
    if missing:
        raise ValueError(f"per_sample names {', '.join(map(repr, missing))}, not among this call's conditioning "
                         f"kwargs {sorted(cond)}")


def shared_by_default(cond: dict, batch: int, per_sample) -> dict:
    """The tensors :class:`PerSampleConditioning` passes whole to every call only because their
    first dimension is not the batch (``per_sample`` None): a per-sample kwarg with a wrong batch
    looks like that, so a model call that fails names them (:func:`sample`)."""
    if per_sample is not None:
        return {}
    return {k: tuple(v.shape) for k, v in cond.items()
            if isinstance(v, torch.Tensor) and v.dim() > 0 and v.shape[0] not in (1, batch)}


#: the attribute :class:`_Models` sets on an exception a model call (or its output check) raised: the model's name
_FAILED_CALL = "_sdsv_model_call"


class _Models:
    """Calls the two denoisers under the contract (:func:`sdsv.contract.timed_call`); with a
    self-draft, every call first tells its anchor bank which sample and sigma each row has."""

    def __init__(self, target, draft, stats: SampleStats, anchors=None):
        self.fns = {"target": target, "draft": draft}
        # the rows a model gets are views of the sampler's own buffers: a model that has not
        # declared that it never writes into its inputs gets copies, so its in-place writes
        # cannot corrupt committed states or decisions
        self.copy_inputs = {k: not is_pure(fn) for k, fn in self.fns.items()}
        self.stats, self.anchors = stats, anchors

    def __call__(self, which: str, x: torch.Tensor, sigma: torch.Tensor, cond: dict,
                 samples: Sequence[int], sig_rows: Sequence[float]) -> torch.Tensor:
        if self.anchors is not None:
            self.anchors.tag(samples, sig_rows)
            records = self.anchors.records
        try:
            out = timed_call(which, self.fns[which], x, sigma, cond, self.stats, self.copy_inputs[which])
        except Exception as e:
            setattr(e, _FAILED_CALL, which)
            raise
        if which == "target" and self.anchors is not None and self.anchors.records == records:
            raise ValueError("self_draft: the target call went past the self-draft (it recorded no anchors for the "
                             "forecast): with self_draft=, the target must be self_draft.target or call it (e.g. "
                             "ClassifierFreeGuidance(self_draft.target, ...)), or None for self_draft.target")
        return out


def check_noise_and_sigmas(noise, sigmas) -> None:
    """The starting latents and the schedule every sampler here takes (clear errors, no NaN)."""
    if not isinstance(noise, torch.Tensor) or not noise.is_floating_point() or noise.dim() < 2:
        raise ValueError("noise must be a floating-point tensor [batch, ...latent dims]")
    if noise.shape[0] < 1 or noise[0].numel() == 0:
        raise ValueError(f"noise has an empty batch or latent: shape {tuple(noise.shape)}")
    if noise.device.type == "meta":
        raise ValueError("noise is on the meta device: it holds no values to sample from")
    if not torch.isfinite(noise).all():
        raise ValueError("noise contains NaN or inf")
    check_sigmas(sigmas)


class IgnoredOptionWarning(UserWarning):
    """An option was given that the chosen window policy does not use."""


def check_verification_options(policy, verify, accept, stacklevel: int = 3) -> None:
    """``verify=`` and ``accept=`` set how verified windows are checked; a policy that opens none
    ignores them, which would hide a mistake (e.g. a threshold meant for SDSV given to the
    error-controlled windows), so it is said. A warning, not an error: sweeping one set of
    options over several policies is legitimate. ``stacklevel``: the frame the warning names,
    counted from here (3: the caller of the function that calls this one)."""
    if isinstance(policy, WindowPolicy) and not policy.verifies:
        given = [name for name, value in (("verify", verify), ("accept", accept)) if value is not None]
        if given:
            warnings.warn(f"{' and '.join(f'{g}=' for g in given)} ignored: the policy {policy.describe()} "
                          f"({type(policy).__name__}) opens no verified window, the only kind that uses "
                          f"{'them' if len(given) > 1 else 'it'}", IgnoredOptionWarning, stacklevel=stacklevel)


def check_options(policy, verify, accept) -> tuple[str, AcceptanceTest]:
    """:func:`sample`'s verification options where they enter — ``sample`` itself, or
    :func:`sdsv.enable` once for every call — checked and defaulted: ``(verify, accept)``.
    ``policy``: the window policy they go with (or a function of the step count, whose
    policies are only known per call), to say when it ignores them."""
    if accept is not None and not isinstance(accept, AcceptanceTest):
        raise TypeError(f"accept must be a sdsv.AcceptanceTest, got {type(accept).__name__}")
    if verify is not None and verify not in sdsv_kernels.VERIFY_MODES:
        raise ValueError(f"verify must be one of {sdsv_kernels.VERIFY_MODES}, got {verify!r}")
    check_verification_options(policy, verify, accept, stacklevel=4)
    return ("endpoints" if verify is None else verify), (AcceptanceTest() if accept is None else accept)


def _check_inputs(target, draft, noise, sigmas, policy, self_draft) -> None:
    if self_draft is not None and not isinstance(self_draft, SelfDraft):
        raise TypeError(f"self_draft must be a sdsv.SelfDraft, got {type(self_draft).__name__}")
    check_noise_and_sigmas(noise, sigmas)
    n = sigmas.numel() - 1
    if policy.num_steps != n:
        longer = "longer than" if policy.num_steps > n else "shorter than"
        raise ValueError(f"the policy has {policy.num_steps} steps, {longer} the schedule's {n} (len(sigmas) - 1)")
    if policy.uses_target and not callable(target):
        raise TypeError(f"policy {policy.name!r} uses the target, but target is not callable")
    if policy.uses_draft and not callable(draft):
        raise TypeError(f"policy {policy.name!r} uses the draft, but draft is not callable")
    if policy.corrects and self_draft is None:
        raise ValueError(f"policy {policy.describe()} corrects its windows by interpolating a self-draft's anchors: "
                         "it needs self_draft= (a sdsv.SelfDraft), not a separate draft model")



def sample(
    target: Denoiser | None,
    draft: Denoiser | None,
    noise: torch.Tensor,
    sigmas: torch.Tensor,
    policy: WindowPolicy | None = None,
    verify: str | None = None,
    accept: AcceptanceTest | None = None,
    *,
    self_draft: SelfDraft | None = None,
    solver: str | Solver = "euler",
    progress: bool | dict = False,
    per_sample: Sequence[str] | None = None,
    **cond,
) -> SampleResult:
    """Sample from ``noise`` along ``sigmas`` with the target, the draft and the window policy.

    ``target``/``draft``: ``(x[b, ...], sigma[b], **cond) -> v[b, ...]``, one call = one
    batched forward, one sigma per row. ``policy``: a :class:`~sdsv.StagePlan` (the paper's
    verified windows) or another window policy (:mod:`sdsv.policies`). ``self_draft``: the
    :class:`~sdsv.forecast.SelfDraft` whose denoisers ``target``/``draft`` are built on (they
    default to its own when None); the sampler keeps its anchors for this call and tells it
    which target evaluations lie on the committed trajectory. ``cond`` kwargs named in
    ``per_sample`` (default: the tensors whose first dimension is the batch size) are
    per-sample and gathered for each row (expanded without a copy when the rows belong to one
    sample); the rest pass unchanged. ``solver``: the step rule of every step, drafted or not —
    ``"euler"`` (the paper's), ``"dpm++2m"`` (DPM-Solver++(2M)) or ``"unipc"``; each sample
    carries its multistep history through windows (:mod:`sdsv.solvers`). ``progress``: show a
    tqdm bar (a dict is passed to tqdm as options).
    """
    if policy is None:
        raise TypeError("sample() needs a window policy: policy=sdsv.StagePlan.paper_default(num_steps), ...")
    if not isinstance(policy, WindowPolicy):
        raise TypeError(f"policy must be a window policy (sdsv.StagePlan, FixedInterval, ErrorControlled), "
                        f"got {type(policy).__name__}")
    verify, accept = check_options(policy, verify, accept)
    solver = get_solver(solver)
    check_progress(progress)
    if isinstance(self_draft, SelfDraft):
        target = self_draft.target if target is None else target
        draft = self_draft.draft if draft is None else draft
    _check_inputs(target, draft, noise, sigmas, policy, self_draft)
    check_per_sample(per_sample, cond)
    shared = shared_by_default(cond, noise.shape[0], per_sample)
    try:
        return sample_checked(target, draft, noise, sigmas, policy, verify, accept, self_draft=self_draft,
                              solver=solver, progress=progress, per_sample=per_sample, **cond)
    except (TypeError, ValueError, RuntimeError, IndexError) as e:
        which = getattr(e, _FAILED_CALL, None)
        if not shared or which is None or isinstance(e, torch.OutOfMemoryError):
            raise
        why = " ".join(str(e).split())[:200]
        named = ", ".join(f"{k!r} {shape}" for k, shape in shared.items())
        raise ValueError(
            f"the {which} model failed ({type(e).__name__}: {why}) on conditioning passed whole to every call because "
            f"its first dimension is not the batch ({noise.shape[0]}): {named}. A per-sample kwarg needs one row per "
            "sample; name the per-sample kwargs with per_sample=[...] if these are shared") from e


def sample_checked(target: Denoiser | None, draft: Denoiser | None, noise: torch.Tensor, sigmas: torch.Tensor,
                   policy: WindowPolicy, verify: str, accept: AcceptanceTest, *, self_draft: SelfDraft | None = None,
                   solver: str | Solver = "euler", progress: bool | dict = False,
                   per_sample: Sequence[str] | None = None, **cond) -> SampleResult:
    """:func:`sample` without its argument checks, for an entry point that made them where the
    arguments entered (:func:`sdsv.enable`: the options once, the policy, latents and schedule at
    each call): ``verify`` and ``accept`` as :func:`check_options` returns them, ``policy`` of as
    many steps as ``sigmas``, ``target``/``draft`` the callables the policy uses."""
    solver = get_solver(solver)  # a name becomes its Solver
    t_start = time.perf_counter()
    batch = noise.shape[0]
    stats = SampleStats()
    session = (self_draft.session(batch, interpolates=policy.corrects) if self_draft is not None
               else contextlib.nullcontext())
    # sampling never needs autograd: without this, nn.Module models called outside no_grad would
    # keep the whole sampling graph alive (and the custom ops have no backward)
    with torch.no_grad(), tqdm(total=policy.num_steps * batch, **progress_options(progress, "sdsv")) as bar, \
            session as anchors:
        loop = _Loop(policy, verify, accept, noise, sigmas, _Models(target, draft, stats, anchors),
                     PerSampleConditioning(cond, batch, per_sample), anchors, bar, solver)
        x = loop.run()
        if not all_finite(x):  # every step kind: the models' outputs were checked, the sum overflowed
            raise NonFiniteOutputError("the sampler's latents are not finite although the models' outputs are "
                                       "(overflow in a step: latents of an extreme scale, or a too low-precision dtype?)")
    if x.device.type == "cuda":
        torch.cuda.synchronize(x.device)
    stats.sampler_s = max(0.0, time.perf_counter() - t_start - stats.target_s - stats.draft_s)
    return SampleResult(latents=x, stats=stats)


class _Loop:
    """One sampling call: rounds of windows until every sample reached the last step.

    Every round, each unfinished sample takes the window its policy gives it at its own
    position; the draft rolls all windows out level by level, the target evaluates every
    window's verification rows in one batched call, and each window commits what it keeps."""

    def __init__(self, policy, verify, accept, noise, sigmas, models, conds, anchors, bar, solver: Solver):
        self.policy, self.state = policy, policy.start(noise.shape[0])
        self.kinds = window_kinds(verify, policy.closing_error)
        self.accept, self.models, self.conds, self.anchors, self.bar = accept, models, conds, anchors, bar
        self.verify = verify
        self.x = noise.clone()
        self.dev = noise.device
        self.numel = noise[0].numel()
        self.batch = noise.shape[0]
        self.sig = [float(s) for s in sigmas.double().tolist()]
        # sigmas and step sizes travel in fp32 (fp64 for fp64 latents), as the ops compute; made
        # once, and a call's rows are views of them where they can be (batch 1: always): on a
        # 2-core CPU every small tensor made between two model calls costs ~10-20 us
        sdt = torch.promote_types(noise.dtype, torch.float32)
        self.sig_t = torch.tensor(self.sig, device=noise.device, dtype=sdt)
        self.h_t = torch.tensor([b - a for a, b in zip(self.sig, self.sig[1:])], device=noise.device, dtype=sdt)
        self.stepper = stepper_for(solver, self.sig, noise, sdt, self.h_t)
        self.pos = [0] * self.batch
        self.stats = models.stats
        self._vk_cache: dict[tuple, torch.Tensor] = {}

    def run(self) -> torch.Tensor:
        n = self.policy.num_steps
        while True:
            active = [b for b in range(self.batch) if self.pos[b] < n]
            if not active:
                return self.x
            rnd = _Round([self._window(b, n) for b in active])
            rnd.states, rnd.drafted = self.stepper.open_round(self.x, active, rnd.offsets, rnd.total)
            if rnd.depth:
                self._roll_out(rnd)
            if rnd.verified:
                kept = self._verify_and_commit(rnd, rnd.verified)
                corrected = [i for i in kept if rnd.windows[i].corrects]
                if corrected:
                    self._correct(rnd, corrected)
            if rnd.drafting:
                self._draft_steps(rnd, rnd.drafting)
            if not self.bar.disable and self.stats.verified_windows:
                self.bar.set_postfix(accept=f"{self.stats.acceptance_rate:.0%}", refresh=False)

    def _window(self, b: int, n: int) -> Window:
        """Sample ``b``'s next window, as its policy says."""
        kind, k = self.state.window(b, self.pos[b])
        cls = kind if isinstance(kind, type) and issubclass(kind, Window) else self.kinds.get(kind)
        if cls is None or k < 0 or (k and not cls.counts_draft_steps) or self.pos[b] + k >= n:
            raise ValueError(f"the policy gave sample {b} at step {self.pos[b]} the window {(kind, k)}, "
                             f"which is not one of {WINDOW_KINDS} with 0 <= k < {n - self.pos[b]}")
        if cls.corrects and (self.anchors is None or k < 1 or not self.policy.corrects
                             or (cls.predicts and not self.policy.predicts_velocity)):
            raise ValueError(f"the policy gave sample {b} at step {self.pos[b]} the window {(kind, k)}: a corrected "
                             "window needs k >= 1, a self-draft (self_draft=), whose anchors it interpolates, and a "
                             "policy that declares corrects = True (and predicts_velocity = True for a "
                             "velocity-predicted one: its call keeps the anchors' velocities)")
        return cls(b, self.pos[b], k)

    def _roll_out(self, rnd: "_Round", which: Sequence[int] | None = None, correction: bool = False) -> None:
        """Level j evaluates the draft at y_j of every window still drafting, then steps y_{j+1}.
        ``which``: the windows (default all); ``correction``: a corrected window's second pass —
        each evaluates ``y_0 .. y_k`` with the draft (never predicted) and steps ``k`` times,
        whatever its kind's ``levels`` and ``rolls``."""
        windows, offs = rnd.windows, rnd.offsets
        which = range(len(windows)) if which is None else which
        levels = {i: windows[i].k + 1 if correction else windows[i].levels for i in which}
        rolls = {i: windows[i].k if correction else windows[i].rolls for i in which}
        for j in range(max(levels.values(), default=0)):
            lvl = [i for i in which if j < levels[i]]
            if not lvl:  # every window ended early (a kind may shorten itself while it rolls out)
                break
            rows = [offs[i] + j for i in lvl]
            y = gather_rows(rnd.states, rows)
            steps = [windows[i].start + j for i in lvl]
            samples = [windows[i].sample for i in lvl]
            d = self._draft_outputs(y, [windows[i].predicts and not correction for i in lvl], steps, samples)
            scatter_rows(rnd.drafted, rows, d)
            roll = [m for m, i in enumerate(lvl) if j < rolls[i]]
            if not roll:
                continue
            src_rows = [rows[m] for m in roll]
            every = len(roll) == len(lvl)
            y_src = y if every else gather_rows(rnd.states, src_rows)
            d_src = d if every else d.index_select(0, torch.tensor(roll, device=self.dev))
            self.stepper.roll(rnd.states, y_src, d_src, src_rows, [steps[m] for m in roll])

    def _draft_outputs(self, y: torch.Tensor, predicted: list[bool], steps: list[int], samples: list[int]) -> torch.Tensor:
        """The draft's outputs at rows ``y``: a draft call, or for ``predicted`` rows the velocity
        forecast from their samples' anchors (no model runs)."""
        sig = [self.sig[s] for s in steps]
        if not any(predicted):
            return self.models("draft", y, gather_rows(self.sig_t, steps), self.conds.rows(samples), samples, sig)
        if all(predicted):
            return self.anchors.predict_velocity(samples, sig, y)
        out = torch.empty_like(y)
        for want in (True, False):
            part = [m for m, p in enumerate(predicted) if p == want]
            out[part] = self._draft_outputs(y[part], [want] * len(part), [steps[m] for m in part],
                                            [samples[m] for m in part])
        return out

    def _verify_and_commit(self, rnd: "_Round", verified: list[int]) -> list[int]:
        """One target call over every window's verification rows, the round's verdicts (one host
        sync), each window's commit, and the closing steps; returns the windows kept whole."""
        sig = self.sig
        v = _Verification(rnd, verified)
        yv, vindex = gather_rows_and_index(rnd.states, v.rows)
        sig_v, sindex = gather_rows_and_index(self.sig_t, v.steps)
        t = self.models("target", yv, sig_v, self.conds.rows(v.samples), v.samples, [sig[s] for s in v.steps])
        verdicts, x_next = [None] * len(verified), None
        if self.stepper.fused or rnd.needs_verdict:
            h_v = gather_rows(self.h_t, v.steps, sindex)
            verdicts, x_next = self._verdicts(rnd, verified, v.firsts, v.rows, vindex, yv, t, h_v, sig_v)
        elif not all_finite(t):
            _raise_non_finite(rnd, t, v.rows, sig)
        committed, closings, advances = v.commit(verdicts, self.state, self.stats.windows)
        for i, advance in zip(verified, advances):
            self.pos[rnd.windows[i].sample] += advance
        self.bar.update(sum(advances))
        if self.anchors is not None:
            self.anchors.commit(committed, velocities=t if self.policy.predicts_velocity else None)
        self.stepper.close(self.x, t, closings, len(verified), x_next)
        return [i for i, advance in zip(verified, advances) if advance == rnd.windows[i].k + 1]

    def _correct(self, rnd: "_Round", corrected: list[int]) -> None:
        """Kept corrected windows, their closing anchors now on record: the draft steps again from
        each window's first state with the deep residual interpolated through the anchors, and
        the closing step from the corrected last state (replacing the one just taken), whose
        velocity then stands at the closing anchor for the next prediction."""
        with self.anchors.interpolating():
            self._roll_out(rnd, corrected, correction=True)
        self._close_corrected(rnd, corrected)

    def _close_corrected(self, rnd: "_Round", corrected: list[int]) -> None:
        """The closing step of each corrected window, from its corrected last state with the
        draft's output there (its steps redone: :meth:`_correct`)."""
        windows = [rnd.windows[i] for i in corrected]
        rows = [rnd.offsets[i] + w.k for i, w in zip(corrected, windows)]
        if not all_finite(gather_rows(rnd.drafted, [rnd.offsets[i] + j for i, w in zip(corrected, windows)
                                                    for j in range(w.k + 1)])):
            _raise_non_finite(rnd, None, [], self.sig, corrected)
        samples = [w.sample for w in windows]
        self.stepper.draft_steps(self.x, rnd.states, rnd.drafted, rows, [w.start + w.k for w in windows], samples)
        if self.policy.predicts_velocity:
            self.anchors.replace_velocity(samples, gather_rows(rnd.drafted, rows))

    def _verdicts(self, rnd, verified, firsts, vrows, vindex, yv, t, h_v, sig_v):
        """Pair statistics and the fused decide+commit over every verification row; the
        per-window :class:`Verdict` s and the fused op's next states."""
        windows = rnd.windows
        dv = gather_rows(rnd.drafted, vrows, vindex)
        pstats = sdsv_kernels.pair_stats(t, dv, yv, h_v)
        x_next, acc = sdsv_kernels.accept_commit(
            pstats, yv, t, h_v, sig_v, self._window_k([windows[i].tested_k for i in verified]), self.accept.metric,
            self.accept.tau, self.verify)
        acc_host = acc.tolist()  # the one host sync of the round
        pstats_host = pstats.cpu()
        stat_rows = pstats_host.tolist()
        if not all(is_finite(row) for row in stat_rows):
            _raise_non_finite(rnd, t, vrows, self.sig)
        # the acceptance metric of each row, for the window records of verified windows only
        tested = any(windows[i].tested_k for i in verified)
        values = (sdsv_kernels.metric_values(pstats_host, h_v.cpu(), sig_v.cpu(), self.numel, self.accept.metric).tolist()
                  if tested else None)
        errors = (self._closing_errors(stat_rows, pstats_host, values, h_v, sig_v) if self.policy.closing_error
                  else None)
        verdicts = []
        for i, first, a in zip(verified, firsts, acc_host):
            n_rows = len(windows[i].verify_rows)
            verdicts.append(Verdict(int(a), values[first: first + n_rows] if values is not None else None,
                                    errors[first] if errors is not None else float("nan")))
        return verdicts, x_next

    def _window_k(self, vk: list[int]) -> torch.Tensor:
        """``vk`` as a device tensor, made once per distinct round layout (a call has few)."""
        key = tuple(vk)
        t = self._vk_cache.get(key)
        if t is None:
            t = self._vk_cache[key] = torch.tensor(vk, device=self.dev)
        return t

    def _closing_errors(self, stat_rows, pstats_host, values, h_v, sig_v) -> list[float]:
        """Draft vs target at each row, in the policy's error measure: ``x0_rms`` = sigma rms(t - d)
        or ``v_rms`` = rms(t - d), the velocity error (an error per unit step)."""
        measure = self.policy.error_metric
        if measure == "v_rms":
            return [math.sqrt(row[_DIFF] / self.numel) for row in stat_rows]
        if measure == self.accept.metric and values is not None:
            return values
        return sdsv_kernels.metric_values(pstats_host, h_v.cpu(), sig_v.cpu(), self.numel, measure).tolist()

    def _draft_steps(self, rnd: "_Round", drafting: list[int]) -> None:
        """The unverified draft steps: the draft's output is the step's."""
        rows = [rnd.offsets[i] for i in drafting]
        if not all_finite(gather_rows(rnd.drafted, rows)):
            _raise_non_finite(rnd, None, [], self.sig)
        windows = [rnd.windows[i] for i in drafting]
        self.stepper.draft_steps(self.x, rnd.states, rnd.drafted, rows, [w.start for w in windows],
                                 [w.sample for w in windows])
        for w in windows:
            self.pos[w.sample] += w.commit(None, self.state, self.stats.windows)
        self.bar.update(len(drafting))


class _Round:
    """One round's windows: where each one's states start in the round buffer (``offsets``, of
    ``total`` rows), the draft levels (``depth``), which windows the target verifies and which
    are draft steps, and the buffers (``states``, ``drafted``: the stepper's)."""

    def __init__(self, windows: list[Window]):
        self.windows, self.offsets, self.verified, self.drafting = windows, [], [], []
        self.total = self.depth = 0
        self.needs_verdict = False
        self.states = self.drafted = None
        for i, w in enumerate(windows):
            self.offsets.append(self.total)
            self.total += w.k + 1
            self.depth = max(self.depth, w.levels)
            (self.verified if w.verify_rows else self.drafting).append(i)
            self.needs_verdict = self.needs_verdict or w.needs_verdict


class _Verification:
    """The rows of one target call that verifies a round's windows: which rows of the round
    buffer (``rows``), at which steps and of which samples, where each window's rows start in the
    call (``firsts``); after the verdicts, each window's commit as the rows it keeps on the path
    (for the anchors), its closing step and how far it advanced."""

    def __init__(self, rnd: _Round, verified: list[int]):
        self.windows = [rnd.windows[i] for i in verified]
        self.offsets = [rnd.offsets[i] for i in verified]
        self.rows, self.steps, self.samples, self.firsts = [], [], [], []
        for w, off in zip(self.windows, self.offsets):
            self.firsts.append(len(self.rows))
            self.rows += [off + j for j in w.verify_rows]
            self.steps += [w.start + j for j in w.verify_rows]
            self.samples += [w.sample] * len(w.verify_rows)

    def commit(self, verdicts, state, records) -> tuple[list[int], list[Closing], list[int]]:
        """``(rows of the call on the committed path, closings, advance of each window)``."""
        committed, closings, advances = [], [], []
        for n, (w, off, first, verdict) in enumerate(zip(self.windows, self.offsets, self.firsts, verdicts)):
            advance = w.commit(verdict, state, records)
            committed += [first + r for r in w.on_path(advance)]
            if advance:
                closings.append(Closing(n, w.sample, off + advance - 1, first + w.closing_row(advance), w.start + advance - 1))
            advances.append(advance)
        return committed, closings, advances


def _raise_non_finite(rnd: _Round, t, vrows, sig_host, corrected: Sequence[int] = ()) -> None:
    """Find the first model output that is NaN/inf and name it (called only on failure);
    ``corrected``: the windows whose draft outputs are a correction's (levels ``0 .. k``)."""
    windows, offs, drafted = rnd.windows, rnd.offsets, rnd.drafted
    for j in range(rnd.depth + 1):  # draft outputs in rollout order: the earliest culprit first
        for i, w in enumerate(windows):
            levels = w.k + 1 if i in corrected else w.levels
            if j < levels and not torch.isfinite(drafted[offs[i] + j]).all():
                step = w.start + j
                raise NonFiniteOutputError(
                    f"the draft model returned NaN/inf at step {step} (sigma={sig_host[step]:.4g}) for sample {w.sample}"
                )
    if t is not None:
        for r, row in enumerate(vrows):
            if not torch.isfinite(t[r]).all():
                i = max(i for i, o in enumerate(offs) if o <= row)
                step = windows[i].start + row - offs[i]
                raise NonFiniteOutputError(
                    f"the target model returned NaN/inf at step {step} (sigma={sig_host[step]:.4g}) for sample "
                    f"{windows[i].sample}"
                )
    raise NonFiniteOutputError("a window's statistics are not finite although both models' outputs are (overflow?)")
