"""sdsv beside the caches users already run (``sdsv eval --experiment peers``).

On the trained tiny ``FluxPipeline`` (:mod:`sdsv.tiny.flux`), every method runs through its own
public API on the same prompts and seeds: the pipeline alone (50 steps and fewer),
``sdsv.enable`` (faithful, accurate, calibrated), each diffusers cache hook
(``transformer.enable_cache(...)``) and cache-dit's DBCache with and without its calibrators
(``cache_dit.enable_cache(pipe, ...)``), each at its documented defaults and at more settings
that trace its speed-quality curve.

Per method: the transformer's deep work per image, counted as the multiply-accumulates of its
``nn.Linear`` layers (every block's projections and MLPs; a cache that skips a block, an attention
or a feed-forward inside a call skips its Linear calls, so what it skipped is not counted), in
units of one full evaluation of one image; the wall-clock speed-up over the 50-step pipeline
(methods timed in turns, batch by batch, in one run; VAE decode included); PSNR in float
(mean / 5th / 1st percentile / worst image) and SSIM against the 50-step output (fidelity) and
against a converged solution (accuracy: the pipeline with DPM-Solver++(2M) at twice the steps).
Images are compared in pixels in [0, 1], decoded by the pipeline itself.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from tqdm import tqdm

from ..metrics import psnr, ssim, tail_summary
from ..policies import FixedInterval
from ..policies.base import shortened

#: the report set's first seed (the tail's and the tables' seeds are below 40 000); the
#: calibration set (what MagCache and sdsv.calibrate are fitted on) follows it
PEER_SEED = 40_000
REFERENCE_STEPS = 50
CONVERGED_FACTOR = 2  # the converged solution: DPM-Solver++(2M) with twice the reference's steps
GUIDANCE = 3.0


# ---- the methods ------------------------------------------------------------------------------
@dataclass
class Row:
    """One method at one setting: how to put it on the pipeline and take it off again."""

    name: str
    family: str                       # "pipeline", "sdsv", "diffusers <cache>", "cache-dit <calibrator>"
    steps: int = REFERENCE_STEPS
    attach: Callable | None = None    # attach(pipe) through the method's own API
    detach: Callable | None = None
    scheduler: Callable | None = None  # a scheduler for this row (the converged reference)
    notes: str = ""
    counted: tuple = ()               # models besides the pipeline's transformer whose work counts (a draft)
    pipeline: str = "main"            # rows on another pipeline instance: cache-dit's disable_cache
    #                                   leaves its patched transformer forward, on which diffusers'
    #                                   FirstBlockCache then fails
    verify: Callable | None = None    # verify(): raises if the method did not run as configured
    key: str = ""                     # what the name does not say but the images depend on (an intent's
    #                                   windows and forecast): a cached batch is reused only with the same

    @property
    def cache_key(self) -> str:
        """The row's entry in a batch's cache file: its name, and its key when it has one."""
        return f"{self.name} [{self.key}]" if self.key else self.name


def pipeline_rows(steps: int = REFERENCE_STEPS) -> list[Row]:
    """The pipeline alone: ``steps`` (the reference) and fewer (25, 15, 12, 10 of 50)."""
    fewer = sorted({max(1, round(steps * f)) for f in (0.5, 0.3, 0.24, 0.2)} - {steps}, reverse=True)
    return [Row(f"pipeline, {n} steps", "pipeline", n) for n in (steps, *fewer)]


def converged_row(steps: int = REFERENCE_STEPS) -> Row:
    def dpm(pipe):
        from diffusers import DPMSolverMultistepScheduler

        # FluxPipeline always passes a resolution shift mu, which this scheduler takes only with
        # dynamic shifting: its sigmas are then spaced as shift ~1.6 at 64 tokens; the ODE is the same
        return DPMSolverMultistepScheduler(algorithm_type="dpmsolver++", solver_order=2, prediction_type="flow_prediction",
                                           use_flow_sigmas=True, flow_shift=1.0, use_dynamic_shifting=True,
                                           time_shift_type="exponential")
    n = CONVERGED_FACTOR * steps
    return Row(f"converged: DPM-Solver++(2M), {n} steps", "reference", n, scheduler=dpm)


def sdsv_rows(calibrated_policy=None, steps: int = REFERENCE_STEPS, draft=None) -> list[Row]:
    """The faithful default, the accurate intent at its share of the steps (26 of 50), a policy
    calibrated on the calibration set (or the calibration's error, reported as the row's reason
    for not running), and SDSV's batched verification with a trained ``draft`` (the paper's
    Table 1 on a real pipeline class; its work counted too)."""
    import sdsv
    from ..intents import INTENTS

    accurate = INTENTS["accurate"].num_steps(steps)
    rows = [Row("sdsv faithful", "sdsv", steps, attach=lambda p: sdsv.enable(p), detach=sdsv.disable,
                key=intent_key("faithful", steps)),
            Row(f"sdsv accurate, {accurate} steps", "sdsv", accurate, attach=lambda p: sdsv.enable(p, intent="accurate"),
                detach=sdsv.disable, key=intent_key("accurate", accurate))]
    if isinstance(calibrated_policy, Exception):  # calibration found no tolerance: reported as not run

        def refuse(p, e=calibrated_policy):
            raise e
        rows.append(Row("sdsv calibrated", "sdsv", steps, attach=refuse))
    elif calibrated_policy is not None:
        rows.append(Row("sdsv calibrated", "sdsv", steps, attach=lambda p: sdsv.enable(p, policy=calibrated_policy),
                        detach=sdsv.disable))
    if draft is not None:
        rows.append(Row("sdsv, lite draft (SDSV verification)", "sdsv", steps, attach=lambda p: sdsv.enable(p, draft=draft),
                        detach=sdsv.disable, counted=(draft,)))
    return rows


def intent_key(intent: str, steps: int) -> str:
    """What an intent's row runs at ``steps`` steps (its windows and forecast), as a row's cache key:
    a changed default is sampled again, not read from a cached batch."""
    from ..intents import INTENTS

    it = INTENTS[intent]
    return f"{it.windows(steps).describe()}, {it.forecast!r}"


def sdsv_cache_rows(steps: int = REFERENCE_STEPS) -> list[Row]:
    """The project's own unverified cache at diffusers' TaylorSeer settings (3 full steps, then the
    target every ``i``-th step, the deep blocks' residual forecast by the line in sigma between):
    at its own steps (``FixedInterval``: two forecasts right after the warm-up) and at
    TaylorSeer's (:class:`TaylorSeerSteps`: one)."""
    import sdsv
    from ..forecast import LINE

    rows = []
    for policy, label in ((FixedInterval, "sdsv cache every {i} (line, 3 warm-up steps)"),
                          (TaylorSeerSteps, "sdsv cache every {i} at TaylorSeer's steps (line)")):
        rows += [Row(label.format(i=i), "sdsv cache", steps, detach=sdsv.disable,
                     attach=lambda p, i=i, policy=policy: sdsv.enable(p, policy=policy(steps, every=i, warmup=3),
                                                                       forecast=LINE))
                 for i in (5, 3, 2)]
    return rows


@dataclass(frozen=True)
class TaylorSeerSteps(FixedInterval):
    """``FixedInterval`` at the steps diffusers' TaylorSeer hook computes: ``warmup`` target steps,
    then the target at step ``warmup + 1`` and every ``every``-th step after it (its
    ``(step - disable_cache_before_step - 1) % cache_interval == 0``), the forecast between. The
    last step is a target step here even where TaylorSeer forecasts it (a window ends with the
    target): one more evaluation when ``(num_steps - 2 - warmup) % every != 0``."""

    name: str = "taylorseer_steps"

    def window_at(self, step: int) -> tuple[str, int]:
        if step < self.warmup:
            return "target", 0
        nxt = step + (self.warmup + 1 - step) % self.every
        return ("target", 0) if nxt == step else shortened("unverified", nxt - step, step, self.num_steps)


def _diffusers(name: str, family: str, make_config: Callable, steps: int = REFERENCE_STEPS, notes: str = "",
               verify: Callable | None = None) -> Row:
    return Row(name, f"diffusers {family}", steps, attach=lambda p: p.transformer.enable_cache(make_config(p)),
               detach=lambda p: p.transformer.disable_cache(), notes=notes, verify=verify)


class FailOpenWatch(logging.Handler):
    """Catches the warning a diffusers cache hook logs when it *fails open* (runs every block,
    caching nothing) instead of raising: SeaCache needs the scheduler's step, sigma and step count
    in ``transformer.cache_context(...)``, which FluxPipeline's loop (diffusers 0.42) does not pass.
    A row that failed open is reported as not run, with diffusers' reason, not as a cache that
    happened to skip nothing."""

    def __init__(self, logger_name: str):
        super().__init__(logging.WARNING)
        self.logger, self.messages = logging.getLogger(logger_name), []
        self.logger.addHandler(self)
        if self.logger.getEffectiveLevel() > logging.WARNING:  # a quieter diffusers verbosity must not hide it
            self.logger.setLevel(logging.WARNING)

    def emit(self, record: logging.LogRecord) -> None:
        if "fail-open" in record.getMessage():
            self.messages.append(record.getMessage())

    def verify(self) -> None:
        if self.messages:
            msg = self.messages[0]
            self.messages.clear()
            raise RuntimeError(f"ran in fail-open mode (every block computed, nothing cached): {msg}")


def diffusers_rows(mag_ratios: list[float] | None, steps: int = REFERENCE_STEPS) -> list[Row]:
    """diffusers' cache hooks: the documented defaults first, then settings along each curve."""
    from diffusers import hooks as H

    ts = lambda p: p.current_timestep  # noqa: E731 - the callback the docs pass to PAB / FasterCache
    def row(name, family, make_config, notes=""):
        return _diffusers(name, family, make_config, steps, notes)

    rows = [row(f"FirstBlockCache threshold={t}{' (default)' if t == 0.05 else ''}", "FirstBlockCache",
                lambda p, t=t: H.FirstBlockCacheConfig(threshold=t)) for t in (0.05, 0.1, 0.2, 0.4)]
    for interval, before in ((5, 3), (3, 3), (2, 3)):
        rows.append(row(f"TaylorSeerCache interval={interval}{' (default)' if interval == 5 else ''}", "TaylorSeerCache",
                               lambda p, i=interval, b=before: H.TaylorSeerCacheConfig(cache_interval=i, disable_cache_before_step=b,
                                                                                      taylor_factors_dtype=torch.float32)))
    # its lite mode: every block skipped at a predicted step, the transformer's output (proj_out)
    # forecast instead — the grain of sdsv's own cache rows (the whole deep residual), so the pair
    # compares the forecasts at the same deep work
    for interval in (5, 3, 2):
        rows.append(row(f"TaylorSeerCache interval={interval}, lite mode", "TaylorSeerCache (lite)",
                        lambda p, i=interval: H.TaylorSeerCacheConfig(cache_interval=i, disable_cache_before_step=3,
                                                                      taylor_factors_dtype=torch.float32,
                                                                      use_lite_mode=True)))
    if mag_ratios is not None:
        # past the default the cap on consecutive skips (K, max_skip_steps) binds: a higher threshold
        # alone changes nothing, so the curve raises both, as the MagCache paper's settings do
        for t, k in ((0.06, 3), (0.12, 4), (0.24, 6)):
            rows.append(row(f"MagCache threshold={t}, K={k}{' (default)' if t == 0.06 else ''}", "MagCache",
                                   lambda p, t=t, k=k: H.MagCacheConfig(threshold=t, max_skip_steps=k,
                                                                        mag_ratios=mag_ratios, num_inference_steps=steps),
                                   notes="mag_ratios calibrated on the calibration set as its docs say"))
    sea = FailOpenWatch("diffusers.hooks.sea_cache")
    for t in (0.25, 0.1, 0.5):
        rows.append(_diffusers(f"SeaCache threshold={t}{' (default)' if t == 0.25 else ''}", "SeaCache",
                               lambda p, t=t: H.SeaCacheConfig(threshold=t), steps, verify=sea.verify))
    for skip in (2, 3, 4):
        rows.append(row(f"PyramidAttentionBroadcast skip={skip}", "PyramidAttentionBroadcast",
                               lambda p, s=skip: H.PyramidAttentionBroadcastConfig(
                                   spatial_attention_block_skip_range=s, current_timestep_callback=lambda: ts(p))))
    for skip in (2, 3, 4):
        rows.append(row(f"FasterCache skip={skip}{' (default)' if skip == 2 else ''}", "FasterCache",
                               lambda p, s=skip: H.FasterCacheConfig(
                                   spatial_attention_block_skip_range=s, is_guidance_distilled=True,
                                   current_timestep_callback=lambda: ts(p))))
    return rows


def cache_dit_rows(depth_blocks: int, steps: int = REFERENCE_STEPS) -> list[Row]:
    """cache-dit's DBCache, Fn scaled from its default (8 of FLUX.1's 57 blocks) to this depth."""
    import cache_dit as cd

    fn = max(1, round(8 * depth_blocks / 57))
    calibrators = {"none": lambda: None, "TaylorSeer": lambda: cd.TaylorSeerCalibratorConfig(taylorseer_order=1),
                   "FoCa": lambda: cd.FoCaCalibratorConfig(), "DMD": lambda: cd.DMDCalibratorConfig()}
    rows = []
    for cal, make in calibrators.items():
        for t in (0.08, 0.16, 0.32):
            def attach(p, t=t, make=make):
                cd.enable_cache(p, cache_config=cd.DBCacheConfig(Fn_compute_blocks=fn, Bn_compute_blocks=0,
                                                                 residual_diff_threshold=t), calibrator_config=make())
            rows.append(Row(f"cache-dit DBCache F{fn}B0 r={t}{' (default)' if t == 0.08 else ''}, calibrator {cal}",
                            f"cache-dit {cal}", steps, attach=attach, detach=lambda p: cd.disable_cache(p),
                            pipeline="cache-dit"))
    return rows


def calibrate_mag_ratios(pipe, prompts, seeds, batch: int, steps: int = REFERENCE_STEPS) -> list[float]:
    """MagCache's calibration as its docs describe it: one run with ``calibrate=True``, the printed
    ratios read back (one run of ``batch`` calibration images; the ratio is their mean)."""
    from diffusers import hooks as H

    pipe.transformer.enable_cache(H.MagCacheConfig(calibrate=True, num_inference_steps=steps))
    buf = io.StringIO()
    try:
        with contextlib.redirect_stdout(buf):
            _draw(pipe, prompts[:batch], seeds[:batch], steps)
    finally:
        pipe.transformer.disable_cache()
    found = re.findall(r"\[([-0-9.,\se]+)\]", buf.getvalue())
    if not found:
        raise RuntimeError(f"MagCache calibration printed no ratios: {buf.getvalue()[:200]!r}")
    return [float(v) for v in found[-1].split(",")]


# ---- counting the deep work -------------------------------------------------------------------
class LinearWork:
    """Multiply-accumulates of the modules' ``nn.Linear`` layers, counted with forward hooks."""

    def __init__(self, *modules: torch.nn.Module):
        self.macs = 0
        self._handles = [m.register_forward_hook(self._count) for module in modules for m in module.modules()
                         if isinstance(m, torch.nn.Linear)]

    def _count(self, mod, inputs, output) -> None:
        self.macs += inputs[0].numel() // mod.in_features * mod.in_features * mod.out_features

    def remove(self) -> None:
        for h in self._handles:
            h.remove()


def macs_per_evaluation(pipe) -> int:
    """One full transformer evaluation of one image (one pipeline step at batch 1)."""
    work = LinearWork(pipe.transformer)
    try:
        _draw(pipe, ["a red circle"], [0], 1)
    finally:
        work.remove()
    return work.macs


# ---- running ----------------------------------------------------------------------------------
def _draw(pipe, prompts, seeds, steps: int) -> torch.Tensor:
    from ..tiny.flux.components import call_kwargs

    gens = [torch.Generator().manual_seed(int(s)) for s in seeds]
    return pipe(list(prompts), generator=gens, output_type="pt", **call_kwargs(steps=steps, guidance=GUIDANCE)).images.float()


@dataclass
class RowRun:
    images: list = field(default_factory=list)
    seconds: float = 0.0
    macs: int = 0
    error: str | None = None


def _run_batch(pipe, row: Row, prompts, seeds) -> tuple[torch.Tensor, float, int]:
    """``(images, seconds, deep MACs)`` of ``row`` on one batch, the method put on and taken off."""
    own_scheduler = pipe.scheduler
    try:
        if row.scheduler is not None:
            pipe.scheduler = row.scheduler(pipe)
        if row.attach is not None:
            row.attach(pipe)
        work = LinearWork(pipe.transformer, *row.counted)
        try:
            t0 = time.perf_counter()
            images = _draw(pipe, prompts, seeds, row.steps)
            seconds = time.perf_counter() - t0
            if row.verify is not None:
                row.verify()
            return images, seconds, work.macs
        finally:
            work.remove()
    finally:
        if row.detach is not None:
            with contextlib.suppress(Exception):
                row.detach(pipe)
        pipe.scheduler = own_scheduler


class Runs(dict):
    """``{row name: RowRun}`` of one batch size, with the machine time its batches took (those
    computed now and those read back from the cache) and the batches this shard left to others."""

    compute_seconds: float = 0.0
    skipped_batches: int = 0


def run_rows(pipes: dict, rows: list[Row], prompts, seeds, batch: int, desc: str, progress: bool = True,
             cache: Path | None = None, shard: tuple[int, int] | None = None) -> Runs:
    """Every row on every batch, the rows in turns within each batch (so a slow minute of the
    machine falls on every method alike), each on ``pipes[row.pipeline]``. A row that fails says
    why and is left out. With ``cache`` (a folder), each finished batch is saved there (a failed
    row's reason too) and a rerun picks up where an interrupted one stopped (same prompts and
    seeds): it reads the rows a batch's file holds and samples only those it lacks. With ``shard=(k, n)``
    only the batches whose index is ``k`` modulo ``n`` are sampled (n processes fill one cache;
    a run without a shard then reads them all)."""
    runs = Runs({r.name: RowRun() for r in rows})
    bar = tqdm(total=len(prompts) * len(rows), desc=desc, unit="img", mininterval=5.0, disable=not progress)
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
    for i in range(0, len(prompts), batch):
        p, s = prompts[i:i + batch], seeds[i:i + batch]
        path = cache / f"batch{batch}_{i:06d}.pt" if cache is not None else None
        done = torch.load(path) if path is not None and path.exists() else None
        if done is not None and done["seeds"] != list(s):
            done = None  # another run's file: compute again
        results = dict(done["rows"]) if done is not None else {}
        # rows the file lacks (a row added or changed since, or none saved yet) are sampled by this batch's shard
        missing = [r for r in rows if r.cache_key not in results and runs[r.name].error is None]
        if missing and shard is not None and (i // batch) % shard[1] != shard[0]:
            runs.skipped_batches += 1
            bar.update(len(p) * len(rows))
            continue
        t_batch = time.perf_counter()
        for row in rows:
            run, key = runs[row.name], row.cache_key
            if key not in results and run.error is None:
                try:
                    results[key] = _run_batch(pipes[row.pipeline], row, p, s)
                except Exception as e:  # noqa: BLE001 - a peer that cannot run here is reported, not fatal
                    results[key] = f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:300]}"
            elif key not in results:  # failed on an earlier batch: the file still says why
                results[key] = run.error
            got = results[key]
            if isinstance(got, str):
                run.error = run.error or got
            elif run.error is None:
                run.images.append(got[0])
                run.seconds += got[1]
                run.macs += got[2]
            bar.update(len(p))
        wall = (done.get("wall_s", 0.0) if done is not None else 0.0) + (
            time.perf_counter() - t_batch if missing else 0.0)
        runs.compute_seconds += wall
        if path is not None and missing:
            torch.save({"seeds": list(s), "rows": results, "wall_s": wall}, path)
    bar.close()
    return runs


