"""Bounding the self-draft's tail: where the damage enters, which error estimates catch it, and the
two intents against both yardsticks (benchmarks/results/tail_study/README.md reads the results;
docs/tail.md describes the intents they chose).

Images: prompt ``i`` of ``sdsv.evaluation.runner.balanced_prompts``, seed ``start + i``; the
calibration set (where configurations are compared and chosen) starts at seed 21056, the report
set (where the chosen ones are reported) at 20000 — the seed sets of ``sdsv eval --experiment
tail``, disjoint from each other and from the 256-image tables. PSNR of the decoded 32x32 images
against the target's own 50-step Euler output (fidelity) and against DPM-Solver++(2M) with 200
steps (accuracy: the converged reference). Cost: target evaluations (states) per image.

    python benchmarks/tail_study.py --out benchmarks/results/tail_study            # every section
    python benchmarks/tail_study.py --sections candidates --images 48              # one, smaller

Sections: ``where`` (the calibration set's three worst images under error-controlled windows:
forecasting only before / only from step s), ``candidates`` (error estimates on the calibration
set), ``probe`` (does the in-window probe's error predict the closing error, by zone), ``gap`` (the same
for the forecast gap, an a-priori estimate that costs no block, and gap-limited windows),
``transfer`` (the same for EasyCache's transfer-rate bound on the deep blocks), ``depth`` (the
probe moved to each deep block, on its forecast input; as a window limit, and the step finished
from the probed block), ``partial`` (the last deep blocks computed at draft steps), ``variable`` (the forecast extrapolating in log-SNR, log sigma or sqrt
sigma instead of sigma), ``forecasts`` (the forecast's slope and curvature weights, ``NewtonForecast``),
``grain`` (each deep block's attention and MLP outputs forecast before their gates, as diffusers' TaylorSeer hook does),
``output`` (the model's output forecast instead of its deep residual, as TaylorSeer's lite mode does),
``phase`` (the faithful default's warm-up and first window: where its first forecasts fall),
``accurate`` (candidates for the accurate intent on the calibration set, both yardsticks),
``intents`` (the faithful and accurate defaults and the baselines on the report set, both yardsticks),
``forecast_report`` (the forecast chosen in ``forecasts`` against the line, on the report set),
``forecast_accurate`` (the accurate intent's windows with that forecast, calibration set, both yardsticks),
``forecast_video`` (the line and the damped forecast in the faithful windows on the tiny video model, ``--images`` clips),
``corrected`` (windows whose draft steps are redone with the deep residual interpolated through the
closing anchor, ``ErrorControlled(correct=True)``: window lengths and tolerances swept, calibration set),
``corrected_prediction`` (corrected windows predicted by the draft itself instead of the velocity forecast),
``corrected_accurate`` (the same on the accurate intent's windows, both yardsticks, calibration set),
``corrected_video`` (the chosen corrected windows on the tiny video model, ``--images`` clips),
``corrected_report`` (the corrected windows chosen in ``corrected`` beside the faithful default, report set),
``corrected_accurate_draft`` (the accurate intent's windows corrected and draft-predicted, on
DPM-Solver++(2M) and UniPC, both yardsticks, calibration set), ``corrected_accurate_unipc_report``
(the UniPC ones chosen there, report set),
``corrected_order``, ``corrected_order_report``, ``corrected_order_video`` (draft-predicted corrected windows
under the controller's exponent 1/3 instead of 1/2: calibration set, report set, video clips),
``corrected_cubic`` (the corrected windows interpolating with the cubic through four anchors),
``corrected_variants``, ``corrected_variants_report``, ``corrected_variants_video`` (one thing changed
at a time: the window error in x0 instead of the velocity, the interpolation's curvature, the
prediction's forecast; the x0 choice on the report set and the video clips), ``corrected_power``
(the window error times sigma ** 0.5 / 0.75, between the two), ``corrected_one_step`` (windows
allowed down to one draft step, both errors, the controller's order 1 and 2),
``interpolation_offline`` (how far each interpolation of the deep residual, and the forecast,
misses at a window's interior steps on the target's own trajectories: no sampling with it),
``corrected_hindsight``, ``corrected_hindsight_report`` (corrected windows redone once more, with
the centred cubic, when the next window has closed: calibration set, report set),
``faithful_candidates`` (the faithful candidates measured on the report set, on a calibration set
of ``--images`` images: run with 480), ``faithful_candidates_report`` (the one chosen there, report set),
``closing_shift`` (the corrected windows' closing state: the target evaluated again there, for every
window or where the correction moved it most, or the state extrapolated along the move),
``closing_shift_offline`` (how much of the deep residual's change there a linear map or a few
real blocks explain), ``corrected_sizing`` (windows sized by that move, Milne's device, or capped
by where they start), ``last_step``, ``last_step_report``, ``last_step_video`` (the faithful windows
with their last step the draft's alone: calibration set, 480 calibration images — run with
``--images 480`` —, the report set, the video clips), ``latency`` (wall-clock per image at batch 1, compiled models, on the report set's first 8 images). References
are cached in ``<out>/cache`` (git-ignored).

The in-window estimates (the probe: the first deep block computed for real at each draft step;
the forecast gap; the transfer rate; the probe at deeper blocks) end a window where they exceed a
limit: :class:`LimitedWindow`, run by the policy :class:`Limited` and fed by the draft
:class:`AprioriDraft`. They live here, not in the sampler: none of them paid (docs/tail.md).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import platform
import sys
import time
from pathlib import Path

import torch

import sdsv_kernels
from sdsv import ErrorControlled, FixedInterval, StagePlan
from sdsv.evaluation.runner import balanced_prompts
import sdsv.forecast.forecasts as forecasts_module
from sdsv.forecast.forecasts import INTERPOLATION, LINE, NewtonForecast, lagrange_coefficients
from sdsv.forecast.self_draft import SelfDraft
from sdsv.metrics import psnr, tail_summary
from sdsv.policies import PolicyState, WindowPolicy, next_window_length, shortened
from sdsv.policies.error_controlled import SHORT_WINDOWS, ErrorControlledState
from sdsv.tiny.pipeline import TinyPipeline
from sdsv.tiny.split import TinyDiTSplit
from sdsv.windows import UnverifiedWithError

REPORT_START, CALIBRATION_START = 20_000, 21_056
VIDEO_CALIBRATION_START = 5_000  # apart from the video report's (30000..) and the demos' (0..7)


class ImageSet:
    """Prompts and seeds of one set, its two references (cached), and per-image PSNR of a run."""

    def __init__(self, pipe: TinyPipeline, start: int, n: int, cache: Path, batch: int):
        prompts = balanced_prompts(start - REPORT_START + n)
        self.pipe, self.n, self.batch, self.start = pipe, n, batch, start
        self.prompts = prompts[start - REPORT_START:]
        self.seeds = [start + i for i in range(n)]
        self.cache = cache
        self.fidelity = self._reference("euler", 50)
        self.accuracy = None

    def _reference(self, solver: str, steps: int) -> torch.Tensor:
        path = self.cache / f"ref_{self.start}_{self.n}_{solver}_{steps}.pt"
        if path.exists():
            return torch.load(path)
        t = time.time()
        images, _ = self.run(StagePlan.target_only(steps), solver=solver)
        torch.save(images, path)
        print(f"  reference {solver} {steps} steps, seeds {self.start}..{self.start + self.n - 1}: "
              f"{time.time() - t:.0f} s", flush=True)
        return images

    def with_accuracy(self) -> "ImageSet":
        self.accuracy = self._reference("dpm++2m", 200)
        return self

    def run(self, policy: WindowPolicy, solver: str = "euler", idx=None, forecast=None):
        idx = list(range(self.n)) if idx is None else idx
        images, evals, stats = [], 0, []
        for i in range(0, len(idx), self.batch):
            part = idx[i:i + self.batch]
            # the study's rows forecast with the line unless a row names another forecast
            out = self.pipe([self.prompts[j] for j in part], policy=policy, draft="self", solver=solver,
                            seed=[self.seeds[j] for j in part], forecast=forecast or LINE)
            images.append(out.images)
            evals += out.stats.target_evals
            stats.append(out.stats)
        return torch.cat(images), (evals / len(idx), stats)

    def row(self, name: str, policy: WindowPolicy, solver: str = "euler", forecast=None) -> dict:
        t = time.time()
        images, (evals, _) = self.run(policy, solver, forecast=forecast)
        fid = psnr(images, self.fidelity)
        row = {"method": name, "policy": policy.describe(), "solver": solver, "target_evals": round(evals, 2),
               **({"forecast": repr(forecast)} if forecast else {}),
               "fidelity": {k: round(v, 2) for k, v in tail_summary(fid).items()},
               "worst_images": torch.argsort(fid)[:3].tolist(), "wall_s": round(time.time() - t, 1)}
        if self.accuracy is not None:
            row["accuracy"] = {k: round(v, 2) for k, v in tail_summary(psnr(images, self.accuracy)).items()}
        print("  " + line(row), flush=True)
        return row


#: the faithful default the corrected-window sections measured (corrected, draft-predicted, the
#: velocity error at tol 0.45, k <= 5, the last step the target's); the library's default since
#: sizes by the x0 error and drafts the last step (``last_step``)
PREVIOUS_FAITHFUL = dataclasses.replace(ErrorControlled.faithful(50), tol=0.45, error_metric="v_rms", draft_last=0)

def short_windows(num_steps: int) -> ErrorControlled:
    """The short uncorrected windows (one or two forecast steps, tol 0.2) the sections below
    measured as the accurate intent's before its windows were corrected (ErrorControlled.accurate
    now)."""
    return ErrorControlled(num_steps, warmup=min(2, num_steps), name="accurate", **SHORT_WINDOWS)


def line(row: dict) -> str:
    f = row["fidelity"]
    out = f"{row['method']:44s} {row['target_evals']:5.2f} evals | fid {f['mean']:.2f} / {f['p5']:.2f} / {f['p1']:.2f} / {f['worst']:.2f}"
    if "accuracy" in row:
        a = row["accuracy"]
        out += f" | acc {a['mean']:.2f} / {a['p5']:.2f} / {a['p1']:.2f} / {a['worst']:.2f}"
    return out


class Phased(WindowPolicy):
    """Error-controlled windows whose tolerance and longest window depend on the step
    (``phases``: ``[(until_step, tol, k_max), ...]``): sigma-dependent strictness."""

    name, closing_error, error_metric = "phased", True, "v_rms"

    def __init__(self, num_steps: int, phases, warmup: int = 2, k_init: int = 2, k_min: int = 2):
        self.num_steps, self.phases, self.warmup, self.k_init, self.k_min = num_steps, phases, warmup, k_init, k_min

    @property
    def verifies(self) -> bool:
        return False

    def phase(self, step: int):
        return next(((tol, k) for until, tol, k in self.phases if step < until), self.phases[-1][1:])

    def describe(self) -> str:
        return f"phased{self.phases}"

    def start(self, batch: int) -> PolicyState:
        return _PhasedState(self, batch)


class _PhasedState(PolicyState):
    def __init__(self, p: Phased, batch: int):
        self.p, self.k_next = p, [p.k_init] * batch

    def window(self, b, step):
        if step < self.p.warmup:
            return "target", 0
        return shortened("unverified", min(self.k_next[b], self.p.phase(step)[1]), step, self.p.num_steps)

    def observe(self, b, step, kind, k, accepted, error):
        if kind != "unverified":
            self.k_next[b] = max(self.k_next[b], self.p.k_min)
            return True
        tol, k_max = self.p.phase(step + k + 1)  # the next window's phase
        self.k_next[b] = next_window_length(k, error, tol, 1, self.p.k_min, k_max)
        return True


class Between(WindowPolicy):
    """``inner``'s windows only between steps ``first`` and ``stop``; target steps elsewhere."""

    def __init__(self, inner: ErrorControlled, first: int = 0, stop: int | None = None):
        self.inner, self.first = inner, first
        self.stop = inner.num_steps if stop is None else stop
        self.num_steps, self.name = inner.num_steps, "between"
        self.closing_error, self.error_metric = inner.closing_error, inner.error_metric

    @property
    def verifies(self) -> bool:
        return False

    def describe(self) -> str:
        return f"{self.inner.describe()} only in steps {self.first}..{self.stop}"

    def start(self, batch: int) -> PolicyState:
        inner, first, stop = self.inner.start(batch), self.first, self.stop

        class State(PolicyState):
            def window(self, b, step):
                if step < first or step >= stop:
                    return "target", 0
                kind, k = inner.window(b, step)
                return shortened(kind, k, step, stop) if kind != "target" else (kind, k)

            def observe(self, *args):
                return inner.observe(*args)

        return State()


class LimitedWindow(UnverifiedWithError):
    """An error-controlled (unverified) window that ends early where an in-window error estimate
    exceeds ``limit``: after the draft's call at each of the window's levels, :func:`report` hands
    it the estimate at its row (:meth:`after_draft`); above ``limit`` (or NaN) the window ends
    there, before that forecast is used, and the state becomes the window's closing target step.
    It works because the sampler reads a window's ``levels`` and ``rolls`` at every draft level
    (tests/test_tail_study.py checks that it still does)."""

    limit = math.inf

    def __init__(self, sample, start, k):
        super().__init__(sample, start, k)
        self.seen = 0  # draft levels reported so far
        _OPEN[sample] = self

    def after_draft(self, level: int, error: float) -> None:
        if level < self.k and not error <= self.limit:  # NaN ends the window too
            self.k = level
            self.levels, self.rolls, self.verify_rows = level + 1, level, (level,)


_OPEN: dict[int, LimitedWindow] = {}  # each sample's newest LimitedWindow (one sampling call at a time)


def report(bank, errors) -> None:
    """The draft call just made measured ``errors`` (one per model row): each sampler row's
    largest over its guidance branches (a forecast that misses on either branch misses the guided
    output) goes to that sample's window while it is still rolling out."""
    r = len(bank.tags)
    per_row = torch.as_tensor(errors).reshape(-1, r).amax(0).tolist()
    for b, e in zip(bank.tags, per_row):
        w = _OPEN.get(b)
        if w is not None and w.seen < w.levels:
            level, w.seen = w.seen, w.seen + 1
            w.after_draft(level, e)


