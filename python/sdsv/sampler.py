"""``sdsv.sample``: speculative sampling of a flow-matching model (METHOD.md section 3).

Every round, each unfinished sample takes one *window* at its own position: the draft
proposes ``k`` Euler steps, the target verifies them in ONE batched forward call (rows of all
samples together), and the window closes with one target step from the last accepted state.
A rejected window costs one target step, never more.

All arithmetic on latents goes through :mod:`sdsv_kernels` (rollout, pair statistics,
accept+commit), so faster backends plug in without touching this file. The host synchronises
once per round, to learn how far each sample advanced.
"""

from __future__ import annotations

import time
from typing import Callable, Sequence

import torch
from tqdm.auto import tqdm

import sdsv_kernels

from .acceptance import AcceptanceTest
from .plan import StagePlan
from .result import SampleResult, SampleStats, WindowRecord
from .schedule import check_sigmas

Denoiser = Callable[..., torch.Tensor]  # (x[b, ...], sigma[b], **cond) -> v[b, ...]


class NonFiniteOutputError(FloatingPointError):
    """A model returned NaN or inf; the message names the model, the step and the sample."""


def _rows_view(buf: torch.Tensor, rows: Sequence[int]) -> torch.Tensor | None:
    """``buf[rows]`` as a view when the rows are evenly spaced (the common case), else None."""
    if len(rows) == 1:
        return buf[rows[0] : rows[0] + 1]
    step = rows[1] - rows[0]
    if step > 0 and all(b - a == step for a, b in zip(rows, rows[1:])):
        return buf[rows[0] : rows[-1] + 1 : step]
    return None


def _gather(buf: torch.Tensor, rows: Sequence[int], index: torch.Tensor | None = None) -> torch.Tensor:
    view = _rows_view(buf, rows)
    if view is not None:
        return view
    return buf.index_select(0, index if index is not None else torch.tensor(rows, device=buf.device))


def _scatter(buf: torch.Tensor, rows: Sequence[int], src: torch.Tensor) -> None:
    view = _rows_view(buf, rows)
    if view is not None:
        if view.data_ptr() != src.data_ptr():
            view.copy_(src)
    else:
        buf.index_copy_(0, torch.tensor(rows, device=buf.device), src)


class _Conditioning:
    """Per-row views of the per-sample conditioning kwargs.

    Per-sample kwargs are the ones named in ``per_sample``; when that is None, every tensor whose
    first dimension equals the batch size (a heuristic: name them when a shared tensor could
    have that length by accident)."""

    def __init__(self, cond: dict, batch: int, per_sample=None):
        self.cond, self.batch = cond, batch
        if per_sample is None:
            per_sample = {k for k, v in cond.items() if isinstance(v, torch.Tensor) and v.dim() > 0 and v.shape[0] == batch}
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


class _Models:
    """Calls the two denoisers, checks what they return, and keeps the counts and timings."""

    def __init__(self, target, draft, stats: SampleStats, like: torch.Tensor):
        self.fns = {"target": target, "draft": draft}
        self.stats, self.like = stats, like
        self.sync = like.device.type == "cuda"

    def __call__(self, which: str, x: torch.Tensor, sigma: torch.Tensor, cond: dict) -> torch.Tensor:
        fn = self.fns[which]
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
        if not isinstance(out, torch.Tensor):
            raise TypeError(f"the {which} model returned {type(out).__name__}, expected a tensor of shape {tuple(x.shape)}")
        if out.shape != x.shape:
            raise ValueError(f"the {which} model returned shape {tuple(out.shape)} for input of shape {tuple(x.shape)}")
        if out.dtype != self.like.dtype or out.device != self.like.device:
            raise TypeError(
                f"the {which} model returned {out.dtype} on {out.device}, but the latents are "
                f"{self.like.dtype} on {self.like.device}: cast the model or the noise so they agree"
            )
        return out