def summarise(rows: list[Row], runs: dict[str, RowRun], ref: str, converged: str, macs_one: int) -> list[dict]:
    """One dict per row: deep work, speed-up, the tail against both references, dominance."""
    ref_img, conv_img = torch.cat(runs[ref].images), torch.cat(runs[converged].images)
    out = []
    for row in rows:
        run = runs[row.name]
        d = {"method": row.name, "family": row.family, "steps": row.steps, "notes": row.notes}
        if run.error is not None:
            d["error"] = run.error
            out.append(d)
            continue
        img = torch.cat(run.images)
        n = img.shape[0]
        d["deep_evals"] = run.macs / (n * macs_one)
        d["speedup"] = runs[ref].seconds / run.seconds
        d["seconds_per_image"] = run.seconds / n
        for y, other in (("fid", ref_img), ("acc", conv_img)):
            if row.name == ref and y == "fid" or row.name == converged and y == "acc":
                continue
            t = tail_summary(psnr(img, other))
            d.update({f"{y}_{k}": v for k, v in t.items()})
            d[f"{y}_ssim"] = ssim(img, other).mean().item()
        out.append(d)
    for y in ("fid", "acc"):
        for d in out:
            if f"{y}_p5" in d and d["family"] != "reference":
                d[f"{y}_dominated_by"] = [o["method"] for o in out if o is not d and f"{y}_p5" in o
                                          and o["family"] != "reference" and o["speedup"] >= d["speedup"]
                                          and o[f"{y}_p5"] >= d[f"{y}_p5"]
                                          and (o["speedup"] > d["speedup"] or o[f"{y}_p5"] > d[f"{y}_p5"])]
    return out


