"""``sdsv.sample``: speculative sampling of a flow-matching model (METHOD.md sections 3 and 8).

Every round, each unfinished sample takes one *window* at its own position, as its window
policy (:mod:`sdsv.policy`) says: the draft proposes ``k`` steps of the solver (Euler, or a
multistep rule of :mod:`sdsv.solvers` with each sample's history), the target verifies them in
ONE batched forward call (rows of all samples together), and the window closes with one target
step from the last accepted state; a rejected window costs one target step, never more. Unverified windows (the forecast-cache schedules) skip the test and close with the target
at their last draft state. With a self-draft, the target evaluations on the committed
trajectory become its forecast anchors.

All arithmetic on latents goes through :mod:`sdsv_kernels` (rollout, pair statistics,
accept+commit; ``gather_combine`` for the multistep rules), so faster backends plug in without
touching this file. The host synchronises once per round, to learn how far each sample advanced.
Models get copies of their input rows unless they declare ``sdsv_pure = True``.
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

from .acceptance import AcceptanceTest
from .forecast import SelfDraft
from .policy import WINDOW_KINDS, WindowPolicy
from ._rows import gather_rows as _gather, rows_view as _rows_view, scatter_rows as _scatter
from .result import SampleResult, SampleStats, WindowRecord
from .schedule import check_sigmas
from .solvers import Euler, Solver, check_matrices, get_solver

_DIFF = sdsv_kernels.STAT_COLUMNS.index("diff")

Denoiser = Callable[..., torch.Tensor]  # (x[b, ...], sigma[b], **cond) -> v[b, ...]


class NonFiniteOutputError(FloatingPointError):
    """A model returned NaN or inf; the message names the model, the step and the sample."""


class _Conditioning:
    """Per-row views of the per-sample conditioning kwargs.

    Per-sample kwargs are the ones named in ``per_sample``; when that is None, every tensor whose
    first dimension equals the batch size (a heuristic: name them when a shared tensor could
    have that length by accident)."""

    def __init__(self, cond: dict, batch: int, per_sample=None):
        self.cond, self.batch = cond, batch
        if per_sample is None:
            per_sample = {k for k, v in cond.items() if isinstance(v, torch.Tensor) and v.dim() > 0 and v.shape[0] == batch}
        elif isinstance(per_sample, str):  # one name, not its letters
            per_sample = [per_sample]
        per_sample = set(per_sample)
        for k in per_sample:
            v = cond.get(k)
            if not isinstance(v, torch.Tensor) or v.dim() == 0 or v.shape[0] != batch:
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


def is_pure(fn) -> bool:
    """Whether ``fn`` (or the object it is a bound method of) declares ``sdsv_pure = True``: it
    never writes into its arguments, so the sampler may hand it views of its buffers."""
    return bool(getattr(fn, "sdsv_pure", False) or getattr(getattr(fn, "__self__", None), "sdsv_pure", False))


class _Models:
    """Calls the two denoisers, checks what they return, and keeps the counts and timings.

    With a self-draft, every call first tells its anchor bank which sample and sigma each row has."""

    def __init__(self, target, draft, stats: SampleStats, like: torch.Tensor, anchors=None):
        self.fns = {"target": target, "draft": draft}
        # the rows a model gets are views of the sampler's own buffers: a model that has not
        # declared that it never writes into its inputs gets copies (one latent row per row and
        # the sigmas), so its in-place writes cannot corrupt committed states or decisions
        self.copy_inputs = {k: not is_pure(fn) for k, fn in self.fns.items()}
        self.stats, self.like, self.anchors = stats, like, anchors
        self.sync = like.device.type == "cuda"

    def __call__(self, which: str, x: torch.Tensor, sigma: torch.Tensor, cond: dict,
                 samples: Sequence[int], sig_rows: Sequence[float]) -> torch.Tensor:
        fn = self.fns[which]
        if self.anchors is not None:
            self.anchors.tag(samples, sig_rows)
        if self.copy_inputs[which]:
            x, sigma = x.clone(), sigma.clone()
        if self.sync:
            torch.cuda.synchronize(x.device)
        t0 = time.perf_counter()
        out = fn(x, sigma, **cond)
        if self.sync:
            torch.cuda.synchronize(x.device)
        dt = time.perf_counter() - t0
        st = self.stats
        if which == "target":
            st.target_calls += 1
            st.target_evals += x.shape[0]
            st.target_s += dt
        else:
            st.draft_calls += 1
            st.draft_evals += x.shape[0]
            st.draft_s += dt
        check_model_output(which, out, x)
        return out


def check_model_output(which: str, out, x: torch.Tensor) -> None:
    """A model's output must be a tensor of its input's shape, dtype and device (the contract)."""
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"the {which} model returned {type(out).__name__}, expected a tensor of shape {tuple(x.shape)}")
    if out.shape != x.shape:
        raise ValueError(f"the {which} model returned shape {tuple(out.shape)} for input of shape {tuple(x.shape)}")
    if out.dtype != x.dtype or out.device != x.device:
        raise TypeError(
            f"the {which} model returned {out.dtype} on {out.device}, but the latents are "
            f"{x.dtype} on {x.device}: cast the model or the noise so they agree"
        )


def check_noise_and_sigmas(noise, sigmas) -> None:
    """The starting latents and the schedule every sampler here takes (clear errors, no NaN)."""
    if not isinstance(noise, torch.Tensor) or not noise.is_floating_point() or noise.dim() < 2:
        raise ValueError("noise must be a floating-point tensor [batch, ...latent dims]")
    if noise.shape[0] < 1 or noise[0].numel() == 0:
        raise ValueError(f"noise has an empty batch or latent: shape {tuple(noise.shape)}")
    if not torch.isfinite(noise).all():
        raise ValueError("noise contains NaN or inf")
    check_sigmas(sigmas)


class IgnoredOptionWarning(UserWarning):
    """An option was given that the chosen window policy does not use."""


def check_verification_options(policy, verify, accept) -> None:
    """``verify=`` and ``accept=`` set how verified windows are checked; a policy that opens none
    ignores them, which would hide a mistake (e.g. a threshold meant for SDSV given to the
    error-controlled windows), so it is said. A warning, not an error: sweeping one set of
    options over several policies is legitimate."""
    if isinstance(policy, WindowPolicy) and not policy.verifies:
        given = [name for name, value in (("verify", verify), ("accept", accept)) if value is not None]
        if given:
            warnings.warn(f"{' and '.join(f'{g}=' for g in given)} ignored: the policy {policy.describe()} "
                          f"({type(policy).__name__}) opens no verified window, the only kind that uses "
                          f"{'them' if len(given) > 1 else 'it'}", IgnoredOptionWarning, stacklevel=3)


def _check_inputs(target, draft, noise, sigmas, plan, verify, accept, self_draft) -> None:
    if not isinstance(plan, WindowPolicy):
        raise TypeError(f"plan must be a window policy (sdsv.StagePlan, FixedInterval, ErrorControlled), "
                        f"got {type(plan).__name__}")
    if not isinstance(accept, AcceptanceTest):
        raise TypeError(f"accept must be a sdsv.AcceptanceTest, got {type(accept).__name__}")
    if verify not in sdsv_kernels.VERIFY_MODES:
        raise ValueError(f"verify must be one of {sdsv_kernels.VERIFY_MODES}, got {verify!r}")
    if self_draft is not None and not isinstance(self_draft, SelfDraft):
        raise TypeError(f"self_draft must be a sdsv.SelfDraft, got {type(self_draft).__name__}")
    check_noise_and_sigmas(noise, sigmas)
    n = sigmas.numel() - 1
    if plan.num_steps != n:
        longer = "longer than" if plan.num_steps > n else "shorter than"
        raise ValueError(f"the plan has {plan.num_steps} steps, {longer} the schedule's {n} (len(sigmas) - 1)")
    if plan.uses_target and not callable(target):
        raise TypeError(f"plan {plan.name!r} uses the target, but target is not callable")
    if plan.uses_draft and not callable(draft):
        raise TypeError(f"plan {plan.name!r} uses the draft, but draft is not callable")


def _draft_levels(kind: str, k: int, endpoints: bool, closing_error: bool) -> int:
    """How many states of a window the draft evaluates (``y_0 .. y_{n-1}``): the k it rolls out
    from, plus ``y_k`` where the window's closing row compares the draft with the target."""
    if kind == "draft":
        return 1
    if kind == "speculate":
        return k + (1 if endpoints else 0)
    if kind == "unverified":
        return k + (1 if closing_error else 0)
    return 0