def _check_inputs(target, draft, noise, sigmas, plan, verify, accept) -> None:
    if not isinstance(plan, StagePlan):
        raise TypeError(f"plan must be a sdsv.StagePlan, got {type(plan).__name__}")
    if not isinstance(accept, AcceptanceTest):
        raise TypeError(f"accept must be a sdsv.AcceptanceTest, got {type(accept).__name__}")
    if verify not in sdsv_kernels.VERIFY_MODES:
        raise ValueError(f"verify must be one of {sdsv_kernels.VERIFY_MODES}, got {verify!r}")
    if not isinstance(noise, torch.Tensor) or not noise.is_floating_point() or noise.dim() < 2:
        raise ValueError("noise must be a floating-point tensor [batch, ...latent dims]")
    if noise.shape[0] < 1 or noise[0].numel() == 0:
        raise ValueError(f"noise has an empty batch or latent: shape {tuple(noise.shape)}")
    if not torch.isfinite(noise).all():
        raise ValueError("noise contains NaN or inf")
    check_sigmas(sigmas)
    n = sigmas.numel() - 1
    if plan.num_steps != n:
        longer = "longer than" if plan.num_steps > n else "shorter than"
        raise ValueError(f"the plan has {plan.num_steps} steps, {longer} the schedule's {n} (len(sigmas) - 1)")
    if plan.uses_target and not callable(target):
        raise TypeError(f"plan {plan.name!r} uses the target, but target is not callable")
    if plan.uses_draft and not callable(draft):
        raise TypeError(f"plan {plan.name!r} uses the draft, but draft is not callable")