def save(out: Path, name: str, rows: list[dict], meta: dict) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.json"
    path.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    return path


# ---- the experiment ---------------------------------------------------------------------------
def all_rows(pipe, calibrated_policy, mag_ratios, steps: int = REFERENCE_STEPS, draft=None) -> list[Row]:
    depth = len(pipe.transformer.transformer_blocks) + len(pipe.transformer.single_transformer_blocks)
    rows = [*pipeline_rows(steps), converged_row(steps), *sdsv_rows(calibrated_policy, steps, draft),
            *sdsv_cache_rows(steps), *diffusers_rows(mag_ratios, steps)]
    try:
        rows += cache_dit_rows(depth, steps)
    except ImportError:  # cache-dit is an optional extra: pip install 'sdsv[peers]'
        pass
    return rows


def _plot(tables: dict[str, list[dict]], path: Path) -> Path:
    """One panel per (batch, yardstick): speed-up against the 5th percentile (filled) and the mean
    (hollow), one colour per method family, sdsv's rows labelled."""
    from .report import _pyplot

    plt = _pyplot()
    fig, axes = plt.subplots(len(tables), 2, figsize=(14, 5.6 * len(tables)), squeeze=False)
    families = sorted({d["family"] for rows in tables.values() for d in rows if d["family"] != "reference"})
    palette = plt.get_cmap("tab20").colors  # one colour per family: the default cycle has 10 for 13 families
    colours = {fam: palette[i % len(palette)] for i, fam in enumerate(families)}
    for (batch, rows), ax_row in zip(tables.items(), axes):
        for ax, (y, what) in zip(ax_row, (("fid", "fidelity: vs the 50-step output"), ("acc", "accuracy: vs the converged solution"))):
            for fam in families:
                pts = sorted((d for d in rows if d["family"] == fam and f"{y}_p5" in d), key=lambda d: d["speedup"])
                if not pts:
                    continue
                c = colours[fam]
                ax.plot([d["speedup"] for d in pts], [d[f"{y}_p5"] for d in pts], marker="o", ls="--" if fam == "pipeline" else "none",
                        color=c, ms=7 if fam == "sdsv" else 5, label=fam)
                for d in pts:
                    ax.plot([d["speedup"]] * 2, [d[f"{y}_p5"], d[f"{y}_mean"]], color=c, lw=0.6, alpha=0.5)
                    ax.plot([d["speedup"]], [d[f"{y}_mean"]], marker="o", ms=3, color=c, mfc="white")
                    if fam in ("sdsv", "pipeline"):
                        ax.annotate(d["method"].replace("pipeline, ", ""), (d["speedup"], d[f"{y}_p5"]),
                                    textcoords="offset points", xytext=(4, -9), fontsize=6)
            ax.set_title(f"{batch}: {what}\nfilled: 5th percentile, hollow: mean", fontsize=9)
            ax.set_xlabel("wall-clock speed-up over the 50-step pipeline")
            ax.set_ylabel("PSNR, dB")
            ax.grid(alpha=0.3)
    handles, labels = axes[0][1].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=5, fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0.09, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _worst_grid(rows: list[dict], runs: dict[str, RowRun], ref: str, prompts, path: Path) -> Path:
    """Each method's worst image (against the 50-step output) beside the 50-step image of the same
    prompt and seed: columns are the methods, the top row their worst image, the bottom row the
    reference."""
    from .report import _pyplot

    plt = _pyplot()
    ref_img = torch.cat(runs[ref].images)
    shown = [d for d in rows if "fid_worst" in d]
    fig, axes = plt.subplots(2, len(shown), figsize=(1.25 * len(shown) + 1, 3.4), squeeze=False)
    for c, d in enumerate(shown):
        img = torch.cat(runs[d["method"]].images)
        i = int(psnr(img, ref_img).argmin())
        for r, pic in enumerate((img[i], ref_img[i])):
            ax = axes[r][c]
            ax.imshow(pic.clamp(0, 1).permute(1, 2, 0).numpy(), interpolation="nearest")
            ax.set_xticks([]), ax.set_yticks([])
        axes[0][c].set_title(f"{d['method']}\n{d['fid_worst']:.1f} dB, '{prompts[i]}'", fontsize=5)
    axes[0][0].set_ylabel("worst image", fontsize=7)
    axes[1][0].set_ylabel("50 steps", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


COLUMNS = [("method", "method", "s"), ("deep_evals", "deep evals / image", ".1f"), ("speedup", "speed-up", ".2f"),
           ("fid_mean", "fid. mean", ".2f"), ("fid_p5", "fid. p5", ".2f"), ("fid_p1", "fid. p1", ".2f"),
           ("fid_worst", "fid. worst", ".2f"), ("fid_ssim", "fid. SSIM", ".4f"), ("acc_mean", "acc. mean", ".2f"),
           ("acc_p5", "acc. p5", ".2f"), ("acc_worst", "acc. worst", ".2f"),
           ("fid_dominated_by", "fid. dominated", lambda v: str(len(v))),
           ("acc_dominated_by", "acc. dominated", lambda v: str(len(v)))]


def peers(out: Path, images: int, batch1_images: int, calibration_images: int = 48, batch: int = 8,
          steps: int = REFERENCE_STEPS, flux_dir: Path | None = None, progress: bool = True,
          shard: tuple[int, int] | None = None) -> tuple[str, dict, list[Path]]:
    """Run every row at ``batch`` on ``images`` report images and at batch 1 on the first
    ``batch1_images`` of them (0: batch 1 left out); returns (markdown, results, files). With
    ``shard=(k, n)`` only this process's share of the batches is sampled into ``out/cache`` and nothing is summarised
    (returns a one-line note): n such processes, then one run without a shard, use n cores."""
    import sdsv

    from ..tiny.flux.components import PIPELINE_DIR, TEXT_LEN, load_pipeline
    from .report import md_table, provenance
    from .runner import balanced_prompts

    pipes = {name: load_pipeline(flux_dir or PIPELINE_DIR) for name in ("main", "cache-dit")}
    for p in pipes.values():
        p.set_progress_bar_config(disable=True)
    pipe = pipes["main"]
    _quiet_cache_dit()
    n_all = images + calibration_images
    prompts, seeds = balanced_prompts(n_all), [PEER_SEED + i for i in range(n_all)]
    cal_p, cal_s = prompts[images:], seeds[images:]
    prompts, seeds = prompts[:images], seeds[:images]
    t0 = time.perf_counter()
    mag = calibrated = None
    if cal_p:
        mag = calibrate_mag_ratios(pipe, cal_p, cal_s, min(batch, len(cal_p)), steps)
        try:
            calibrated = sdsv.calibrate(pipe, cal_p, target_psnr=CALIBRATED_P5, num_steps=steps, seed=cal_s[0],
                                        height=32, width=32, max_sequence_length=TEXT_LEN,
                                        guidance_scale=GUIDANCE).policy
        except sdsv.CalibrationError as e:  # the row says why it did not run; the others still do
            calibrated = e
    draft_dir = Path(flux_dir or PIPELINE_DIR) / "draft_lite"
    draft = None
    if draft_dir.exists():
        from diffusers import FluxTransformer2DModel
        draft = FluxTransformer2DModel.from_pretrained(str(draft_dir)).eval()
    rows = all_rows(pipe, calibrated, mag, steps, draft)
    macs_one = macs_per_evaluation(pipe)
    ref, conv = rows[0].name, next(r.name for r in rows if r.family == "reference")
    tables, files, all_runs = {}, [], {}
    sizes = [(f"batch {batch}", images, batch)] + ([("batch 1", batch1_images, 1)] if batch1_images else [])
    for label, n, b in sizes:
        runs = run_rows(pipes, rows, prompts[:n], seeds[:n], b, desc=f"peers, {label}", progress=progress,
                        cache=out / "cache", shard=shard)
        all_runs[label] = runs
        if shard is None:
            tables[label] = summarise(rows, runs, ref, conv, macs_one)
    if shard is not None:
        note = (f"peers shard {shard[0]}/{shard[1]}: {sum(r.compute_seconds for r in all_runs.values()):.0f} s of "
                f"batches in {out / 'cache'}; run again without --peers-shard to summarise")
        return note, {}, []
    meta = {"images": images, "batch1_images": batch1_images, "batch": batch, "steps": steps,
            "seeds": [seeds[0], seeds[-1]], "calibration_seeds": [cal_s[0], cal_s[-1]] if cal_s else None,
            "calibrated_target_p5": CALIBRATED_P5, "mag_ratios": mag, "macs_per_evaluation": macs_one,
            "seconds": round(time.perf_counter() - t0),
            "batch_seconds": {k: round(r.compute_seconds) for k, r in all_runs.items()},
            "provenance": provenance(None), "counting": LinearWork.__doc__}
    out.mkdir(parents=True, exist_ok=True)
    files.append(save(out, "peers", tables, meta))
    files.append(_plot(tables, out / "peers.png"))
    files.append(_worst_grid(tables[f"batch {batch}"], all_runs[f"batch {batch}"], ref, prompts, out / "peers_worst.png"))
    md = [f"## sdsv beside the caches users run: tiny FluxPipeline, {images} images at batch {batch}, "
          f"{f'{batch1_images} at batch 1' if batch1_images else 'batch 1 not run'}, {steps} steps\n",
          f"seeds {seeds[0]}..{seeds[-1]} (chosen on nothing); calibration seeds {meta['calibration_seeds']}; "
          f"sampling {sum(meta['batch_seconds'].values())} s of machine time over the batches "
          f"({', '.join(f'{k}: {v} s' for k, v in meta['batch_seconds'].items())}; a resumed or sharded run adds up "
          f"every process's batches), this process {meta['seconds']} s; {meta['provenance']['machine']}; "
          f"{meta['provenance']['versions']}\n"]
    for label, t in tables.items():
        md += [f"### {label}\n", md_table(t, COLUMNS), ""]
        errors = [f"- {d['method']}: {d['error']}" for d in t if "error" in d]
        if errors:
            md += ["Rows that could not run:", *errors, ""]
    text = "\n".join(md) + "\n"
    (out / "peers.md").write_text(text)
    files.append(out / "peers.md")
    return text, tables, files


CALIBRATED_P5 = 32.0  # dB against the 50-step output, 5th percentile on the calibration set


def _quiet_cache_dit() -> None:
    """cache-dit logs every enable at INFO level; the run's progress bar says enough."""
    import logging

    for name in list(logging.root.manager.loggerDict):
        if "cache_dit" in name.lower() or "cache-dit" in name.lower():
            logging.getLogger(name).setLevel(logging.WARNING)