def _verify_rows(kind: str, k: int, endpoints: bool) -> list[int]:
    """The states of a window the target evaluates, in order (the last one closes the window)."""
    if kind == "unverified":
        return [k]
    if k == 0:
        return [0]
    return [0, k] if endpoints else list(range(k + 1))


def sample(
    target: Denoiser | None,
    draft: Denoiser | None,
    noise: torch.Tensor,
    sigmas: torch.Tensor,
    plan: WindowPolicy,
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
    batched forward, one sigma per row. ``plan``: a :class:`~sdsv.plan.StagePlan` (the paper's
    verified windows) or another window policy (:mod:`sdsv.policy`). ``self_draft``: the
    :class:`~sdsv.forecast.SelfDraft` whose denoisers ``target``/``draft`` are built on (they
    default to its own when None); the sampler keeps its anchors for this call and tells it
    which target evaluations lie on the committed trajectory. ``cond`` kwargs named in
    ``per_sample`` (default: the tensors whose first dimension is the batch size) are
    per-sample and gathered for each row (expanded without a copy when the rows belong to one
    sample); the rest pass unchanged. ``solver``: the step rule of every step, drafted or not —
    ``"euler"`` (the paper's) or ``"dpm++2m"`` (DPM-Solver++(2M); each sample carries its
    multistep history through windows, see :mod:`sdsv.solvers`). ``progress``: show a tqdm bar
    (a dict is passed to tqdm as options).
    """
    check_verification_options(plan, verify, accept)
    verify = verify if verify is not None else "endpoints"
    accept = accept if accept is not None else AcceptanceTest()
    solver = get_solver(solver)
    if isinstance(self_draft, SelfDraft):
        target = self_draft.target if target is None else target
        draft = self_draft.draft if draft is None else draft
    _check_inputs(target, draft, noise, sigmas, plan, verify, accept, self_draft)
    t_start = time.perf_counter()
    batch = noise.shape[0]
    stats = SampleStats()
    # a dict is tqdm's options (e.g. a diffusers pipeline's progress-bar config, which may hold
    # "disable"); an empty dict still means "show the bar"; the total is always ours
    bar_opts = {"desc": "sdsv", "unit": "step", **(progress if isinstance(progress, dict) else {})}
    bar_opts.pop("total", None)
    bar_opts["disable"] = bool(bar_opts.get("disable", False)) or progress is False or progress is None
    session = self_draft.session(batch) if self_draft is not None else contextlib.nullcontext()
    # sampling never needs autograd: without this, nn.Module models called outside no_grad would
    # keep the whole sampling graph alive (and the custom ops have no backward)
    with torch.no_grad(), tqdm(total=plan.num_steps * batch, **bar_opts) as bar, session as anchors:
        loop = _Loop(plan, verify, accept, noise, sigmas, _Models(target, draft, stats, noise, anchors),
                     _Conditioning(cond, batch, per_sample), anchors, bar, solver)
        x = loop.run()
        if not torch.isfinite(x).all():  # every step kind: the models' outputs were checked, the sum overflowed
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
    window's verification rows in one batched call, and one fused op decides and commits."""

    def __init__(self, plan, verify, accept, noise, sigmas, models, conds, anchors, bar, solver: Solver):
        self.plan, self.run_state = plan, plan.start(noise.shape[0])
        self.accept, self.models, self.conds, self.anchors, self.bar = accept, models, conds, anchors, bar
        self.endpoints = verify == "endpoints"
        self.verify = verify
        self.closing_error = bool(getattr(plan, "closing_error", False))
        self.x = noise.clone()
        self.dev = noise.device
        self.numel = noise[0].numel()
        self.batch = noise.shape[0]
        self.sig = [float(s) for s in sigmas.double().tolist()]
        # sigmas and step sizes travel in fp32 (fp64 for fp64 latents), as the ops compute; made
        # once, and a call's rows are views of them where they can be (batch 1: always): on a
        # 2-core CPU every small tensor made between two model calls costs ~10-20 us
        self.sdt = torch.promote_types(noise.dtype, torch.float32)
        self.sig_t = torch.tensor(self.sig, device=noise.device, dtype=self.sdt)
        self.h_t = torch.tensor([b - a for a, b in zip(self.sig, self.sig[1:])], device=noise.device, dtype=self.sdt)
        self.pos = [0] * self.batch
        self.stats = models.stats
        self._vk_cache: dict[tuple, torch.Tensor] = {}
        # Euler keeps its fused ops; any other rule is applied row by row of its step matrices
        # (one gather_combine each) over a round buffer that also holds the history rows
        self.linear = not isinstance(solver, Euler)
        if self.linear:
            self.m = solver.history
            mats = solver.step_matrices(self.sig)
            check_matrices(solver, mats, len(self.sig) - 1)
            table = torch.tensor(mats, dtype=self.sdt, device=noise.device)  # [steps, m + 1, m + 2]
            self.mat_rows = [table[:, o].contiguous() for o in range(self.m + 1)]
            self.hist = noise.new_zeros((self.m, *noise.shape))  # zeros: the first step's weight on it is 0

    def run(self) -> torch.Tensor:
        n = self.plan.num_steps
        while True:
            active = [b for b in range(self.batch) if self.pos[b] < n]
            if not active:
                return self.x
            acts = [self.run_state.window(b, self.pos[b]) for b in active]
            for (kind, k), b in zip(acts, active):
                if kind not in WINDOW_KINDS or k < 0 or (kind in ("target", "draft") and k) or self.pos[b] + k >= n:
                    raise ValueError(f"the policy gave sample {b} at step {self.pos[b]} the window {(kind, k)}, "
                                     f"which is not one of {WINDOW_KINDS} with 0 <= k < {n - self.pos[b]}")
            offs, total = [], 0
            for _, k in acts:
                offs.append(total)
                total += k + 1
            if self.linear:  # [states | draft outputs | history rows], one bank for gather_combine
                self.buf = self.x.new_empty(((2 + self.m) * total, *self.x.shape[1:]))
                self.total = total
                states, drafted = self.buf[:total], self.buf[total: 2 * total]
                drafted.zero_()
                for h in range(self.m):
                    _scatter(self._hist_rows(h), offs, _gather(self.hist[h], active))
            else:
                states = self.x.new_empty((total, *self.x.shape[1:]))
                drafted = torch.zeros_like(states)
            _scatter(states, offs, _gather(self.x, active))
            self._rollout(active, acts, offs, states, drafted)
            self._verify_and_commit(active, acts, offs, states, drafted)
            self._draft_steps(active, acts, offs, states, drafted)
            if not self.bar.disable and self.stats.verified_windows:
                self.bar.set_postfix(accept=f"{self.stats.acceptance_rate:.0%}", refresh=False)

    def _hist_rows(self, h: int) -> torch.Tensor:
        return self.buf[(2 + h) * self.total: (3 + h) * self.total]

    def _linear_step(self, v: torch.Tensor, rows: Sequence[int], steps: Sequence[int], outs) -> list[torch.Tensor]:
        """The solver's step from the round buffer's state ``rows`` (their history rows alongside)
        with model outputs ``v``: ``[y_next, H_next_0, ...]``, written into ``outs`` (views or None)."""
        total = self.total
        index = torch.tensor([[r] + [(2 + h) * total + r for h in range(self.m)] for r in rows], device=self.dev)
        res = []
        for o, out in enumerate(outs):
            coeffs = _gather(self.mat_rows[o], steps).contiguous()
            res.append(sdsv_kernels.gather_combine(v, self.buf, index, coeffs, out=out))
        return res

    def _commit_linear(self, v, rows, steps, samples) -> None:
        """Close steps from buffer ``rows`` with the target's ``v``: the samples' next states and history."""
        dests = [self.x] + [self.hist[h] for h in range(self.m)]
        views = [_rows_view(d, samples) for d in dests]
        res = self._linear_step(v, rows, steps, views)
        for d, view, r in zip(dests, views, res):
            if view is None:
                _scatter(d, samples, r)

    def _levels(self, acts) -> list[int]:
        return [_draft_levels(kind, k, self.endpoints, self.closing_error) for kind, k in acts]

    def _rollout(self, active, acts, offs, states, drafted) -> None:
        """Level j evaluates the draft at y_j of every window still drafting, then steps y_{j+1}."""
        levels, sig, pos, dev = self._levels(acts), self.sig, self.pos, self.dev
        for j in range(max(levels, default=0)):
            lvl = [i for i, n in enumerate(levels) if j < n]
            rows = [offs[i] + j for i in lvl]
            y = _gather(states, rows)
            steps = [pos[active[i]] + j for i in lvl]
            sig_rows = [sig[i] for i in steps]
            samples = [active[i] for i in lvl]
            d = self.models("draft", y, _gather(self.sig_t, steps), self.conds.rows(samples), samples, sig_rows)
            _scatter(drafted, rows, d)
            roll = [n for n, i in enumerate(lvl) if acts[i][0] in ("speculate", "unverified") and j < acts[i][1]]
            if not roll:
                continue
            h = _gather(self.h_t, [steps[n] for n in roll])
            src_rows = [rows[n] for n in roll]
            dst_rows = [r + 1 for r in src_rows]
            dst = _rows_view(states, dst_rows)
            y_src = y if len(roll) == len(lvl) else _gather(states, src_rows)
            d_src = d if len(roll) == len(lvl) else d.index_select(0, torch.tensor(roll, device=dev))
            if self.linear:  # the draft's step, its history alongside (rows never overlap: r -> r + 1)
                dsts = [dst] + [_rows_view(self._hist_rows(h), dst_rows) for h in range(self.m)]
                res = self._linear_step(d_src, src_rows, [steps[n] for n in roll], dsts)
                for h, (view, r) in enumerate(zip(dsts, res)):
                    if view is None:
                        _scatter(states if h == 0 else self._hist_rows(h - 1), dst_rows, r)
            elif dst is not None:
                sdsv_kernels.rollout_step(y_src, d_src, h, out=dst)
            else:
                _scatter(states, dst_rows, sdsv_kernels.rollout_step(y_src, d_src, h))

    def _verify_and_commit(self, active, acts, offs, states, drafted) -> None:
        """One target call over every window's verification rows; one fused decide+commit."""
        ver = [i for i, (kind, _) in enumerate(acts) if kind != "draft"]
        if not ver:
            return
        sig, pos, dev = self.sig, self.pos, self.dev
        vrows, vsteps, vsamples, vk, firsts = [], [], [], [], []
        for i in ver:
            kind, k = acts[i]
            b = active[i]
            firsts.append(len(vrows))
            for j in _verify_rows(kind, k, self.endpoints):
                vrows.append(offs[i] + j)
                vsteps.append(pos[b] + j)
                vsamples.append(b)
            # an unverified window closes like a plain target step at its last draft state
            vk.append(k if kind == "speculate" else 0)
        vindex = None if _rows_view(states, vrows) is not None else torch.tensor(vrows, device=dev)
        yv = _gather(states, vrows, vindex)
        dv = _gather(drafted, vrows, vindex)
        sindex = None if _rows_view(self.sig_t, vsteps) is not None else torch.tensor(vsteps, device=dev)
        sig_v, h_v = _gather(self.sig_t, vsteps, sindex), _gather(self.h_t, vsteps, sindex)
        t = self.models("target", yv, sig_v, self.conds.rows(vsamples), vsamples, [sig[i] for i in vsteps])
        pstats = sdsv_kernels.pair_stats(t, dv, yv, h_v)
        x_next, acc = sdsv_kernels.accept_commit(
            pstats, yv, t, h_v, sig_v, self._window_k(vk), self.accept.metric, self.accept.tau, self.verify
        )
        acc_host = acc.tolist()  # the one host sync of the round
        pstats_host = pstats.cpu()
        stat_rows = pstats_host.tolist()
        if not all(math.isfinite(v) for row in stat_rows for v in row):
            _raise_non_finite(drafted, t, acts, offs, active, pos, sig, vrows, self._levels(acts))
        # the acceptance metric of each row, for the window records of verified windows only
        verified = any(acts[i][0] == "speculate" for i in ver)
        values = (sdsv_kernels.metric_values(pstats_host, h_v.cpu(), sig_v.cpu(), self.numel, self.accept.metric).tolist()
                  if verified else None)
        errors = self._closing_errors(stat_rows, pstats_host, values, h_v, sig_v) if self.closing_error else values
        kept, committed = [], []
        lin_rows, lin_t, lin_steps, lin_samples = [], [], [], []  # the closing steps, for a linear solver
        for n, (i, first, a) in enumerate(zip(ver, firsts, acc_host)):
            kind, k = acts[i]
            b = active[i]
            if kind == "speculate":
                n_rows = 2 if self.endpoints else k + 1
                vals = values[first: first + n_rows]
                if not self.endpoints:
                    vals[k] = float("nan")  # row k closes the window; it is not tested
                self.stats.windows.append(WindowRecord(b, pos[b], k, int(a), vals))
                self.run_state.observe(b, pos[b], kind, k, int(a), float("nan"))
                # the target evaluations on the committed trajectory: the window's start and, for
                # an accepted window, every verified state up to the last accepted one
                if self.endpoints:
                    on_path = [first, first + 1] if a == k else [first]
                else:
                    on_path = list(range(first, first + int(a) + 1))
                advance = int(a) + 1
            elif kind == "unverified":
                err = errors[first] if self.closing_error else float("nan")
                keep = self.run_state.observe(b, pos[b], kind, k, k, err)
                self.stats.windows.append(WindowRecord(b, pos[b], k, k if keep else 0, [err], kind="unverified"))
                on_path, advance = ([first], k + 1) if keep else ([], 0)
            else:
                self.run_state.observe(b, pos[b], kind, 0, 0, float("nan"))
                on_path, advance = [first], 1
            committed += on_path
            if advance:
                kept.append(n)
                if self.linear:  # the target's step from the last accepted state y_{advance-1}
                    lin_rows.append(offs[i] + advance - 1)
                    lin_t.append(first if advance == 1 or kind == "unverified" else first + (1 if self.endpoints else advance - 1))
                    lin_steps.append(pos[b] + advance - 1)
                    lin_samples.append(b)
            pos[b] += advance
            self.bar.update(advance)
        if self.anchors is not None:
            self.anchors.commit(committed)
        if self.linear:
            if lin_rows:
                v = t if lin_t == list(range(t.shape[0])) else _gather(t, lin_t)
                self._commit_linear(v, lin_rows, lin_steps, lin_samples)
        elif len(kept) == len(ver):
            _scatter(self.x, [active[i] for i in ver], x_next)
        elif kept:
            _scatter(self.x, [active[ver[n]] for n in kept], x_next.index_select(0, torch.tensor(kept, device=dev)))

    def _window_k(self, vk: list[int]) -> torch.Tensor:
        """``vk`` as a device tensor, made once per distinct round layout (a call has few)."""
        key = tuple(vk)
        t = self._vk_cache.get(key)
        if t is None:
            t = self._vk_cache[key] = torch.tensor(vk, device=self.dev)
        return t

    def _closing_errors(self, stat_rows, pstats_host, values, h_v, sig_v) -> list[float]:
        """Draft vs target at each row, in the policy's error measure: ``x0_rms`` = sigma rms(t - d)
        (METHOD.md section 8) or ``v_rms`` = rms(t - d), the velocity error (an error per unit step)."""
        measure = getattr(self.plan, "error_metric", "x0_rms")
        if measure == "v_rms":
            return [math.sqrt(row[_DIFF] / self.numel) for row in stat_rows]
        if measure == self.accept.metric and values is not None:
            return values
        return sdsv_kernels.metric_values(pstats_host, h_v.cpu(), sig_v.cpu(), self.numel, measure).tolist()

    def _draft_steps(self, active, acts, offs, states, drafted) -> None:
        dsteps = [i for i, (kind, _) in enumerate(acts) if kind == "draft"]
        if not dsteps:
            return
        sig, pos = self.sig, self.pos
        rows = [offs[i] for i in dsteps]
        if self.linear:
            v = _gather(drafted, rows)
            if not torch.isfinite(v).all():
                _raise_non_finite(drafted, None, acts, offs, active, pos, sig, [], self._levels(acts))
            self._commit_linear(v, rows, [pos[active[i]] for i in dsteps], [active[i] for i in dsteps])
        else:
            h = _gather(self.h_t, [pos[active[i]] for i in dsteps])
            nxt = sdsv_kernels.rollout_step(_gather(states, rows), _gather(drafted, rows), h)
            if not torch.isfinite(nxt).all():
                _raise_non_finite(drafted, None, acts, offs, active, pos, sig, [], self._levels(acts))
            _scatter(self.x, [active[i] for i in dsteps], nxt)
        for i in dsteps:
            pos[active[i]] += 1
        self.bar.update(len(dsteps))


def _raise_non_finite(drafted, t, acts, offs, active, pos, sig_host, vrows, levels) -> None:
    """Find the first model output that is NaN/inf and name it (called only on failure)."""
    for j in range(max(levels, default=0)):  # draft outputs in rollout order: the earliest culprit first
        for i, n in enumerate(levels):
            if j < n and not torch.isfinite(drafted[offs[i] + j]).all():
                b, step = active[i], pos[active[i]] + j
                raise NonFiniteOutputError(
                    f"the draft model returned NaN/inf at step {step} (sigma={sig_host[step]:.4g}) for sample {b}"
                )
    if t is not None:
        for r, row in enumerate(vrows):
            if not torch.isfinite(t[r]).all():
                i = max(i for i, o in enumerate(offs) if o <= row)
                b, step = active[i], pos[active[i]] + row - offs[i]
                raise NonFiniteOutputError(
                    f"the target model returned NaN/inf at step {step} (sigma={sig_host[step]:.4g}) for sample {b}"
                )
    raise NonFiniteOutputError("a window's statistics are not finite although both models' outputs are (overflow?)")