def sample(
    target: Denoiser | None,
    draft: Denoiser | None,
    noise: torch.Tensor,
    sigmas: torch.Tensor,
    plan: StagePlan,
    verify: str = "endpoints",
    accept: AcceptanceTest | None = None,
    *,
    progress: bool | dict = False,
    per_sample: Sequence[str] | None = None,
    **cond,
) -> SampleResult:
    """Sample from ``noise`` along ``sigmas`` with the target, the draft and the plan.

    ``target``/``draft``: ``(x[b, ...], sigma[b], **cond) -> v[b, ...]``, one call = one
    batched forward, one sigma per row. ``cond`` kwargs named in ``per_sample`` (default: the
    tensors whose first dimension is the batch size) are per-sample and gathered for each row
    (expanded without a copy when the rows belong to one sample); the rest pass unchanged.
    ``progress``: show a tqdm bar (a dict is passed to tqdm as options).
    """
    accept = accept if accept is not None else AcceptanceTest()
    _check_inputs(target, draft, noise, sigmas, plan, verify, accept)
    t_start = time.perf_counter()
    n_steps, batch = plan.num_steps, noise.shape[0]
    dev = noise.device
    sig_host = [float(s) for s in sigmas.double().tolist()]
    stats = SampleStats()
    models = _Models(target, draft, stats, noise)
    conds = _Conditioning(cond, batch, per_sample)
    endpoints = verify == "endpoints"
    numel = noise[0].numel()
    # sigmas and step sizes travel in fp32 (fp64 for fp64 latents), as the ops compute
    sdt = torch.promote_types(noise.dtype, torch.float32)

    x = noise.clone()
    pos = [0] * batch
    # a dict is tqdm's options (e.g. a diffusers pipeline's progress-bar config, which may hold
    # "disable"); an empty dict still means "show the bar"; the total is always ours
    bar_opts = {"desc": "sdsv", "unit": "step", **(progress if isinstance(progress, dict) else {})}
    bar_opts.pop("total", None)
    bar_opts["disable"] = bool(bar_opts.get("disable", False)) or progress is False or progress is None
    bar = tqdm(total=n_steps * batch, **bar_opts)

    while True:
        active = [b for b in range(batch) if pos[b] < n_steps]
        if not active:
            break
        acts = [plan.window_at(pos[b]) for b in active]
        offs, total = [], 0
        for _, k in acts:
            offs.append(total)
            total += k + 1
        states = x.new_empty((total, *x.shape[1:]))
        drafted = torch.zeros_like(states)
        _scatter(states, offs, _gather(x, active))

        # ---- draft rollout: level j evaluates y_j of every window still drafting ----------
        max_level = max(k + (1 if (kind == "speculate" and endpoints) else 0) for kind, k in acts)
        for j in range(max_level + 1):
            lvl = [i for i, (kind, k) in enumerate(acts)
                   if (kind == "draft" and j == 0) or (kind == "speculate" and (j < k or (endpoints and j == k)))]
            if not lvl:
                continue
            rows = [offs[i] + j for i in lvl]
            y = _gather(states, rows)
            sig = torch.tensor([sig_host[pos[active[i]] + j] for i in lvl], device=dev, dtype=sdt)
            d = models("draft", y, sig, conds.rows([active[i] for i in lvl]))
            _scatter(drafted, rows, d)
            roll = [n for n, i in enumerate(lvl) if acts[i][0] == "speculate" and j < acts[i][1]]
            if roll:
                h = torch.tensor([sig_host[pos[active[lvl[n]]] + j + 1] - sig_host[pos[active[lvl[n]]] + j] for n in roll],
                                 device=dev, dtype=sdt)
                src_rows = [rows[n] for n in roll]
                dst_rows = [r + 1 for r in src_rows]
                dst = _rows_view(states, dst_rows)
                y_src = y if len(roll) == len(lvl) else _gather(states, src_rows)
                d_src = d if len(roll) == len(lvl) else d.index_select(0, torch.tensor(roll, device=dev))
                if dst is not None:
                    sdsv_kernels.rollout_step(y_src, d_src, h, out=dst)
                else:
                    _scatter(states, dst_rows, sdsv_kernels.rollout_step(y_src, d_src, h))

        # ---- verification: one target call over every sample's rows ------------------------
        ver = [i for i, (kind, _) in enumerate(acts) if kind != "draft"]
        records: list[tuple[int, int]] = []  # (index into acts, first verification row)
        if ver:
            vrows, vsig, vh, vsamples, vk = [], [], [], [], []
            for i in ver:
                kind, k = acts[i]
                b = active[i]
                local = [0] if k == 0 else ([0, k] if endpoints else list(range(k + 1)))
                records.append((i, len(vrows)))
                for j in local:
                    vrows.append(offs[i] + j)
                    vsig.append(sig_host[pos[b] + j])
                    vh.append(sig_host[pos[b] + j + 1] - sig_host[pos[b] + j])
                    vsamples.append(b)
                vk.append(k)
            vindex = torch.tensor(vrows, device=dev)
            yv = _gather(states, vrows, vindex)
            dv = _gather(drafted, vrows, vindex)
            sig_v = torch.tensor(vsig, device=dev, dtype=sdt)
            h_v = torch.tensor(vh, device=dev, dtype=sdt)
            t = models("target", yv, sig_v, conds.rows(vsamples))
            pstats = sdsv_kernels.pair_stats(t, dv, yv, h_v)
            x_next, acc = sdsv_kernels.accept_commit(
                pstats, yv, t, h_v, sig_v, torch.tensor(vk, device=dev), accept.metric, accept.tau, verify
            )
            acc_host = acc.tolist()  # the one host sync of the round
            pstats_host = pstats.cpu()
            if not torch.isfinite(pstats_host).all():
                _raise_non_finite(drafted, t, acts, offs, active, pos, sig_host, vrows, endpoints)
            values = sdsv_kernels.metric_values(pstats_host, h_v.cpu(), sig_v.cpu(), numel, accept.metric).tolist()
            _scatter(x, [active[i] for i in ver], x_next)
            for (i, first), a in zip(records, acc_host):
                kind, k = acts[i]
                b = active[i]
                if kind == "speculate":
                    n_rows = 2 if endpoints else k + 1
                    vals = values[first : first + n_rows]
                    if not endpoints:
                        vals[k] = float("nan")  # row k closes the window; it is not tested
                    stats.windows.append(WindowRecord(b, pos[b], k, int(a), vals))
                pos[b] += int(a) + 1
                bar.update(int(a) + 1)

        # ---- draft-only steps ----------------------------------------------------------------
        dsteps = [i for i, (kind, _) in enumerate(acts) if kind == "draft"]
        if dsteps:
            rows = [offs[i] for i in dsteps]
            h = torch.tensor([sig_host[pos[active[i]] + 1] - sig_host[pos[active[i]]] for i in dsteps],
                             device=dev, dtype=sdt)
            nxt = sdsv_kernels.rollout_step(_gather(states, rows), _gather(drafted, rows), h)
            if not torch.isfinite(nxt).all():
                _raise_non_finite(drafted, None, acts, offs, active, pos, sig_host, [], endpoints)
            _scatter(x, [active[i] for i in dsteps], nxt)
            for i in dsteps:
                pos[active[i]] += 1
            bar.update(len(dsteps))
        if stats.windows:
            bar.set_postfix(accept=f"{stats.acceptance_rate:.0%}", refresh=False)

    bar.close()
    if x.device.type == "cuda":
        torch.cuda.synchronize(x.device)
    stats.sampler_s = max(0.0, time.perf_counter() - t_start - stats.target_s - stats.draft_s)
    return SampleResult(latents=x, stats=stats)


def _raise_non_finite(drafted, t, acts, offs, active, pos, sig_host, vrows, endpoints) -> None:
    """Find the first model output that is NaN/inf and name it (called only on failure)."""
    max_level = max(k + 1 for _, k in acts)
    for j in range(max_level + 1):  # draft outputs in rollout order: the earliest culprit first
        for i, (kind, k) in enumerate(acts):
            wrote = (kind == "draft" and j == 0) or (kind == "speculate" and (j < k or (endpoints and j == k)))
            if wrote and not torch.isfinite(drafted[offs[i] + j]).all():
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