class Limited(WindowPolicy):
    """``inner``'s error-controlled windows as :class:`LimitedWindow` s ending above ``limit``
    (what ``ErrorControlled(..., probe_tol=limit)`` was while the sampler had the probe)."""

    def __init__(self, inner: ErrorControlled, limit: float):
        self.inner, self.limit = inner, float(limit)
        self.num_steps, self.name = inner.num_steps, inner.name
        self.closing_error, self.error_metric = inner.closing_error, inner.error_metric

    @property
    def verifies(self) -> bool:
        return False

    def describe(self) -> str:
        return f"{self.inner.describe()[:-1]}, probe<={self.limit:g}]"

    def start(self, batch: int) -> PolicyState:
        inner = self.inner.start(batch)
        window = type(LimitedWindow.__name__, (LimitedWindow,), {"limit": self.limit})
        _OPEN.clear()

        class State(PolicyState):
            def window(self, b, step):
                kind, k = inner.window(b, step)
                return (window, k) if kind == "unverified" else (kind, k)

            def observe(self, *args):
                return inner.observe(*args)

        return State()


def limited(limit: float, num_steps: int = 50, **policy) -> Limited:
    """``ErrorControlled(num_steps, **policy)``'s windows ending where the estimate exceeds ``limit``."""
    return Limited(ErrorControlled(num_steps, **policy), limit)


def where(cal: ImageSet) -> dict:
    """The three worst calibration images under error-ctrl tol 0.3: forecasting only before / from step s."""
    base = ErrorControlled(50, tol=0.3)
    images, _ = cal.run(base)
    worst = torch.argsort(psnr(images, cal.fidelity))[:3].tolist()
    out = {"images": worst, "seeds": [cal.seeds[i] for i in worst], "prompts": [cal.prompts[i] for i in worst],
           "full": psnr(images[worst], cal.fidelity[worst]).tolist(), "only_before": {}, "only_from": {}}
    for s in range(5, 50, 5):
        for key, pol in (("only_before", Between(base, 0, s)), ("only_from", Between(base, s))):
            im, _ = cal.run(pol, idx=worst)
            out[key][s] = [round(v, 1) for v in psnr(im, cal.fidelity[worst]).tolist()]
        print(f"  step {s}: forecast only before {out['only_before'][s]}, only from {out['only_from'][s]}", flush=True)
    return out


CANDIDATES = [
    ("error-ctrl tol 0.3", lambda: ErrorControlled(50, tol=0.3)),
    ("error-ctrl tol 0.25", lambda: ErrorControlled(50, tol=0.25)),
    ("error-ctrl tol 0.2 (faithful)", lambda: ErrorControlled(50, tol=0.2, name="faithful")),
    ("error-ctrl tol 0.2, k_min 1", lambda: ErrorControlled(50, tol=0.2, k_min=1)),
    ("reject above 0.3 (tol 0.3)", lambda: ErrorControlled(50, tol=0.3, reject_above=0.3)),
    ("sigma: tol 0.2 to step 30, 0.3 after", lambda: Phased(50, [(30, 0.2, 4), (50, 0.3, 4)])),
    ("sigma: 0.3 / 0.15 in steps 10-30 / 0.3", lambda: Phased(50, [(10, 0.3, 4), (30, 0.15, 4), (50, 0.3, 4)])),
    ("sigma: 0.15 to step 30, 0.3 and k<=8 after", lambda: Phased(50, [(30, 0.15, 4), (50, 0.3, 8)])),
    ("probe 0.1, tol 0.3, k<=8", lambda: limited(0.1, tol=0.3, k_max=8)),
    ("probe 0.1, tol 0.3, k<=4", lambda: limited(0.1, tol=0.3)),
    ("probe 0.1, tol 0.2, k<=8", lambda: limited(0.1, tol=0.2, k_max=8)),
    ("probe 0.15, tol 0.3, k<=8", lambda: limited(0.15, tol=0.3, k_max=8)),
    ("warm-up 5 (tol 0.2)", lambda: ErrorControlled(50, tol=0.2, warmup=5)),
    ("warm-up 5, first window 1 step (tol 0.2)", lambda: ErrorControlled(50, tol=0.2, warmup=5, k_init=1, k_min=1)),
    ("warm-up 8 (tol 0.2)", lambda: ErrorControlled(50, tol=0.2, warmup=8)),
]


def candidates(cal: ImageSet) -> list[dict]:
    """Each candidate on the calibration set; a limited one with the probe (deep block 0)."""
    rows = []
    for name, make in CANDIDATES:
        policy = make()
        with _depth_probe(cal.pipe, 0) if isinstance(policy, Limited) else contextlib.nullcontext():
            rows.append(cal.row(name, policy))
    return rows


def closing_pairs(cal: ImageSet) -> list[tuple[int, float, float]]:
    """Per window of error-ctrl tol 0.3 whose in-window estimate never fires (24 calibration
    images, one call): ``(first step, the estimate at the closing state, the closing error)``.
    Windows whose estimate is 0 (none yet) are left out."""
    seen: dict[tuple, float] = {}
    original = LimitedWindow.after_draft

    def spy(self, level, error):
        seen[(self.sample, self.start, level)] = error
        return original(self, level, error)

    LimitedWindow.after_draft = spy
    try:
        idx = list(range(0, cal.n, 4))[:cal.batch]  # one call: window records name samples of that call
        _, (_, stats) = cal.run(limited(1e9, tol=0.3), idx=idx)
    finally:
        LimitedWindow.after_draft = original
    return [(w.start, seen[(w.sample, w.start, w.k)], w.metric[0]) for st in stats for w in st.windows
            if seen.get((w.sample, w.start, w.k), 0) > 0 and w.metric and math.isfinite(w.metric[0])]


def probe(cal: ImageSet) -> dict:
    """The probe's error (deep block 0 computed for real) at the closing state against the
    closing error there, Spearman's rank correlation by zone."""
    with _depth_probe(cal.pipe, 0):
        pairs = closing_pairs(cal)
    return {"windows": len(pairs), "zones": _zones(pairs)}


class InputKeepingSplit:
    """The tiny target's split that also keeps, beside each anchor's deep residual, the hidden
    state entering the deep blocks (the bank holds ``[residual, h_in]`` on the last dimension)
    and remembers the draft call's own ``h_in``: what an a-priori estimate reads. Uncompiled:
    these sections count evaluations and correlations, not milliseconds."""

    sdsv_pure = True

    def __init__(self, split: TinyDiTSplit):
        self.split, self.last_h = split, None

    def forward_with_residual(self, x, sigma, labels, guidance=None):
        s = self.split
        h_in, cond, mod = s._enter(x, sigma, labels, guidance)
        h = h_in
        for blk in s.deep:
            h = blk(h, mod)
        return s._leave(h, cond, mod), torch.cat([h - h_in, h_in], dim=-1)

    def forward_with_forecast(self, x, sigma, bank, index, coeffs, labels, guidance=None):
        s = self.split
        h, cond, mod = s._enter(x, sigma, labels, guidance)
        self.last_h = h
        width = h.shape[-1]
        return s._leave(sdsv_kernels.gather_combine(h, bank[..., :width].contiguous(), index, coeffs), cond, mod)


class AprioriDraft(SelfDraft):
    """The self-draft with an in-window error estimate: after every draft call,
    ``estimate(bank, model_rows, split)`` per model row (0 = no estimate yet) goes to the
    windows (:func:`report`), so that a :class:`LimitedWindow` ends where it exceeds its limit.
    ``split``: an :class:`InputKeepingSplit` (or one that keeps more)."""

    def __init__(self, split: InputKeepingSplit, estimate):
        super().__init__(split, order=1, slots=3)
        self.estimate = estimate

    def target(self, x, sigma, **cond):
        bank = self._bank("target")
        v, kept = self.model.forward_with_residual(x, sigma, **cond)
        bank.record(kept)
        return v

    def draft(self, x, sigma, **cond):
        bank = self._bank("draft")
        store, index, coeffs = bank.forecast_args(x.shape[0], x.device)
        v = self.model.forward_with_forecast(x, sigma, store, index, coeffs, **cond)
        report(bank, self.estimate(bank, x.shape[0], self.model))
        return v


class DepthProbeSplit(InputKeepingSplit):
    """The probe moved to deep block ``j``, still at the cost of one block: the bank keeps, beside
    the deep residual, every block's partial residual ``P_i = h_i - h_in`` (``h_i`` after ``i``
    deep blocks); at a draft step block ``j`` runs for real on its *forecast* input
    ``h_in + forecast(P_j)`` and is compared with the forecast of its output,
    ``rms(block_j(h_j^) - h_(j+1)^) / rms(h_(j+1)^ - h_j^)``. ``j = 0`` is the in-window probe
    (the first deep block, on its exact input). With ``finish``, the draft's output is finished
    from the probed block's real output (the blocks after it forecast as a residual from there)
    instead of from the whole forecast: the probe corrects the step rather than only measuring it;
    with ``finish="rest"`` every block from ``j`` on runs for real (no probe error reported)."""

    def __init__(self, split: TinyDiTSplit, depth: int, finish: bool | str = False):
        super().__init__(split)
        if not 0 <= depth < len(split.deep):
            raise ValueError(f"depth must be in 0..{len(split.deep) - 1}, got {depth}")
        self.depth, self.finish, self.last_probe = depth, finish, None

    def forward_with_residual(self, x, sigma, labels, guidance=None):
        s = self.split
        h_in, cond, mod = s._enter(x, sigma, labels, guidance)
        h, partial = h_in, []
        for blk in s.deep:
            h = blk(h, mod)
            partial.append(h - h_in)
        # [deep residual, P_1 .. P_(n-1)]: the deep residual first, where the forecast reads it
        return s._leave(h, cond, mod), torch.cat([partial[-1]] + partial[:-1], dim=-1)

    def forward_with_forecast(self, x, sigma, bank, index, coeffs, labels, guidance=None):
        s = self.split
        h, cond, mod = s._enter(x, sigma, labels, guidance)
        self.last_h, width, n = h, h.shape[-1], len(s.deep)
        # the coefficient-weighted anchors of every kept part: [rows, *, n * width]
        anchors = (coeffs[:, 1:].reshape(*coeffs.shape[:1], -1, *([1] * (bank.dim() - 1))) * bank[index]).sum(1)

        def forecast(i):  # h_i^ = h_in + forecast(P_i); P_0 = 0, P_n = the deep residual (first part)
            if i == 0:
                return h
            part = 0 if i == n else i
            return h + anchors[..., part * width:(part + 1) * width]

        j = self.depth
        if self.finish == "rest":  # every block from j on computed for real, on the forecast input
            g = forecast(j)
            for blk in s.deep[j:]:
                g = blk(g, mod)
            self.last_probe = torch.zeros(h.shape[0])
            return s._leave(g, cond, mod)
        real = s.deep[j](forecast(j), mod)
        err = (real - forecast(j + 1)).flatten(1).pow(2).mean(1)
        ref = (forecast(j + 1) - forecast(j)).flatten(1).pow(2).mean(1)
        self.last_probe = (err / ref.clamp_min(1e-30)).sqrt()
        if self.finish:
            return s._leave(real + forecast(n) - forecast(j + 1), cond, mod)
        return s._leave(h + anchors[..., :width], cond, mod)


def _anchors(bank, model_rows: int, n: int):
    """Per model row: its sigma and its key's newest ``n`` anchors as ``(sigma, bank row)``, or
    None while it has fewer."""
    samples, sigmas, _ = bank.rows_of(model_rows)
    r = len(bank.tags)
    for m, (b, s) in enumerate(zip(samples, sigmas)):
        ring = bank.anchors.get((b, m // r), [])
        yield s, ([(a, bank.bank[slot].double()) for slot, a in ring[-n:]] if len(ring) >= n else None)


def _rms(t: torch.Tensor) -> torch.Tensor:
    return t.pow(2).mean().sqrt()


def forecast_gaps(bank, model_rows: int, split: InputKeepingSplit) -> list[float]:
    """Per row: the gap between the order-1 forecast of the deep residual at the row's sigma
    (what the draft uses) and the order-2 forecast through one more anchor,
    ``rms(gap) / rms(order-1 forecast)``."""
    width, out = split.last_h.shape[-1], []
    for s, use in _anchors(bank, model_rows, 3):
        if use is None:
            out.append(0.0)
            continue
        second = lagrange_coefficients([a for a, _ in use], s)
        first = [0.0] + lagrange_coefficients([a for a, _ in use[1:]], s)
        rows = [row[..., :width] for _, row in use]
        gap = sum((hi - lo) * row for hi, lo, row in zip(second, first, rows))
        forecast = sum(lo * row for lo, row in zip(first, rows))
        out.append(float(_rms(gap) / _rms(forecast)))
    return out


def transfer_rates(bank, model_rows: int, split: InputKeepingSplit) -> list[float]:
    """EasyCache's transfer-rate bound on the deep blocks: ``k = rms(dR) / rms(dh)`` between the
    last two anchors (how much the deep residual moved per unit of its input's move), times the
    input's move since the last anchor, relative to that anchor's residual:
    ``k * rms(h - h_a) / rms(R_a)``, ``h`` the draft call's own deep-block input."""
    h = split.last_h
    width, out = h.shape[-1], []
    for m, (_, use) in enumerate(_anchors(bank, model_rows, 2)):
        if use is None:
            out.append(0.0)
            continue
        (_, older), (_, newest) = use
        r_b, h_b, r_a, h_a = older[..., :width], older[..., width:], newest[..., :width], newest[..., width:]
        k = _rms(r_a - r_b) / _rms(h_a - h_b).clamp_min(1e-30)
        out.append(float(k * _rms(h[m].double() - h_a) / _rms(r_a).clamp_min(1e-30)))
    return out


@contextlib.contextmanager
def apriori_drafts(pipe: TinyPipeline, estimate, split=InputKeepingSplit):
    """Inside: the pipeline's self-draft (its split wrapped in ``split``) reports ``estimate`` as
    its probe error."""
    pipe.self_draft = lambda **_: AprioriDraft(split(TinyDiTSplit(pipe.target)), estimate)
    try:
        yield
    finally:
        del pipe.self_draft


GAP_CANDIDATES = [
    ("gap 0.1, tol 0.3, k<=8", lambda: limited(0.1, tol=0.3, k_max=8)),
    ("gap 0.2, tol 0.3, k<=8", lambda: limited(0.2, tol=0.3, k_max=8)),
    ("gap 0.3, tol 0.3, k<=8", lambda: limited(0.3, tol=0.3, k_max=8)),
    ("gap 0.15, tol 0.3, k<=4", lambda: limited(0.15, tol=0.3)),
    ("gap 0.2, tol 0.2, k<=8", lambda: limited(0.2, tol=0.2, k_max=8)),
    ("gap 0.15, tol 0.2, k<=4", lambda: limited(0.15, tol=0.2)),
    ("gap 0.1, tol 0.25, k<=4", lambda: limited(0.1, tol=0.25)),
]


def gap(cal: ImageSet) -> dict:
    """The forecast gap (a-priori, free): does it predict the closing error by zone, and the
    gap-limited windows on the calibration set."""
    return _apriori(cal, forecast_gaps, GAP_CANDIDATES)


# the transfer rate estimates how far the residual moved since the anchor (not the forecast's
# miss), so its limits sit higher than the gap's: around its median at the closing states
TRANSFER_CANDIDATES = [
    ("transfer 0.15, tol 0.3, k<=8", lambda: limited(0.15, tol=0.3, k_max=8)),
    ("transfer 0.2, tol 0.3, k<=8", lambda: limited(0.2, tol=0.3, k_max=8)),
    ("transfer 0.3, tol 0.3, k<=8", lambda: limited(0.3, tol=0.3, k_max=8)),
    ("transfer 0.5, tol 0.3, k<=8", lambda: limited(0.5, tol=0.3, k_max=8)),
    ("transfer 0.2, tol 0.2, k<=8", lambda: limited(0.2, tol=0.2, k_max=8)),
    ("transfer 0.3, tol 0.2, k<=8", lambda: limited(0.3, tol=0.2, k_max=8)),
]


def transfer(cal: ImageSet) -> dict:
    """EasyCache's transfer-rate bound (a-priori, free), the same two measurements."""
    return _apriori(cal, transfer_rates, TRANSFER_CANDIDATES)


# (deep block, probe limit, tol, k_max)
DEPTH_CANDIDATES = [(4, 0.1, 0.3, 8), (4, 0.15, 0.3, 8), (4, 0.2, 0.3, 8), (4, 0.15, 0.2, 8), (4, 0.1, 0.2, 8),
                    (7, 0.1, 0.3, 8), (7, 0.07, 0.3, 8), (6, 0.1, 0.3, 8)]
# (deep block, tol, k_max): the step finished from the probed block's real output, no limit
FINISH_CANDIDATES = [(0, 0.3, 4), (4, 0.3, 4), (7, 0.3, 4), (0, 0.3, 8), (7, 0.3, 8)]


def depth(cal: ImageSet) -> dict:
    """The probe at each deep block (on its forecast input, one block each): does its error
    predict the closing error, by zone; then the best depths' probes as window limits."""
    out = {"by_block": {}, "candidates": []}
    for j in range(len(TinyDiTSplit(cal.pipe.target).deep)):
        print(f"  probe at deep block {j}", flush=True)
        with _depth_probe(cal.pipe, j):
            pairs = closing_pairs(cal)
        out["by_block"][j] = {"windows": len(pairs), "zones": _zones(pairs)}
    for j, limit, tol, k_max in DEPTH_CANDIDATES:
        with _depth_probe(cal.pipe, j):
            out["candidates"].append(cal.row(f"block {j} probe {limit:g}, tol {tol:g}, k<={k_max}",
                                             limited(limit, tol=tol, k_max=k_max)))
    for j, tol, k_max in FINISH_CANDIDATES:
        with _depth_probe(cal.pipe, j, finish=True):
            out["candidates"].append(cal.row(f"finished from block {j}, tol {tol:g}, k<={k_max}",
                                             ErrorControlled(50, tol=tol, k_max=k_max)))
    return out


def partial(cal: ImageSet) -> list[dict]:
    """The draft with its last deep blocks computed for real, on their forecast input: does
    computing more of the model at draft steps shrink the misses?"""
    rows = []
    for j in (4, 6):
        with _depth_probe(cal.pipe, j, finish="rest"):
            rows += [cal.row(f"blocks {j}-7 computed at draft steps, tol {tol:g}", ErrorControlled(50, tol=tol))
                     for tol in (0.2, 0.3)]
    return rows


def _depth_probe(pipe: TinyPipeline, j: int, finish: bool | str = False):
    return apriori_drafts(pipe, lambda bank, rows, split: split.last_probe,
                          split=lambda sp: DepthProbeSplit(sp, j, finish))


# the variable the self-draft's forecast extrapolates in: sigma (what it uses; the tiny
# pipeline's schedule is linear in it), or three monotone maps of it
FORECAST_VARIABLES = {
    "sigma": lambda s: s,
    "log-SNR": lambda s: math.log(max(1 - s, 1e-6) / max(s, 1e-6)),
    "log sigma": lambda s: math.log(max(s, 1e-6)),
    "sqrt sigma": lambda s: math.sqrt(max(s, 0.0)),
}


@contextlib.contextmanager
def forecast_in(f, scale: float = 1.0):
    """Inside: the anchors' forecast coefficients are computed at ``f(sigma)``, not ``sigma``,
    and the extrapolation beyond the newest anchor is scaled by ``scale`` (< 1 damps it toward
    reusing that anchor, > 1 overshoots)."""
    original = forecasts_module.lagrange_coefficients

    def coefficients(sigmas, at):
        c = original([f(x) for x in sigmas], f(at))
        reuse = [0.0] * (len(c) - 1) + [1.0]
        return [scale * x + (1 - scale) * r for x, r in zip(c, reuse)]

    forecasts_module.lagrange_coefficients = coefficients
    try:
        yield
    finally:
        forecasts_module.lagrange_coefficients = original


def variable(cal: ImageSet) -> list[dict]:
    """The faithful windows (tol 0.2, 0.3) with the forecast extrapolating in each variable, then
    in sigma with its extrapolation damped or overshot."""
    rows = []
    shapes = [(f"forecast in {name}", f, 1.0) for name, f in FORECAST_VARIABLES.items()]
    shapes += [(f"forecast in sigma, extrapolation x{a:g}", FORECAST_VARIABLES["sigma"], a) for a in (0.6, 0.8, 1.2)]
    for label, f, scale in shapes:
        with forecast_in(f, scale):
            rows += [cal.row(f"{label}, tol {tol:g}", ErrorControlled(50, tol=tol)) for tol in (0.2, 0.3)]
    return rows


FORECASTS = [  # (slope, curvature) of sdsv.forecast.NewtonForecast; (1, 0) is the line
    (1.0, 0.0), (0.85, 0.3), (0.95, 0.3), (1.0, 0.3), (0.95, 0.45),
]


def forecasts(cal: ImageSet) -> list[dict]:
    """The self-draft's forecast in Newton form (damped slope, a fraction of the curvature) inside
    the faithful windows, tolerance swept, and with longer windows allowed (``k_max`` 6)."""
    rows = []
    for slope, curvature in FORECASTS:
        f = NewtonForecast(slope, curvature)
        for tol in (0.2, 0.3, 0.4):
            rows.append(cal.row(f"slope {slope:g}, curvature {curvature:g}, tol {tol:g}", ErrorControlled(50, tol=tol),
                                forecast=f))
        for tol in (0.3, 0.4):
            rows.append(cal.row(f"slope {slope:g}, curvature {curvature:g}, tol {tol:g}, k<=6",
                                ErrorControlled(50, tol=tol, k_max=6), forecast=f))
    return rows


class GatedOutputsSplit:
    """The self-draft at diffusers' TaylorSeer grain: what a target call records is every deep
    block's attention and MLP output before its gate (``[rows, blocks, 2, tokens, dim]``, not one
    residual); a draft forecasts each of them from its anchors (the same coefficients) and adds
    them to its hidden state through the gates of its own sigma (the gates are cheap: computed
    exactly). The bank holds 2 x blocks times the memory of the whole residual's."""

    sdsv_pure = True

    def __init__(self, split: TinyDiTSplit):
        self.split = split

    @staticmethod
    def _block(blk, x, mod):
        """``Block.forward``'s operations in its order, keeping the two outputs before their gates."""
        b, n, d = x.shape
        sh1, sc1, g1, sh2, sc2, g2 = (mod + blk.mod_bias).unbind(1)
        h = torch.nn.functional.layer_norm(x, (d,)) * (1 + sc1[:, None]) + sh1[:, None]
        q, k, v = blk.qkv(h).view(b, n, 3, blk.heads, d // blk.heads).permute(2, 0, 3, 1, 4)
        a = blk.proj(torch.nn.functional.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, d))
        x = x + g1[:, None] * a
        h = torch.nn.functional.layer_norm(x, (d,)) * (1 + sc2[:, None]) + sh2[:, None]
        m = blk.fc2(torch.nn.functional.gelu(blk.fc1(h), approximate="tanh"))
        return x + g2[:, None] * m, torch.stack([a, m], 1)

    def forward_with_residual(self, x, sigma, labels, guidance=None):
        s = self.split
        h, cond, mod = s._enter(x, sigma, labels, guidance)
        outs = []
        for blk in s.deep:
            h, o = self._block(blk, h, mod)
            outs.append(o)
        return s._leave(h, cond, mod), torch.stack(outs, 1)

    def forward_with_forecast(self, x, sigma, bank, index, coeffs, labels, guidance=None):
        s = self.split
        h, cond, mod = s._enter(x, sigma, labels, guidance)
        outs = sdsv_kernels.gather_combine(bank.new_zeros((h.shape[0], *bank.shape[1:])), bank, index, coeffs)
        gates = torch.stack([(mod + blk.mod_bias)[:, (2, 5)] for blk in s.deep], 1)  # [rows, blocks, 2, dim]
        return s._leave(h + (gates[:, :, :, None, :] * outs).sum((1, 2)), cond, mod)


@contextlib.contextmanager
def split_as(pipe: TinyPipeline, wrap):
    """Inside: the pipeline's self-draft runs on ``wrap(TinyDiTSplit(target))``."""
    pipe.self_draft = lambda order=None, forecast=None: SelfDraft(wrap(TinyDiTSplit(pipe.target)),
                                                                  order=order, forecast=forecast)
    try:
        yield
    finally:
        del pipe.self_draft


def grain(cal: ImageSet) -> list[dict]:
    """The faithful windows with the forecast of each block's outputs before their gates (the
    gates exact) beside the same forecast of the whole deep residual, tolerance swept."""
    rows = []
    damped = NewtonForecast(0.95, 0.3)
    for label, f in (("line", LINE), ("slope 0.95, curvature 0.3", damped)):
        with split_as(cal.pipe, GatedOutputsSplit):
            rows += [cal.row(f"{label}, per block output (gates exact), tol {tol:g}", ErrorControlled(50, tol=tol),
                             forecast=f) for tol in (0.2, 0.3, 0.4)]
    return rows


class OutputSplit:
    """The self-draft forecasting the model's output instead of its deep residual (diffusers'
    TaylorSeer in lite mode forecasts the transformer's ``proj_out`` output): a target call records
    the velocity of every row (each guidance branch's own); a draft runs nothing of the model and
    returns the forecast velocity at its sigma."""

    sdsv_pure = True

    def __init__(self, split: TinyDiTSplit):
        self.split = split

    def forward_with_residual(self, x, sigma, labels, guidance=None):
        v, _ = self.split.forward_with_residual(x, sigma, labels, guidance)
        return v, v

    def forward_with_forecast(self, x, sigma, bank, index, coeffs, labels, guidance=None):
        return sdsv_kernels.gather_combine(bank.new_zeros((x.shape[0], *bank.shape[1:])), bank, index, coeffs)


def output(cal: ImageSet) -> list[dict]:
    """The faithful windows forecasting the model's output (its velocity) rather than the deep
    residual, tolerance swept, and with longer windows allowed (``k_max`` 6)."""
    rows = []
    damped = NewtonForecast(0.95, 0.3)
    for label, f in (("line", LINE), ("slope 0.95, curvature 0.3", damped)):
        with split_as(cal.pipe, OutputSplit):
            rows += [cal.row(f"{label}, the output forecast, tol {tol:g}", ErrorControlled(50, tol=tol), forecast=f)
                     for tol in (0.2, 0.3, 0.4)]
    with split_as(cal.pipe, OutputSplit):
        rows += [cal.row(f"slope 0.95, curvature 0.3, the output forecast, tol {tol:g}, k<=6",
                         ErrorControlled(50, tol=tol, k_max=6), forecast=damped) for tol in (0.3, 0.4)]
    return rows


def phase(cal: ImageSet) -> list[dict]:
    """Where the first forecasts fall after the warm-up (the fixed caches gained 2-4 dB on the tiny
    Flux from forecasting one step, not two, right after it: docs/peers.md): the faithful default
    with a longer warm-up, with a first window of one forecast step, and with both."""
    damped = NewtonForecast(0.95, 0.3)
    return [cal.row(f"faithful default, {label}", ErrorControlled(50, tol=0.3, **kw), forecast=damped)
            for label, kw in (("warm-up 3", dict(warmup=3)), ("first window 1 step", dict(k_init=1, k_min=1)),
                              ("warm-up 3, first window 1 step", dict(warmup=3, k_init=1, k_min=1)),
                              ("windows down to 1 step", dict(k_min=1)))]


def forecast_accurate(cal: ImageSet) -> list[dict]:
    """The accurate intent's windows (one or two forecast steps on DPM-Solver++(2M)) with the line
    and with the damped forecast, at fewer steps; UniPC alone at 12 and 15 steps beside them;
    calibration set, both yardsticks."""
    cal.with_accuracy()
    damped = NewtonForecast(0.95, 0.3)
    rows = [cal.row("unipc 12 (target only)", StagePlan.target_only(12), "unipc"),
            cal.row("unipc 15 (target only)", StagePlan.target_only(15), "unipc"),
            cal.row("accurate, dpm++2m 28, line (the default)", short_windows(28), "dpm++2m")]
    for steps in (28, 25, 22):
        rows.append(cal.row(f"accurate, dpm++2m {steps}, slope 0.95, curvature 0.3", short_windows(steps),
                            "dpm++2m", forecast=damped))
    return rows


def forecast_report(rep: ImageSet) -> list[dict]:
    """The forecast chosen on the calibration set (slope 0.95, curvature 0.3, at tol 0.3 and 0.2)
    against the line at the faithful tolerance, on the report set (both yardsticks when the
    converged reference is cached)."""
    chosen = NewtonForecast(0.95, 0.3)
    return [rep.row("line, tol 0.2 (the faithful default)", ErrorControlled(50, tol=0.2)),
            rep.row("slope 0.95, curvature 0.3, tol 0.3", ErrorControlled(50, tol=0.3), forecast=chosen),
            rep.row("slope 0.95, curvature 0.3, tol 0.2", ErrorControlled(50, tol=0.2), forecast=chosen),
            rep.row("slope 0.95, curvature 0.3, tol 0.3, k<=6", ErrorControlled(50, tol=0.3, k_max=6), forecast=chosen)]


#: (k_max, tol) of the velocity-predicted corrected windows chosen in ``corrected`` (docs/tail.md,
#: "Corrected windows")
CORRECTED_CHOICE = (5, 0.45)


def VELOCITY(num_steps: int = 50, **kw) -> ErrorControlled:
    """Corrected windows predicted by the velocity forecast (the variant the ``corrected`` sections chose)."""
    return ErrorControlled(num_steps, correct=True, predict="velocity", **kw)


def corrected(cal: ImageSet) -> list[dict]:
    """The faithful windows (the damped forecast) corrected once kept (velocity-predicted), window
    length and tolerance swept, beside the same windows uncorrected."""
    damped = NewtonForecast(0.95, 0.3)
    rows = [cal.row(f"damped, tol {tol:g}, k<={k}", ErrorControlled(50, tol=tol, k_max=k), forecast=damped)
            for k, tol in ((4, 0.3), (6, 0.3), (6, 0.33))]
    for k, tols in ((4, (0.3, 0.4)), (5, (0.35, 0.4, 0.45)), (6, (0.25, 0.3, 0.32, 0.35)), (8, (0.25, 0.3))):
        rows += [cal.row(f"damped, tol {tol:g}, k<={k}, corrected, velocity-predicted", VELOCITY(tol=tol, k_max=k),
                         forecast=damped) for tol in tols]
    return rows


def corrected_prediction(cal: ImageSet) -> list[dict]:
    """Corrected windows predicted by the draft itself and by the velocity forecast, in the windows
    chosen in ``corrected`` and in the faithful default's, calibration set."""
    damped = NewtonForecast(0.95, 0.3)
    k, tol = CORRECTED_CHOICE
    return [cal.row(f"damped, tol {t:g}, k<={kk}, corrected, {p}-predicted",
                    ErrorControlled(50, tol=t, k_max=kk, correct=True, predict=p), forecast=damped)
            for kk, t in ((k, tol), (4, 0.3)) for p in ("velocity", "draft")]


def corrected_accurate(cal: ImageSet) -> list[dict]:
    """The accurate intent's windows (DPM-Solver++(2M), one or two forecast steps) corrected, at
    fewer steps; UniPC alone at 12 steps beside them; calibration set, both yardsticks."""
    cal.with_accuracy()
    rows = [cal.row("unipc 12 (target only)", StagePlan.target_only(12), "unipc"),
            cal.row("accurate, dpm++2m 28, line (the default)", short_windows(28), "dpm++2m")]
    for steps in (28, 25, 22):
        rows.append(cal.row(f"accurate, dpm++2m {steps}, line, corrected, velocity-predicted",
                            dataclasses.replace(short_windows(steps), correct=True, predict="velocity"), "dpm++2m"))
    return rows


def corrected_accurate_draft(cal: ImageSet) -> list[dict]:
    """The accurate intent's windows corrected and predicted by the draft (as the faithful default's
    are), on DPM-Solver++(2M) and on UniPC; UniPC alone at 12 steps beside them; calibration set,
    both yardsticks."""
    cal.with_accuracy()

    def corrected(steps: int) -> ErrorControlled:
        return dataclasses.replace(short_windows(steps), correct=True)

    return [cal.row("unipc 12 (target only)", StagePlan.target_only(12), "unipc"),
            cal.row("accurate, dpm++2m 28, line (the default)", short_windows(28), "dpm++2m"),
            cal.row("accurate, dpm++2m 28, line, corrected, draft-predicted", corrected(28), "dpm++2m"),
            cal.row("accurate, dpm++2m 25, line, corrected, draft-predicted", corrected(25), "dpm++2m"),
            cal.row("accurate windows, unipc 22, line", short_windows(22), "unipc"),
            cal.row("accurate windows, unipc 22, line, corrected, draft-predicted", corrected(22), "unipc"),
            cal.row("accurate windows, unipc 24, line, corrected, draft-predicted", corrected(24), "unipc"),
            cal.row("accurate windows, unipc 25, line, corrected, draft-predicted", corrected(25), "unipc"),
            cal.row("accurate windows, unipc 26, line", short_windows(26), "unipc"),
            cal.row("accurate windows, unipc 26, line, corrected, draft-predicted", corrected(26), "unipc"),
            cal.row("accurate windows, unipc 27, line, corrected, draft-predicted", corrected(27), "unipc"),
            cal.row("accurate windows, unipc 28, line, corrected, draft-predicted", corrected(28), "unipc"),
            *[cal.row(f"accurate windows, unipc 26, tol {tol:g}, k<={k}, line, corrected, draft-predicted",
                      dataclasses.replace(corrected(26), tol=tol, k_max=k), "unipc")
              for k, tol in ((2, 0.25), (2, 0.3), (3, 0.25))]]


#: (steps, tol) of the accurate windows on UniPC, corrected, chosen in ``corrected_accurate_draft``
#: (at most 12.4 calls per image, the highest accuracy 5th percentile)
ACCURATE_UNIPC_CHOICE = (26, 0.25)


def corrected_accurate_unipc_report(rep: ImageSet) -> list[dict]:
    """The corrected accurate windows on UniPC chosen in ``corrected_accurate_draft`` beside the
    accurate default and UniPC alone at 12 steps, report set, both yardsticks."""
    rep.with_accuracy()
    steps, tol = ACCURATE_UNIPC_CHOICE
    chosen = dataclasses.replace(short_windows(steps), correct=True, tol=tol)
    return [rep.row("unipc 12 (target only)", StagePlan.target_only(12), "unipc"),
            rep.row("accurate, dpm++2m 28, line (the default)", short_windows(28), "dpm++2m"),
            rep.row(f"accurate windows, unipc {steps}, tol {tol:g}, line",
                    dataclasses.replace(short_windows(steps), tol=tol), "unipc"),
            rep.row(f"accurate windows, unipc {steps}, tol {tol:g}, line, corrected, draft-predicted", chosen, "unipc")]


def corrected_report(rep: ImageSet) -> list[dict]:
    """The corrected windows chosen on the calibration set (``CORRECTED_CHOICE``, either prediction)
    and the faithful default's windows corrected, beside the faithful default and the damped
    forecast in the chosen windows uncorrected, on the report set."""
    damped = NewtonForecast(0.95, 0.3)
    k, tol = CORRECTED_CHOICE
    return [rep.row("damped, tol 0.3, k<=4 (the faithful default)", ErrorControlled(50, tol=0.3), forecast=damped),
            rep.row(f"damped, tol {tol:g}, k<={k}", ErrorControlled(50, tol=tol, k_max=k), forecast=damped),
            rep.row("damped, tol 0.3, k<=4, corrected, velocity-predicted", VELOCITY(tol=0.3), forecast=damped),
            rep.row(f"damped, tol {tol:g}, k<={k}, corrected, velocity-predicted", VELOCITY(tol=tol, k_max=k),
                    forecast=damped),
            rep.row(f"damped, tol {tol:g}, k<={k}, corrected, draft-predicted",
                    ErrorControlled(50, tol=tol, k_max=k, correct=True), forecast=damped)]


def forecast_video(clips: int, batch: int, cache: Path) -> dict:
    """The faithful windows with the line and the damped forecast at tolerance 0.2 and 0.3 on the
    tiny video model (its own UniPC, 50 steps), on clips of seeds the video report does not use:
    does what was chosen on images hold on another model?"""
    return video_rows(clips, batch, cache, [(f"{name}, tol {tol:g}", ErrorControlled(50, tol=tol), forecast)
                                            for name, forecast in (("line", LINE), ("damped (0.95, 0.3)", DAMPED_))
                                            for tol in (0.2, 0.3)])


def corrected_video(clips: int, batch: int, cache: Path) -> dict:
    """The corrected windows chosen on images (``CORRECTED_CHOICE``) and the faithful default's
    windows corrected, beside the faithful default, on the clips of ``forecast_video``."""
    k, tol = CORRECTED_CHOICE
    return video_rows(clips, batch, cache, [
        ("damped, tol 0.3, k<=4 (the faithful default)", ErrorControlled(50, tol=0.3), DAMPED_),
        ("damped, tol 0.3, k<=4, corrected, velocity-predicted", VELOCITY(tol=0.3), DAMPED_),
        (f"damped, tol {tol:g}, k<={k}", ErrorControlled(50, tol=tol, k_max=k), DAMPED_),
        (f"damped, tol {tol:g}, k<={k}, corrected, velocity-predicted", VELOCITY(tol=tol, k_max=k), DAMPED_),
        (f"damped, tol {tol:g}, k<={k}, corrected, draft-predicted", ErrorControlled(50, tol=tol, k_max=k, correct=True),
         DAMPED_)])


DAMPED_ = NewtonForecast(0.95, 0.3)


#: (order, k_max, tol) of the draft-predicted corrected windows chosen in ``corrected_order``
CORRECTED_ORDER_CHOICE = (2, 5, 0.5)


def corrected_order(cal: ImageSet) -> list[dict]:
    """Draft-predicted corrected windows with the controller's exponent 1/3 (``order=2``: a corrected
    window's error is the parabola's interpolation error, third order in its length) and 1/4,
    tolerance and window length swept, beside the exponent 1/2 of the windows chosen in ``corrected``;
    the first window of one step (``k_min = k_init = 1``); calibration set."""
    rows = []
    for order, k, tol, extra in ((1, 5, 0.45, {}), (1, 6, 0.45, {}), (2, 4, 0.5, {}), (2, 5, 0.45, {}), (2, 5, 0.47, {}),
                                 (2, 5, 0.5, {}), (2, 5, 0.55, {}), (2, 6, 0.45, {}), (2, 6, 0.5, {}), (2, 7, 0.5, {}),
                                 (3, 5, 0.6, {}), (3, 6, 0.6, {}), (2, 5, 0.7, dict(k_min=1, k_init=1)),
                                 (2, 5, 0.8, dict(k_min=1, k_init=1)), (2, 5, 0.5, dict(warmup=3))):
        name = f"damped, order {order}, tol {tol:g}, k<={k}" + "".join(f", {a} {b}" for a, b in extra.items())
        rows.append(cal.row(name + ", corrected, draft-predicted",
                            ErrorControlled(50, tol=tol, k_max=k, order=order, correct=True, **extra), forecast=DAMPED_))
    return rows


def corrected_order_report(rep: ImageSet) -> list[dict]:
    """The windows chosen in ``corrected_order`` beside the ones chosen in ``corrected``, report set."""
    order, k, tol = CORRECTED_ORDER_CHOICE
    k1, tol1 = CORRECTED_CHOICE
    return [rep.row(f"damped, order 1, tol {tol1:g}, k<={k1}, corrected, draft-predicted",
                    ErrorControlled(50, tol=tol1, k_max=k1, correct=True), forecast=DAMPED_),
            rep.row(f"damped, order {order}, tol {tol:g}, k<={k}, corrected, draft-predicted",
                    ErrorControlled(50, tol=tol, k_max=k, order=order, correct=True), forecast=DAMPED_)]


def corrected_order_video(clips: int, batch: int, cache: Path) -> dict:
    """The windows chosen in ``corrected_order`` and in ``corrected`` (draft-predicted) on the clips
    of ``forecast_video``."""
    order, k, tol = CORRECTED_ORDER_CHOICE
    k1, tol1 = CORRECTED_CHOICE
    return video_rows(clips, batch, cache, [
        (f"damped, order 1, tol {tol1:g}, k<={k1}, corrected, draft-predicted",
         ErrorControlled(50, tol=tol1, k_max=k1, correct=True), DAMPED_),
        (f"damped, order {order}, tol {tol:g}, k<={k}, corrected, draft-predicted",
         ErrorControlled(50, tol=tol, k_max=k, order=order, correct=True), DAMPED_)])




class CubicInterpolation(NewtonForecast):
    """The cubic through a key's newest four anchors, or ``weight`` of its step beyond the parabola
    through the newest three (1: the cubic; 0: the parabola, ``INTERPOLATION``)."""

    def __init__(self, weight: float = 1.0):
        super().__init__(1.0, 1.0, name=f"cubic {weight:g}")
        self.weight, self.anchors = weight, 4

    def coefficients(self, sigmas, at):
        n = len(sigmas)
        parabola = [0.0] * (n - min(n, 3)) + lagrange_coefficients(sigmas[n - min(n, 3):], at)
        if n < 4:
            return parabola
        cubic = [0.0] * (n - 4) + lagrange_coefficients(sigmas[n - 4:], at)
        return [p + self.weight * (c - p) for p, c in zip(parabola, cubic)]


@contextlib.contextmanager
def interpolating_with(reading: NewtonForecast):
    """Corrected windows interpolate with ``reading`` instead of the library's parabola (the bank
    keeps the anchors it reads)."""
    import sdsv.forecast.anchors as anchors_module
    import sdsv.forecast.self_draft as self_draft_module
    saved = anchors_module.INTERPOLATION, self_draft_module.INTERPOLATION
    anchors_module.INTERPOLATION = self_draft_module.INTERPOLATION = reading
    try:
        yield
    finally:
        anchors_module.INTERPOLATION, self_draft_module.INTERPOLATION = saved


#: (error metric, tol, k_max) of the corrected windows chosen in ``corrected_variants`` (at most 12.4
#: calls on the calibration set, the highest mean + 5th percentile)
X0_CHOICE = ("x0_rms", 0.27, 5)


def corrected_variants_report(rep: ImageSet) -> list[dict]:
    """The windows chosen in ``corrected_variants`` on the report set (the faithful default's row
    there is ``corrected_report``'s last)."""
    metric, tol, k = X0_CHOICE
    return [rep.row(f"{metric}, tol {tol:g}, k<={k}, corrected, draft-predicted",
                    dataclasses.replace(PREVIOUS_FAITHFUL, tol=tol, k_max=k, error_metric=metric),
                    forecast=DAMPED_)]


def corrected_variants_video(clips: int, batch: int, cache: Path) -> dict:
    """The windows chosen in ``corrected_variants`` beside the faithful default on the clips of
    ``forecast_video``."""
    metric, tol, k = X0_CHOICE
    return video_rows(clips, batch, cache, [
        ("faithful default, tol 0.45, k<=5", PREVIOUS_FAITHFUL, DAMPED_),
        (f"{metric}, tol {tol:g}, k<={k}, corrected, draft-predicted",
         dataclasses.replace(PREVIOUS_FAITHFUL, tol=tol, k_max=k, error_metric=metric), DAMPED_)])


@contextlib.contextmanager
def window_error_in_sigma_power(power: float, floor: float = 0.0):
    """Windows sized by the velocity error times max(sigma, ``floor``) ** ``power`` (0: ``v_rms``, 1
    and no floor: ``x0_rms``), the sampler's closing errors patched for the rows sampled inside
    (policies say ``v_rms``)."""
    import sdsv.sampler as sampler_module
    original = sampler_module._Loop._closing_errors

    def closing_errors(self, stat_rows, pstats_host, values, h_v, sig_v):
        return [e * max(s, floor) ** power for e, s in zip(original(self, stat_rows, pstats_host, values, h_v, sig_v),
                                                           sig_v.tolist())]

    sampler_module._Loop._closing_errors = closing_errors
    try:
        yield
    finally:
        sampler_module._Loop._closing_errors = original


def corrected_power(cal: ImageSet) -> list[dict]:
    """The faithful default's corrected windows sized by the velocity error times sigma ** p between
    the velocity's (p = 0, the default) and x0's (p = 1, ``corrected_variants``), or x0's with sigma
    floored (late windows sized as by the velocity error), calibration set."""
    rows = []
    for power, floor, tols in ((0.5, 0.0, (0.33, 0.36, 0.39)), (0.75, 0.0, (0.28, 0.31, 0.34)),
                               (1.0, 0.3, (0.25, 0.27, 0.3)), (1.0, 0.5, (0.25, 0.27, 0.3))):
        for tol in tols:
            name = f"v_rms x sigma^{power:g}" if not floor else f"v_rms x max(sigma, {floor:g})"
            with window_error_in_sigma_power(power, floor):
                rows.append(cal.row(f"{name}, tol {tol:g}, k<=5, corrected, draft-predicted",
                                    dataclasses.replace(PREVIOUS_FAITHFUL, tol=tol), forecast=DAMPED_))
    return rows


def corrected_one_step(cal: ImageSet) -> list[dict]:
    """The faithful default's corrected windows allowed down to one draft step (``k_min = k_init =
    1``), under the velocity error and the x0 error, the controller's order 1 and 2; calibration set."""
    faithful = PREVIOUS_FAITHFUL
    rows = []
    for metric, order, tols in (("v_rms", 1, (0.45, 0.5, 0.55, 0.6)), ("v_rms", 2, (0.7, 0.8, 0.9)),
                                ("x0_rms", 1, (0.27, 0.3, 0.33)), ("x0_rms", 2, (0.4, 0.45, 0.5))):
        for tol in tols:
            rows.append(cal.row(f"{metric}, order {order}, tol {tol:g}, k 1-5, corrected, draft-predicted",
                                dataclasses.replace(faithful, tol=tol, order=order, k_min=1, k_init=1,
                                                    error_metric=metric), forecast=DAMPED_))
    return rows


def interpolation_offline(cal: ImageSet) -> dict:
    """How far each interpolation of the deep residual misses on the target's own 50-step Euler
    trajectories (the calibration set's first 48 images, guided): windows of ``k`` draft steps
    between anchors every ``k + 1`` steps, each interior step's residual compared with the
    parabola through two anchors before and the closing one (the corrected windows' today), the
    line through the window's two ends, the cubic through three before and the closing one, the
    centred cubic through two before and two after (a window redone once the NEXT window's anchor
    is on record), and the damped forecast from three before (an uncorrected window). Relative
    RMS error in dB (lower is better), mean over steps and images, by third of the run."""
    from sdsv.guidance import ClassifierFreeGuidance
    from sdsv.schedule import flow_match_sigmas

    pipe, n = cal.pipe, min(48, cal.n)
    split = TinyDiTSplit(pipe.target)
    residuals = []

    def model(x, sigma, labels):
        v, r = split.forward_with_residual(x, sigma, labels)
        residuals.append(r.double())
        return v

    guided = ClassifierFreeGuidance(model, 3.0, {"labels": torch.tensor(pipe.target.null_labels)})
    sig = flow_match_sigmas(50, 1.0).double()
    x = pipe.noise(n, cal.seeds[:n])
    labels = pipe.encode(cal.prompts[:n])
    for i in range(50):
        v = guided(x, sig[i].repeat(n).to(x.dtype), labels=labels)
        x = x + (sig[i + 1] - sig[i]).to(x.dtype) * v
    R = torch.stack(residuals)  # [step, rows, ...]
    s = sig[:50].tolist()

    def err(est, true):
        num = (est - true).flatten(1).pow(2).mean(1)
        return (10 * torch.log10(num / true.flatten(1).pow(2).mean(1))).mean().item()

    def at(points, t):
        c = lagrange_coefficients([s[p] for p in points], s[t])
        return sum(w * R[p] for w, p in zip(c, points))

    damped = DAMPED_
    out = {}
    for k in (2, 3, 4, 5):
        w = k + 1
        kinds = {"parabola (2 before, closing)": [], "line (window ends)": [], "cubic (3 before, closing)": [],
                 "centred cubic (2 before, 2 after)": [], "forecast (damped, 3 before)": []}
        thirds = {name: {0: [], 1: [], 2: []} for name in kinds}
        for a in range(2 * w, 50 - 2 * w, w):
            for j in range(1, w):
                t = a + j
                est = {"parabola (2 before, closing)": at([a - w, a, a + w], t),
                       "line (window ends)": at([a, a + w], t),
                       "cubic (3 before, closing)": at([a - 2 * w, a - w, a, a + w], t),
                       "centred cubic (2 before, 2 after)": at([a - w, a, a + w, a + 2 * w], t),
                       "forecast (damped, 3 before)": sum(
                           c * R[p] for c, p in zip(damped.coefficients([s[a - 2 * w], s[a - w], s[a]], s[t]),
                                                    (a - 2 * w, a - w, a)))}
                for name, e in est.items():
                    v = err(e, R[t])
                    kinds[name].append(v)
                    thirds[name][min(2, t * 3 // 50)].append(v)
        out[f"k={k}"] = {name: {"mean": round(sum(v) / len(v), 2),
                                **{f"third {i + 1}": round(sum(t) / len(t), 2) for i, t in th.items() if t}}
                         for (name, v), th in zip(kinds.items(), thirds.values())}
        for name, row in out[f"k={k}"].items():
            print(f"  k={k} {name:36s} {row}", flush=True)
    return out


@contextlib.contextmanager
def corrected_in_hindsight():
    """Corrected windows redone once more when the next corrected window of the same sample has
    closed (Euler only, a lab patch of the sampler's correction): from the previous window's first
    state, its steps with the centred cubic through the two anchors before it and the two after it
    (its own closing anchor and the next window's), its closing step, then the next window's steps
    with the parabola and its closing step, as the correction takes them — ``k1 + k2 + 2`` more
    draft calls, no target call. The bank keeps four anchors per key for it."""
    import sdsv.forecast.self_draft as self_draft_module
    import sdsv.sampler as sampler_module
    loop = sampler_module._Loop
    original, saved_slots = loop._correct, self_draft_module.INTERPOLATION
    cubic = CubicInterpolation(1.0)

    def roll(self, b, x, first, last, reading):
        bank = self.anchors
        bank.reading = reading
        try:
            for step in range(first, last + 1):
                v = self.models("draft", x, self.sig_t[step:step + 1], self.conds.rows([b]), [b], [self.sig[step]])
                x = x + self.h_t[step] * v
        finally:
            bank.reading = bank.forecast
        return x

    def correct(self, rnd, corrected):
        original(self, rnd, corrected)
        for i in corrected:
            w = rnd.windows[i]
            b, start, k = w.sample, w.start, w.k
            first_state = rnd.states[rnd.offsets[i]:rnd.offsets[i] + 1].clone()
            # each sampling call's own memory: sample -> (start step, k, first state) of its last window
            previous = self.__dict__.setdefault("_hindsight_previous", {})
            prev = previous.get(b)
            if prev is not None and prev[0] + prev[1] + 1 == start:
                x = roll(self, b, prev[2], prev[0], prev[0] + prev[1], cubic)       # the previous window, centred
                first_state = x.clone()
                x = roll(self, b, x, start, start + k, INTERPOLATION)                 # this one, as corrected
                self.x[b:b + 1] = x
            previous[b] = (start, k, first_state)

    self_draft_module.INTERPOLATION = cubic  # four slots per key
    loop._correct = correct
    try:
        yield
    finally:
        loop._correct = original
        self_draft_module.INTERPOLATION = saved_slots


def corrected_hindsight(cal: ImageSet) -> list[dict]:
    """The faithful default's corrected windows redone in hindsight (``corrected_in_hindsight``),
    tolerance swept, velocity and x0 error, calibration set."""
    faithful = PREVIOUS_FAITHFUL
    rows = [cal.row("faithful default, tol 0.45, k<=5", faithful, forecast=DAMPED_)]
    for metric, tols in (("v_rms", (0.4, 0.42, 0.45, 0.5, 0.55)), ("x0_rms", (0.27, 0.28, 0.29, 0.3))):
        for tol in tols:
            with corrected_in_hindsight():
                rows.append(cal.row(f"{metric}, tol {tol:g}, k<=5, corrected, then redone in hindsight",
                                    dataclasses.replace(faithful, tol=tol, error_metric=metric), forecast=DAMPED_))
    return rows


def corrected_hindsight_report(rep: ImageSet) -> list[dict]:
    """The windows redone in hindsight chosen in ``corrected_hindsight`` (the velocity error at tol
    0.42, the rule's choice) and the x0 error's best (tol 0.28) on the report set (the faithful
    default's row there is ``corrected_report``'s last)."""
    faithful = PREVIOUS_FAITHFUL
    rows = []
    for metric, tol in (("v_rms", 0.42), ("x0_rms", 0.28)):
        with corrected_in_hindsight():
            rows.append(rep.row(f"{metric}, tol {tol:g}, k<=5, corrected, then redone in hindsight",
                                dataclasses.replace(faithful, tol=tol, error_metric=metric), forecast=DAMPED_))
    return rows


def faithful_candidates(cal: ImageSet) -> list[dict]:
    """The faithful windows measured on the report set, again on a calibration set of
    ``--images`` images (run with 480: a 5th percentile of 96 images is its 5th-worst image, and
    the candidates differ by less than that scatter): which one the rule (at most 12.4 calls,
    the highest mean + 5th percentile) picks on more images."""
    faithful = PREVIOUS_FAITHFUL
    rows = [cal.row("velocity error, tol 0.45 (the default)", faithful, forecast=DAMPED_),
            cal.row("velocity error, tol 0.5, order 2", dataclasses.replace(faithful, tol=0.5, order=2), forecast=DAMPED_)]
    for tol in (0.25, 0.27, 0.3):
        rows.append(cal.row(f"x0 error, tol {tol:g}", dataclasses.replace(faithful, tol=tol, error_metric="x0_rms"),
                            forecast=DAMPED_))
    for metric, tol in (("v_rms", 0.42), ("v_rms", 0.45), ("x0_rms", 0.28)):
        with corrected_in_hindsight():
            rows.append(cal.row(f"{'velocity' if metric == 'v_rms' else 'x0'} error, tol {tol:g}, redone in hindsight",
                                dataclasses.replace(faithful, tol=tol, error_metric=metric), forecast=DAMPED_))
    return rows


def faithful_candidates_report(rep: ImageSet) -> list[dict]:
    """The candidate ``faithful_candidates`` chose on 480 calibration images (the x0 error at tol
    0.3) on the report set."""
    return [rep.row("x0 error, tol 0.3", dataclasses.replace(PREVIOUS_FAITHFUL, tol=0.3, error_metric="x0_rms"),
                    forecast=DAMPED_)]


def last_step(cal: ImageSet) -> list[dict]:
    """The corrected windows with their last ``draft_last`` steps the draft's alone (its forecast
    from the anchors, no closing target evaluation; the windows end before them), tolerance swept,
    the velocity error and the error in x0; beside the previous faithful default. ``last_step`` on
    the calibration set, ``last_step_candidates`` the same rows on 480 calibration images (run with
    ``--images 480``: what ``last_step_report`` chose from)."""
    rows = [cal.row("previous faithful default (velocity error, tol 0.45, the last step the target's)",
                    PREVIOUS_FAITHFUL, forecast=DAMPED_)]
    for last, metric, tols in ((1, "v_rms", (0.4, 0.42, 0.45, 0.5)), (2, "v_rms", (0.35, 0.4)),
                               (1, "x0_rms", (0.27, 0.28, 0.3, 0.33))):
        for tol in tols:
            rows.append(cal.row(f"last {last} step{'s' if last > 1 else ''} drafted, "
                                f"{'velocity' if metric == 'v_rms' else 'x0'} error, tol {tol:g}",
                                dataclasses.replace(PREVIOUS_FAITHFUL, tol=tol, error_metric=metric, draft_last=last),
                                forecast=DAMPED_))
    return rows


#: what ``last_step_candidates`` chose (the last step drafted, the x0 error at tol 0.3): the
#: library's faithful default since, pinned here so the rows keep meaning what they measured
LAST_STEP_CHOICE = dataclasses.replace(PREVIOUS_FAITHFUL, tol=0.3, error_metric="x0_rms", draft_last=1)


def last_step_report(rep: ImageSet) -> list[dict]:
    """What ``last_step`` chose on 480 calibration images (at most 12.4 calls, the highest mean +
    5th percentile: the last step drafted, the x0 error at tol 0.3, the faithful default since) and
    the velocity error's best there (tol 0.42), report set."""
    return [rep.row("last step drafted, x0 error, tol 0.3 (the faithful default)", LAST_STEP_CHOICE,
                    forecast=DAMPED_),
            rep.row("last step drafted, velocity error, tol 0.42",
                    dataclasses.replace(PREVIOUS_FAITHFUL, tol=0.42, draft_last=1), forecast=DAMPED_)]


def last_step_video(clips: int, batch: int, cache: Path) -> dict:
    """The faithful default (last step drafted) beside the previous one on the clips of ``forecast_video``."""
    return video_rows(clips, batch, cache, [
        ("previous faithful default (velocity error, tol 0.45)", PREVIOUS_FAITHFUL, DAMPED_),
        ("the velocity error, tol 0.42, last step drafted", dataclasses.replace(PREVIOUS_FAITHFUL, tol=0.42, draft_last=1),
         DAMPED_),
        ("faithful default (x0 error, tol 0.3, last step drafted)", LAST_STEP_CHOICE, DAMPED_)])


@contextlib.contextmanager
def closing_state_patch(reevaluate_above: float | None = None, replace: tuple[str, ...] = ("velocity", "anchor"),
                        theta: float = 0.0, sizing: str | None = None, record: list | None = None):
    """A lab patch of the sampler's correction that looks at the corrected window's *closing
    state shift* — how far the correction moved the window's last state from the predicted one,
    where the target was evaluated (``shift = rms(corrected - predicted)``, free once corrected):

    * ``reevaluate_above``: the target evaluated again at the corrected closing state of each
      window whose shift exceeds it (0: every window; one more target call each, counted), its
      output replacing the closing step's velocity and / or the closing anchor (``replace``);
    * ``theta``: the closing state moved ``theta`` times the shift further (local extrapolation,
      as a predictor-corrector's error estimate is sometimes added back);
    * ``sizing``: the next window sized by the shift instead of the prediction's closing error
      (Milne's device: corrector minus predictor estimates the corrector's error) — ``"shift"``
      (per window) or ``"shift_per_sigma"`` (per unit of sigma the window spans);
    * ``record``: per corrected window, the predicted and corrected closing states, their sigma
      and step, the draft's closing velocity and, with ``reevaluate_above=0``, the target's there.
    It wraps the library's correction (``_Loop._correct``, ``_Loop._close_corrected``), which runs
    unchanged. Euler, draft-predicted windows only (the faithful default's)."""
    import sdsv.sampler as sampler_module
    from sdsv._rows import gather_rows, scatter_rows
    loop = sampler_module._Loop
    correct, close = loop._correct, loop._close_corrected

    def closing_rows(rnd, corrected):
        windows = [rnd.windows[i] for i in corrected]
        return windows, [rnd.offsets[i] + w.k for i, w in zip(corrected, windows)]

    def remember_predicted(self, rnd, corrected):
        # the closing states as predicted, before the library's correction rolls over them
        self._predicted_closing = gather_rows(rnd.states, closing_rows(rnd, corrected)[1]).clone()
        correct(self, rnd, corrected)

    def close_from_corrected(self, rnd, corrected):
        windows, rows = closing_rows(rnd, corrected)
        samples, steps = [w.sample for w in windows], [w.start + w.k for w in windows]
        predicted, states = self._predicted_closing, gather_rows(rnd.states, rows)
        drafted = gather_rows(rnd.drafted, rows).clone()
        shift = (states - predicted).flatten(1).pow(2).mean(1).sqrt().tolist()
        pick = [] if reevaluate_above is None else [m for m, d in enumerate(shift) if d > reevaluate_above]
        t = None
        if pick:
            prow, psam, pst = [rows[m] for m in pick], [samples[m] for m in pick], [steps[m] for m in pick]
            t = self.models("target", gather_rows(rnd.states, prow), gather_rows(self.sig_t, pst),
                            self.conds.rows(psam), psam, [self.sig[s] for s in pst])
            if "anchor" in replace:
                self.anchors.commit(list(range(len(pick))))
            if "velocity" in replace:
                scatter_rows(rnd.drafted, prow, t)
        if record is not None:
            labels = self.conds.rows(samples)["labels"]
            for m in range(len(rows)):
                record.append({"step": steps[m], "sigma": self.sig[steps[m]], "k": windows[m].k, "labels": labels[m],
                               "predicted": predicted[m].clone(), "corrected": states[m].clone(),
                               "draft": drafted[m].clone(), **({"target": t[pick.index(m)].clone()} if m in pick else {})})
        close(self, rnd, corrected)
        p = self.policy
        for m, w in enumerate(windows):
            if theta:
                self.x[w.sample] += theta * (states[m] - predicted[m])
            if sizing is not None:
                span = abs(self.sig[w.start + w.k + 1] - self.sig[w.start])
                error = shift[m] / span if sizing == "shift_per_sigma" else shift[m]
                self.state.k_next[w.sample] = next_window_length(w.k, error, p.tol, p.order, p.k_min, p.k_max)

    with patched(loop, "_correct", remember_predicted), patched(loop, "_close_corrected", close_from_corrected):
        yield


@contextlib.contextmanager
def patched(owner, name: str, value):
    """Inside: ``owner.name`` is ``value`` (a lab patch of a library function), restored after."""
    saved = getattr(owner, name)
    setattr(owner, name, value)
    try:
        yield
    finally:
        setattr(owner, name, saved)


def closing_shift(cal: ImageSet) -> list[dict]:
    """What the corrected windows lose by reusing the target's evaluation at the PREDICTED closing
    state (``closing_state_patch``): the target evaluated again at the corrected one for every
    window (both its uses, then each alone), for the windows whose shift is largest only (the
    limits are the shift's 75th / 90th / 95th percentile in the default's windows), and the closing
    state extrapolated along the shift; beside the default's own curve (tol 0.4 down to 0.2)."""
    faithful = PREVIOUS_FAITHFUL
    rows = [cal.row("faithful default, tol 0.45, k<=5", faithful, forecast=DAMPED_)]
    for tol in (0.4, 0.35, 0.3, 0.25, 0.2):
        rows.append(cal.row(f"the default's curve: tol {tol:g}", dataclasses.replace(faithful, tol=tol), forecast=DAMPED_))
    for replace, what in ((("velocity", "anchor"), "both"), (("velocity",), "the closing step's velocity only"),
                          (("anchor",), "the closing anchor only")):
        with closing_state_patch(0.0, replace):
            rows.append(cal.row(f"target again at every corrected closing state ({what})", faithful, forecast=DAMPED_))
    for tol, limit in ((0.45, 0.009), (0.45, 0.012), (0.45, 0.0145), (0.55, 0.012)):
        with closing_state_patch(limit):
            rows.append(cal.row(f"tol {tol:g}, target again where the shift > {limit:g}",
                                dataclasses.replace(faithful, tol=tol), forecast=DAMPED_))
    for theta in (-0.3, 0.3):
        with closing_state_patch(theta=theta):
            rows.append(cal.row(f"closing state moved {theta:+g} x the shift", faithful, forecast=DAMPED_))
    return rows


def corrected_sizing(cal: ImageSet) -> list[dict]:
    """Two more ways to size the corrected windows: by the closing state shift (Milne's device,
    ``closing_state_patch(sizing=)``, per window or per unit of sigma, the controller's order 1
    and 2), and with the longest window depending on where the window starts (``StepCapped``)."""
    faithful = PREVIOUS_FAITHFUL
    rows = []
    for sizing, order, tols in (("shift", 1, (0.004, 0.006, 0.009)), ("shift_per_sigma", 1, (0.07, 0.1)),
                                ("shift_per_sigma", 2, (0.09, 0.12))):
        for tol in tols:
            with closing_state_patch(sizing=sizing):
                rows.append(cal.row(f"sized by the {sizing.replace('_', ' ')}, order {order}, tol {tol:g}",
                                    dataclasses.replace(faithful, tol=tol, order=order), forecast=DAMPED_))
    for caps in (((0, 4), (30, 8)), ((0, 5), (30, 8)), ((0, 4), (35, 10)), ((0, 5), (25, 4), (38, 8)),
                 ((0, 6), (35, 4)), ((0, 6), (20, 5)), ((0, 5), (40, 4)), ((0, 7), (30, 5))):
        policy = StepCapped(50, tol=faithful.tol, k_max=max(k for _, k in caps), correct=True, predict="draft",
                            name="faithful", caps=caps)
        rows.append(cal.row("longest window " + ", ".join(f"{k} from step {s}" for s, k in caps), policy,
                            forecast=DAMPED_))
    return rows


@dataclasses.dataclass(frozen=True)
class StepCapped(ErrorControlled):
    """The faithful windows with the longest window depending on the step it starts at: ``caps``,
    ``((from_step, k_max), ...)`` ascending."""

    caps: tuple = ()

    def cap(self, step: int) -> int:
        return next((k for s, k in reversed(self.caps) if step >= s), self.k_max)

    def start(self, batch: int) -> PolicyState:
        return StepCappedState(self, batch)


class StepCappedState(ErrorControlledState):
    def window(self, sample: int, step: int):
        kind, k = super().window(sample, step)
        return (kind, k) if kind == "target" else (kind, max(1, min(k, self.p.cap(step))))


def closing_shift_offline(cal: ImageSet) -> dict:
    """Can the shift be undone without the target's deep blocks? On the default's corrected
    windows (the calibration set's first 48 images; the target evaluated at both closing states of
    each, conditional branch for the deep residual): the residual's change between the predicted
    and the corrected closing state (relative to the residual, dB); how much of it a linear map of
    the change of the hidden state entering the deep blocks explains (scalar, per channel, a full
    channel map; fitted on half the windows, measured on the other half), how much computing the
    first ``j`` deep blocks for real explains, or the last ``m`` on their shifted input; and, on the
    velocity, how much a per-sigma scalar times the state's shift explains of the closing step's
    error (the draft's velocity at the corrected state against the target's there), and that
    error by where the window closes."""
    pipe, n = cal.pipe, min(48, cal.n)
    sub = ImageSet(pipe, cal.start, n, cal.cache, cal.batch)
    record: list = []
    with closing_state_patch(0.0, replace=(), record=record):
        sub.row("the default, the target also evaluated at each corrected closing state (nothing replaced)",
                PREVIOUS_FAITHFUL, forecast=DAMPED_)
    split = TinyDiTSplit(pipe.target)
    g = torch.Generator().manual_seed(0)
    order = torch.randperm(len(record), generator=g).tolist()
    fit, test = order[:len(order) // 2], order[len(order) // 2:]
    fit_set = set(fit)
    labels = torch.stack([r["labels"] for r in record])

    def db(num, den) -> float:
        return round(10 * math.log10(float(num) / float(den)), 2)

    xp = torch.stack([r["predicted"] for r in record])
    xc = torch.stack([r["corrected"] for r in record])
    sig = torch.tensor([r["sigma"] for r in record], dtype=xp.dtype)
    hp, _, mod = split._enter(xp, sig, labels, None)
    hc, _, _ = split._enter(xc, sig, labels, None)
    hps, hcs = [hp], [hc]
    for blk in split.deep:
        hps.append(blk(hps[-1], mod))
        hcs.append(blk(hcs[-1], mod))
    dh, dR, Rc = (hc - hp).double(), ((hcs[-1] - hc) - (hps[-1] - hp)).double(), (hcs[-1] - hc).double()
    out = {"windows": len(record), "residual change, dB of the residual": db(dR[test].pow(2).sum(), Rc[test].pow(2).sum())}
    lengths = {"starting at steps 2-10": {}, "starting at steps 11-49": {}}
    for r in record:
        part = lengths["starting at steps 2-10" if r["step"] - r["k"] <= 10 else "starting at steps 11-49"]
        part[r["k"]] = part.get(r["k"], 0) + 1
    out["windows of k draft steps"] = {key: dict(sorted(v.items())) for key, v in lengths.items()}
    shifts = sorted((r["corrected"] - r["predicted"]).pow(2).mean().sqrt().item() for r in record)
    out["shift rms, percentiles 50 / 75 / 90 / 95"] = [round(shifts[int(q * (len(shifts) - 1))], 4)
                                                      for q in (0.5, 0.75, 0.9, 0.95)]
    a = (dR[fit] * dh[fit]).sum() / dh[fit].pow(2).sum()
    ac = (dR[fit] * dh[fit]).sum((0, 1)) / dh[fit].pow(2).sum((0, 1))
    X, Y = dh[fit].reshape(-1, dh.shape[-1]), dR[fit].reshape(-1, dR.shape[-1])
    W = torch.linalg.solve(X.T @ X + 1e-3 * X.pow(2).mean() * X.shape[0] * torch.eye(X.shape[1], dtype=X.dtype), X.T @ Y)
    base = dR[test].pow(2).sum()
    out["linear in the hidden state's change, dB of the residual change"] = {
        "scalar": db((dR[test] - a * dh[test]).pow(2).sum(), base),
        "per channel": db((dR[test] - ac * dh[test]).pow(2).sum(), base),
        "channel map": db((dR[test] - dh[test] @ W).pow(2).sum(), base)}
    D = len(split.deep)
    out["first j deep blocks for real"] = {
        j: db((dR - ((hcs[j] - hc) - (hps[j] - hp)).double()).pow(2).sum(), dR.pow(2).sum()) for j in range(1, D)}
    last = {}
    for m in (1, 2, 3):
        h = hc + (hps[D - m] - hp)
        for blk in split.deep[D - m:]:
            h = blk(h, mod)
        last[m] = db(((hcs[-1] - hc) - (h - hc)).double().pow(2).sum(), dR.pow(2).sum())
    out["last m deep blocks for real, on their shifted input"] = last
    velocity, dx = {}, (xc - xp).double()
    vd = torch.stack([r["draft"] for r in record]).double()
    vt = torch.stack([r["target"] for r in record]).double()
    for lo, hi in ((0.0, 0.35), (0.35, 0.6), (0.6, 0.8), (0.8, 1.01)):
        idx = [i for i, r in enumerate(record) if lo <= r["sigma"] < hi]
        f_, t_ = [i for i in idx if i in fit_set], [i for i in idx if i not in fit_set]
        if not f_ or not t_:
            continue
        b = ((vt[f_] - vd[f_]) * dx[f_]).sum() / dx[f_].pow(2).sum()
        velocity[f"sigma {lo:g}-{min(hi, 1):g}"] = {
            "draft's closing error, dB of the velocity": db((vd[t_] - vt[t_]).pow(2).sum(), vt[t_].pow(2).sum()),
            "scalar": round(b.item(), 2),
            "gain, dB": db((vd[t_] + b * dx[t_] - vt[t_]).pow(2).sum(), (vd[t_] - vt[t_]).pow(2).sum())}
    out["closing velocity + scalar x the state's shift"] = velocity
    by_step = {}
    for name, lo, hi in (("steps 2-29", 0, 30), ("steps 30-44", 30, 45), ("steps 45-48", 45, 49), ("step 49", 49, 50)):
        idx = [i for i, r in enumerate(record) if lo <= r["step"] < hi]
        if idx:
            by_step[name] = db((vd[idx] - vt[idx]).pow(2).sum(), vt[idx].pow(2).sum())
    out["the draft's closing velocity error by closing step, dB of the velocity"] = by_step
    for key, v in out.items():
        print(f"  {key}: {v}", flush=True)
    return out


def corrected_cubic(cal: ImageSet) -> list[dict]:
    """The faithful default's corrected windows interpolating with the cubic through four anchors
    (or halfway from the parabola to it) instead of the parabola through three, tolerance swept;
    calibration set."""
    rows = [cal.row("faithful default (parabola), tol 0.45, k<=5", PREVIOUS_FAITHFUL, forecast=DAMPED_)]
    for weight in (1.0, 0.5):
        for tol in (0.45, 0.5, 0.55):
            with interpolating_with(CubicInterpolation(weight)):
                rows.append(cal.row(f"cubic {weight:g}, tol {tol:g}, k<=5, corrected, draft-predicted",
                                    dataclasses.replace(PREVIOUS_FAITHFUL, tol=tol), forecast=DAMPED_))
    return rows


def corrected_variants(cal: ImageSet) -> list[dict]:
    """The faithful default's corrected windows with one thing changed at a time: the window error
    in x0 (``x0_rms``, sigma times the velocity's) instead of the velocity's, the interpolation's
    curvature weight, and the forecast that predicts the window (where the target evaluates);
    calibration set."""
    faithful = PREVIOUS_FAITHFUL
    rows = [cal.row("faithful default, tol 0.45, k<=5", faithful, forecast=DAMPED_)]
    for tol, k in ((0.1, 5), (0.15, 5), (0.2, 5), (0.22, 5), (0.25, 5), (0.27, 5), (0.3, 5), (0.35, 5), (0.2, 6),
                   (0.25, 6), (0.3, 4)):
        rows.append(cal.row(f"x0_rms, tol {tol:g}, k<={k}, corrected, draft-predicted",
                            dataclasses.replace(faithful, tol=tol, k_max=k, error_metric="x0_rms"), forecast=DAMPED_))
    for curvature in (0.8, 1.2):
        with interpolating_with(NewtonForecast(1.0, curvature)):
            rows.append(cal.row(f"interpolation curvature {curvature:g}, tol 0.45, k<=5, corrected, draft-predicted",
                                faithful, forecast=DAMPED_))
    for name, forecast in (("line", LINE), ("slope 1, curvature 0.5", NewtonForecast(1.0, 0.5)),
                           ("slope 0.9, curvature 0.3", NewtonForecast(0.9, 0.3))):
        rows.append(cal.row(f"predicted with {name}, tol 0.45, k<=5, corrected", faithful, forecast=forecast))
    return rows


def video_rows(clips: int, batch: int, cache: Path, methods: list) -> dict:
    """``(name, policy, forecast)`` rows on ``clips`` clips of the tiny video model (its own UniPC,
    50 steps) from seed ``VIDEO_CALIBRATION_START``, against its 50-step output."""
    from sdsv.evaluation.video import video_prompts
    from sdsv.tiny.video.demo import frame_psnr
    from sdsv.tiny.video.pipeline import DEFAULT_SOLVER, TinyVideoPipeline

    pipe = TinyVideoPipeline.from_pretrained()
    prompts, seeds = video_prompts(clips), [VIDEO_CALIBRATION_START + i for i in range(clips)]

    def run(policy, forecast=LINE):
        frames, evals = [], 0
        for i in range(0, clips, batch):
            out = pipe(prompts[i:i + batch], seed=seeds[i:i + batch], policy=policy, solver=DEFAULT_SOLVER,
                       forecast=forecast)
            frames.append(out.frames)
            evals += out.stats.target_evals
        return torch.cat(frames), evals / clips

    path = cache / f"video_ref_{seeds[0]}_{clips}_{DEFAULT_SOLVER}_50.pt"
    if not path.exists():
        torch.save(run(StagePlan.target_only(50))[0], path)
    ref = torch.load(path)
    rows = []
    for name, policy, forecast in methods:
        t = time.time()
        frames, evals = run(policy, forecast)
        fid = frame_psnr(frames, ref).mean(1)  # a clip's PSNR: the mean over its frames
        rows.append({"method": name, "solver": DEFAULT_SOLVER, "target_evals": round(evals, 2),
                     "fidelity": {k: round(v, 2) for k, v in tail_summary(fid).items()},
                     "wall_s": round(time.time() - t, 1)})
        print(f"  {rows[-1]['method']:50s} {evals:.2f} evals  {rows[-1]['fidelity']}", flush=True)
    return {"clips": clips, "seeds": [seeds[0], seeds[-1]], "rows": rows}


def _apriori(cal: ImageSet, estimate, candidates_) -> dict:
    with apriori_drafts(cal.pipe, estimate):
        pairs = closing_pairs(cal)
        out = {"windows": len(pairs), "zones": _zones(pairs)}
        out["candidates"] = [cal.row(name, make()) for name, make in candidates_]
    return out


def _zones(pairs) -> dict:
    out = {}
    for lo, hi in ((0, 50), (0, 15), (15, 30), (30, 50)):
        z = [(p, c) for s, p, c in pairs if lo <= s < hi]
        out[f"{lo}-{hi}"] = {"windows": len(z), "spearman": round(_spearman(z), 3),
                             "median_probe": round(_median([p for p, _ in z]), 3),
                             "median_closing": round(_median([c for _, c in z]), 3)}
        print(f"  steps {lo}-{hi}: {out[f'{lo}-{hi}']}", flush=True)
    return out


ACCURATE_CANDIDATES = [
    ("unipc 12 (target only)", lambda: StagePlan.target_only(12), "unipc"),
    ("unipc 15 (target only)", lambda: StagePlan.target_only(15), "unipc"),
    ("error-ctrl k 1-2, unipc 25", lambda: short_windows(25), "unipc"),
    ("error-ctrl k 1-2, dpm++2m 25", lambda: short_windows(25), "dpm++2m"),
    ("error-ctrl k 1-2, dpm++2m 27", lambda: short_windows(27), "dpm++2m"),
    ("error-ctrl k 1-2, dpm++2m 28 (accurate)", lambda: short_windows(28), "dpm++2m"),
    ("error-ctrl k 1-2, dpm++2m 30", lambda: short_windows(30), "dpm++2m"),
    ("error-ctrl k 1-3, dpm++2m 30", lambda: ErrorControlled(30, tol=0.2, k_min=1, k_init=1, k_max=3), "dpm++2m"),
    ("error-ctrl tol 0.3, k 1-3, dpm++2m 30", lambda: ErrorControlled(30, tol=0.3, k_min=1, k_init=1, k_max=3), "dpm++2m"),
    ("error-ctrl tol 0.3, k 1-3, dpm++2m 32", lambda: ErrorControlled(32, tol=0.3, k_min=1, k_init=1, k_max=3), "dpm++2m"),
    ("cache every 3 on dpm++2m 30", lambda: FixedInterval(30, every=3), "dpm++2m"),
]


def accurate(cal: ImageSet) -> list[dict]:
    """Candidates for the accurate intent on the calibration set, both yardsticks, after the
    50-step pipeline's own accuracy (its images are the fidelity reference)."""
    cal.with_accuracy()
    return [reference_row(cal)] + [cal.row(name, make(), solver) for name, make, solver in ACCURATE_CANDIDATES]


def reference_row(images: ImageSet) -> dict:
    """The 50-step Euler output (the fidelity reference) against the converged reference."""
    a = tail_summary(psnr(images.fidelity, images.accuracy))
    row = {"method": "target-only, euler 50 (the fidelity reference)", "policy": "target-only", "solver": "euler",
           "target_evals": 50.0, "fidelity": {k: math.inf for k in a}, "accuracy": {k: round(v, 2) for k, v in a.items()}}
    print("  " + line(row), flush=True)
    return row


def _median(v):
    v = sorted(v)
    return v[len(v) // 2] if v else math.nan


def _spearman(pairs) -> float:
    if len(pairs) < 3:
        return math.nan
    a, b = torch.tensor([p for p, _ in pairs]), torch.tensor([c for _, c in pairs])
    ra, rb = a.argsort().argsort().double(), b.argsort().argsort().double()
    return float(torch.corrcoef(torch.stack([ra, rb]))[0, 1])


def intents(rep: ImageSet) -> list[dict]:
    rep.with_accuracy()
    rows = [reference_row(rep)]
    rows.append(rep.row("faithful (default): error-ctrl tol 0.2, euler 50", ErrorControlled(50, tol=0.2, name="faithful")))
    rows.append(rep.row("accurate: error-ctrl, dpm++2m 28", short_windows(28), "dpm++2m"))
    rows.append(rep.row("error-ctrl k 1-2, dpm++2m 30 (the accurate intent before)", short_windows(30),
                        "dpm++2m"))
    rows.append(rep.row("error-ctrl tol 0.25", ErrorControlled(50, tol=0.25)))
    rows.append(rep.row("error-ctrl tol 0.3", ErrorControlled(50, tol=0.3)))
    rows.append(rep.row("sigma: tol 0.2 to step 30, 0.3 after", Phased(50, [(30, 0.2, 4), (50, 0.3, 4)])))
    for steps in (20, 25, 30):
        rows.append(rep.row(f"target-only, dpm++2m {steps}", StagePlan.target_only(steps), "dpm++2m"))
    for steps in (12, 15, 20):
        rows.append(rep.row(f"target-only, unipc {steps}", StagePlan.target_only(steps), "unipc"))
    rows.append(rep.row("cache every 3 (self)", FixedInterval(50, every=3)))
    rows.append(rep.row("cache every 2 on dpm++2m 30 (self)", FixedInterval(30, every=2), "dpm++2m"))
    return rows


LATENCY = [
    ("target-only, euler 50 (reference)", lambda: StagePlan.target_only(50), "euler"),
    ("faithful (default): error-ctrl tol 0.2, euler 50", lambda: ErrorControlled(50, tol=0.2, name="faithful"), "euler"),
    ("accurate: error-ctrl, dpm++2m 28", lambda: short_windows(28), "dpm++2m"),
    ("error-ctrl tol 0.3", lambda: ErrorControlled(50, tol=0.3), "euler"),
    ("target-only, unipc 12", lambda: StagePlan.target_only(12), "unipc"),
    ("target-only, dpm++2m 25", lambda: StagePlan.target_only(25), "dpm++2m"),
    ("cache every 3 (self)", lambda: FixedInterval(50, every=3), "euler"),
]


def latency(rep: ImageSet, images: int = 8, rounds: int = 2) -> list[dict]:
    """Wall-clock per image at batch 1, models compiled (as ``sdsv demo``), methods interleaved
    image by image so that every method sees the same machine; speed-up = the reference's median
    time over the method's. Also where the time goes: the mean ms per image inside target calls,
    inside draft calls and in the sampler itself (SampleStats' split)."""
    pipe = TinyPipeline.from_pretrained(names=("target",))
    how = pipe.compile_or_warn()
    times: dict[str, list[float]] = {name: [] for name, _, _ in LATENCY}
    evals: dict[str, float] = {name: 0.0 for name, _, _ in LATENCY}
    parts = {name: {"target_ms": 0.0, "draft_ms": 0.0, "sampler_ms": 0.0, "draft_calls": 0.0} for name, _, _ in LATENCY}
    for r in range(rounds + 1):  # round 0 warms every shape up, untimed
        for i in range(images):
            for name, make, solver in LATENCY:
                policy = make()
                t = time.perf_counter()
                out = pipe(rep.prompts[i], policy=policy, draft="self", solver=solver, seed=rep.seeds[i])
                if r:
                    times[name].append(time.perf_counter() - t)
                    st, share = out.stats, 1 / (images * rounds)
                    evals[name] += st.target_evals * share
                    for key, v in (("target_ms", 1e3 * st.target_s), ("draft_ms", 1e3 * st.draft_s),
                                   ("sampler_ms", 1e3 * st.sampler_s), ("draft_calls", st.draft_evals)):
                        parts[name][key] += v * share
    med = {n: sorted(v)[len(v) // 2] for n, v in times.items()}
    ref = med[LATENCY[0][0]]
    rows = [{"method": n, "median_ms": round(1e3 * med[n], 1), "speedup": round(ref / med[n], 2),
             "target_evals": round(evals[n], 2), "models": how,
             **{k: round(v, 1) for k, v in parts[n].items()}} for n, _, _ in LATENCY]
    for row in rows:
        print(f"  {row['method']:50s} {row['median_ms']:8.1f} ms  {row['speedup']:.2f}x  {row['target_evals']:.1f} evals",
              flush=True)
    return rows


SECTIONS = ("where", "candidates", "probe", "gap", "transfer", "depth", "partial", "variable", "forecasts",
            "grain", "output", "phase", "forecast_accurate", "forecast_video", "accurate", "intents", "forecast_report",
            "corrected", "corrected_prediction", "corrected_accurate", "corrected_video", "corrected_report",
            "corrected_accurate_draft", "corrected_accurate_unipc_report", "corrected_order", "corrected_order_report", "corrected_order_video", "corrected_cubic", "corrected_variants", "corrected_variants_report", "corrected_variants_video", "corrected_power", "corrected_one_step", "interpolation_offline", "corrected_hindsight", "corrected_hindsight_report", "faithful_candidates", "faithful_candidates_report", "closing_shift", "closing_shift_offline", "corrected_sizing", "last_step", "last_step_candidates", "last_step_report", "last_step_video", "latency")


def markdown(result: dict) -> str:
    """The tables of a result JSON (docs/tail.md quotes them)."""
    out = [f"# Tail study (benchmarks/tail_study.py)\n\nMachine: {result.get('machine', '?')}. "
           f"Calibration seeds {result.get('calibration_seeds')}, report seeds {result.get('report_seeds')}; "
           "PSNR in dB against the 50-step Euler output (fid.) and DPM-Solver++(2M) 200 steps (acc.): "
           "mean / 5th percentile / 1st percentile / worst image.\n"]
    if "where" in result:
        w = result["where"]
        out.append(f"## Where the damage enters\n\nThe calibration set's three worst images under error-ctrl "
                   f"tol 0.3 (seeds {w['seeds']}, {w['prompts']}): {[round(v, 1) for v in w['full']]} dB with "
                   "forecasts everywhere.\n\n| step s | forecast only before s | forecast only from s |\n|---|---|---|")
        for s_ in w["only_before"]:
            out.append(f"| {s_} | {w['only_before'][s_]} | {w['only_from'][s_]} |")
        out.append("")
    tables = {"candidates": "Error estimates on the calibration set",
              "gap": "The forecast gap (a-priori, free) as the in-window estimate, calibration set",
              "transfer": "The transfer-rate bound (a-priori, free) as the in-window estimate, calibration set",
              "depth": "The probe at a deeper block (on its forecast input, one block per draft step) as the window limit, calibration set",
              "partial": "The last deep blocks computed at draft steps, on their forecast input, calibration set",
              "variable": "The variable the forecast extrapolates in, calibration set",
              "forecasts": "The forecast's slope and curvature (NewtonForecast), calibration set",
              "grain": "The forecast per block output before its gate (diffusers' TaylorSeer grain), calibration set",
              "output": "The model's output forecast instead of its deep residual (TaylorSeer's lite mode), calibration set",
              "phase": "Where the first forecasts fall after the warm-up (faithful default, DAMPED tol 0.3), calibration set",
              "forecast_accurate": "The accurate intent with the damped forecast, calibration set",
              "forecast_video": "The faithful windows' forecast on the tiny video model (UniPC 50, clip PSNR = mean over frames)",
              "accurate": "Candidates for the accurate intent on the calibration set",
              "intents": "The intents on the report set",
              "forecast_report": "The chosen forecast on the report set",
              "corrected": "Corrected windows (ErrorControlled(correct=True)), calibration set",
              "corrected_prediction": "Corrected windows predicted by the draft instead of the velocity forecast, calibration set",
              "corrected_accurate": "The accurate intent's windows corrected, calibration set",
              "corrected_video": "Corrected windows on the tiny video model (UniPC 50, clip PSNR = mean over frames)",
              "corrected_report": "The corrected windows on the report set",
              "corrected_accurate_draft": "The accurate intent's windows corrected, draft-predicted, calibration set",
              "corrected_accurate_unipc_report": "The accurate windows on UniPC, corrected, report set",
              "corrected_order": "Corrected windows (draft-predicted): the controller's order, calibration set",
              "corrected_order_report": "Corrected windows (draft-predicted): the controller's order, report set",
              "corrected_order_video": "Corrected windows (draft-predicted): the controller's order on the tiny video model",
              "corrected_cubic": "Corrected windows (draft-predicted): the cubic interpolation, calibration set",
              "corrected_variants": "Corrected windows (draft-predicted): the error measure, the interpolation's curvature, the prediction's forecast, calibration set",
              "corrected_variants_report": "Corrected windows (draft-predicted): the window error in x0, report set",
              "corrected_variants_video": "Corrected windows (draft-predicted): the window error in x0 on the tiny video model",
              "last_step_video": "The last step drafted on the tiny video model",
              "corrected_power": "Corrected windows (draft-predicted): the window error times a power of sigma, calibration set",
              "corrected_one_step": "Corrected windows (draft-predicted) down to one draft step, calibration set",
              "corrected_hindsight": "Corrected windows (draft-predicted) redone in hindsight with the centred cubic, calibration set",
              "corrected_hindsight_report": "Corrected windows (draft-predicted) redone in hindsight, report set",
              "faithful_candidates": "The faithful candidates on a larger calibration set (480 images, seeds 21056..21535)",
              "faithful_candidates_report": "The candidate chosen on 480 calibration images, report set",
              "closing_shift": "The corrected closing state: the target evaluated again there, selectively, or the state extrapolated, calibration set",
              "last_step": "The faithful windows with their last step(s) the draft's alone, calibration set",
              "last_step_candidates": "The same on 480 calibration images (seeds 21056..21535)",
              "last_step_report": "The last step drafted, report set",
              "corrected_sizing": "Corrected windows sized by the closing state's shift (Milne's device), or capped by position, calibration set"}
    for key, title in tables.items():
        if key in result:
            rows = (result[key]["candidates"] if key in ("gap", "transfer", "depth") else
                    result[key]["rows"] if key in ("forecast_video", "corrected_video", "corrected_order_video",
                                                "corrected_variants_video", "last_step_video") else result[key])
            acc = any("accuracy" in r for r in rows)
            head = "| method | target evals | fid. mean / p5 / p1 / worst |" + (" acc. mean / p5 / p1 / worst |" if acc else "")
            out += [f"## {title}\n", head, "|---|---:|---|" + ("---|" if acc else "")]
            for r in rows:
                f = r["fidelity"]
                cells = [r["method"], f"{r['target_evals']:.2f}",
                         "—" if math.isinf(f["mean"]) else f"{f['mean']:.2f} / {f['p5']:.2f} / {f['p1']:.2f} / {f['worst']:.2f}"]
                if acc:
                    a = r.get("accuracy")
                    cells.append(f"{a['mean']:.2f} / {a['p5']:.2f} / {a['p1']:.2f} / {a['worst']:.2f}" if a else "")
                out.append("| " + " | ".join(cells) + " |")
            out.append("")
    if "interpolation_offline" in result:
        by_k = result["interpolation_offline"]
        names = list(next(iter(by_k.values())))
        out += ["## How far each interpolation misses, on the target's own trajectories\n",
                "Relative RMS error of the deep residual at a window's interior steps, dB (lower is better): "
                "mean over the run / its three thirds (`interpolation_offline`).\n",
                "| estimate | " + " | ".join(by_k) + " |", "|---|" + "---|" * len(by_k)]
        for name in names:
            out.append(f"| {name} | " + " | ".join(
                f"{v[name]['mean']:.1f} ({' / '.join(f'{v[name][t]:.1f}' for t in ('third 1', 'third 2', 'third 3') if t in v[name])})"
                for v in by_k.values()) + " |")
        out.append("")
    if "closing_shift_offline" in result:
        o = result["closing_shift_offline"]
        out += ["## Can the closing state's shift be undone without the deep blocks?\n",
                f"`closing_shift_offline`, {o['windows']} corrected windows of the faithful default (48 calibration "
                "images); dB, lower is better; fitted on half the windows, measured on the other half.\n"]
        for key, v in o.items():
            if key != "windows":
                out.append(f"- {key}: " + (json.dumps(v) if isinstance(v, dict) else f"{v}"))
        out.append("")
    for key, what in (("probe", "the probe's error"), ("gap", "the forecast gap"), ("transfer", "the transfer rate")):
        if key in result:
            out += [f"## Does {what} predict the closing error?\n",
                    f"{result[key]['windows']} windows; Spearman rank correlation by the window's first step.\n",
                    f"| steps | windows | Spearman | median {what[4:]} | median closing error |", "|---|---:|---:|---:|---:|"]
            for z, v in result[key]["zones"].items():
                out.append(f"| {z} | {v['windows']} | {v['spearman']:.2f} | {v['median_probe']:.3f} | {v['median_closing']:.3f} |")
            out.append("")
    if "depth" in result:
        by = result["depth"]["by_block"]
        zones = list(next(iter(by.values()))["zones"])
        out += ["## Does the probe at deep block j predict the closing error?\n",
                f"{next(iter(by.values()))['windows']} windows; Spearman rank correlation by the window's first step "
                "(block 0 is the probe of the section above).\n", "| block | " + " | ".join(f"steps {z}" for z in zones) + " |",
                "|---:|" + "---:|" * len(zones)]
        for j, v in by.items():
            out.append(f"| {j} | " + " | ".join(f"{v['zones'][z]['spearman']:.2f}" for z in zones) + " |")
        out.append("")
    if "latency" in result:
        out += ["## Wall-clock at batch 1 (report set's first 8 images, 2 rounds, interleaved)\n",
                f"Models: {result['latency'][0]['models']}.\n",
                "| method | median ms / image | speed-up | target evals | ms in target calls | draft calls | ms in draft calls | ms in the sampler |",
                "|---|---:|---:|---:|---:|---:|---:|---:|"]
        for r in result["latency"]:
            out.append(f"| {r['method']} | {r['median_ms']:.1f} | {r['speedup']:.2f}x | {r['target_evals']:.1f} | "
                       f"{r.get('target_ms', math.nan):.1f} | {r.get('draft_calls', math.nan):.1f} | "
                       f"{r.get('draft_ms', math.nan):.1f} | {r.get('sampler_ms', math.nan):.1f} |")
        out.append("")
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/tail_study"))
    ap.add_argument("--images", type=int, default=96, help="images per set (default 96: every prompt twice)")
    ap.add_argument("--batch", type=int, default=48)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--sections", default=",".join(SECTIONS))
    args = ap.parse_args(argv)
    sections = [s for s in args.sections.split(",") if s]
    bad = [s for s in sections if s not in SECTIONS]
    if bad or args.images < 1:
        ap.error(f"unknown sections {bad} (have {SECTIONS})" if bad else "--images must be >= 1")
    torch.set_num_threads(args.threads)
    (args.out / "cache").mkdir(parents=True, exist_ok=True)
    path = args.out / "tail_study.json"
    result = json.loads(path.read_text()) if path.exists() else {}
    result["machine"] = f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}, " \
                        f"python {platform.python_version()}"
    pipe = TinyPipeline.from_pretrained(names=("target",))
    with torch.inference_mode():
        t0 = time.time()
        if {"where", "candidates", "probe", "gap", "transfer", "depth", "partial", "variable", "forecasts",
                "grain", "output", "phase", "forecast_accurate", "accurate", "corrected", "corrected_prediction",
                "corrected_accurate", "corrected_accurate_draft", "corrected_order", "corrected_cubic", "corrected_variants", "corrected_power", "corrected_one_step", "interpolation_offline", "corrected_hindsight", "faithful_candidates", "closing_shift", "closing_shift_offline", "corrected_sizing", "last_step", "last_step_candidates"} & set(sections):
            cal = ImageSet(pipe, CALIBRATION_START, args.images, args.out / "cache", args.batch)
            # the larger calibration set of faithful_candidates keeps its own seeds' record
            seeds_key = ("faithful_candidates_seeds" if sections in (["faithful_candidates"], ["last_step_candidates"])
                         else "calibration_seeds")
            result[seeds_key] = [cal.seeds[0], cal.seeds[-1]]
        for name in sections:
            print(f"== {name}", flush=True)
            if name in ("forecast_video", "corrected_video", "corrected_order_video", "corrected_variants_video",
                        "last_step_video"):
                result[name] = {"forecast_video": forecast_video, "corrected_video": corrected_video,
                                "corrected_order_video": corrected_order_video,
                                "corrected_variants_video": corrected_variants_video,
                                "last_step_video": last_step_video}[name](
                    args.images, 8, args.out / "cache")
            elif name in ("intents", "forecast_report", "corrected_report", "corrected_order_report",
                          "corrected_accurate_unipc_report", "corrected_variants_report", "corrected_hindsight_report",
                          "faithful_candidates_report", "last_step_report", "latency"):
                rep = ImageSet(pipe, REPORT_START, args.images, args.out / "cache", args.batch)
                seeds_key = {"forecast_report": "forecast_report_seeds", "corrected_report": "corrected_report_seeds",
                             "corrected_order_report": "corrected_report_seeds",
                             "corrected_accurate_unipc_report": "corrected_report_seeds",
                             "corrected_variants_report": "corrected_report_seeds",
                             "corrected_hindsight_report": "corrected_report_seeds",
                             "faithful_candidates_report": "corrected_report_seeds",
                             "last_step_report": "corrected_report_seeds"}
                result[seeds_key.get(name, "report_seeds")] = [rep.seeds[0], rep.seeds[-1]]
                result[name] = {"intents": intents, "forecast_report": forecast_report, "corrected_report": corrected_report,
                                "corrected_order_report": corrected_order_report,
                                "corrected_accurate_unipc_report": corrected_accurate_unipc_report,
                                "corrected_variants_report": corrected_variants_report,
                                "corrected_hindsight_report": corrected_hindsight_report,
                                "faithful_candidates_report": faithful_candidates_report,
                                "last_step_report": last_step_report,
                                "latency": latency}[name](rep)
            else:
                result[name] = {"where": where, "candidates": candidates, "probe": probe, "gap": gap,
                                "transfer": transfer, "depth": depth, "partial": partial, "variable": variable,
                                "forecasts": forecasts, "grain": grain, "output": output, "phase": phase, "forecast_accurate": forecast_accurate,
                                "accurate": accurate, "corrected": corrected, "corrected_prediction": corrected_prediction,
                                "corrected_accurate": corrected_accurate, "corrected_accurate_draft": corrected_accurate_draft,
                                "corrected_order": corrected_order, "corrected_cubic": corrected_cubic,
                                "corrected_variants": corrected_variants, "corrected_power": corrected_power,
                                "corrected_one_step": corrected_one_step,
                                "interpolation_offline": interpolation_offline,
                                "corrected_hindsight": corrected_hindsight,
                                "faithful_candidates": faithful_candidates, "closing_shift": closing_shift,
                                "closing_shift_offline": closing_shift_offline,
                                "corrected_sizing": corrected_sizing, "last_step": last_step,
                                "last_step_candidates": last_step}[name](cal)
            path.write_text(json.dumps(result, indent=1))
            (args.out / "tail_study.md").write_text(markdown(result))
        print(f"done in {time.time() - t0:.0f} s; {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
