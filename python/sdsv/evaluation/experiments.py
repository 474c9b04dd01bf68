"""The paper's tables and figures on the tiny models: ``table1``, ``table2``,
``warmup``, ``pareto``. Each returns its rows, its markdown (setup and provenance header
included) and the files it wrote. Reference-based metrics (FD-tiny, LPIPS-tiny, PSNR, SSIM)
compare with the target-only images of the same prompts and seeds, as the paper does; PSNR
also as its minimum over the images (the worst prompt). Next to the paper's rows sit the
training-free self-draft's schedules and the baselines a user would pick instead (the target
alone with fewer Euler or DPM-Solver++(2M) steps, the unverified forecast cache), and every
experiment says, computed from its rows, which of them lose on (speedup, worst-image PSNR).
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..acceptance import AcceptanceTest
from .methods import (
    SELF_SDSV_ACCEPT, Method, cache, dominated_by, error_controlled, fewer_steps, on_dpm_methods, sdsv_self,
    self_draft_methods,
)
from ..policies import StagePlan
from .report import header, image_strip, md_table, pareto_plot, provenance
from .runner import Runner

EXPERIMENTS = ("table1", "table2", "warmup", "pareto")


@dataclass
class EvalConfig:
    accept: AcceptanceTest              # the acceptance test of every SDSV method except the pareto sweep
    draft: str = "svd"                  # the draft of table2 and warmup (the paper picks its best, SVD)
    taus: tuple = (0.02, 0.05, 0.1)     # pareto: tau of the acceptance metric, at K2 = 9
    k2s: tuple = (5, 15)                # pareto: other Stage-2 window sizes, at the default tau ...
    k2_verify: tuple = ("endpoints",)   # ... for these verification modes ('full' costs more than the target alone)
    fewer_steps: tuple = (10, 15, 20, 25, 30)  # pareto: the target alone with fewer Euler steps ...
    dpm_steps: tuple = (10, 15, 20, 25)        # ... and with fewer DPM-Solver++(2M) steps
    table_fewer: tuple = ((20, "euler"), (15, "dpm++2m"), (20, "dpm++2m"), (25, "dpm++2m"))  # table2: (steps, solver)
    cache_every: tuple = (2, 3, 4, 5)   # pareto: the unverified self-draft cache, target every n-th step
    tols: tuple = (0.2, 0.3, 0.5, 0.8)  # pareto: error-controlled windows' tolerance
    self_taus: tuple = (0.1, 0.2, 0.3)  # pareto: SDSV with the self-draft, tau of its x0_rms test
    strip_images: int = 6               # warmup: columns of the image strip
    pareto_images: int | None = None    # pareto: the first this many images of the set (None: all)


@dataclass
class ExperimentResult:
    name: str
    markdown: str
    rows: list[dict]
    files: list[Path]


def _setup(r: Runner, cfg: EvalConfig, extra: str = "", n: int | None = None) -> str:
    n = n or r.n
    return (f"{n} images ({len(set(r.prompts[:n]))} prompts 'a <color> <shape>', seeds {r.seeds[0]}..{r.seeds[n - 1]}), "
            f"{r.steps} Euler steps (rows marked dpm++2m: DPM-Solver++(2M), the target alone or with the self-draft), guidance {r.guidance:g}, "
            f"acceptance test {cfg.accept} (the self-draft's SDSV rows state their own), sampled in batches of "
            f"{r.batch}; latency = median time per image at batch 1 over the first {r.latency_n} images, all methods "
            f"interleaved; speedup = target-only latency / latency, measured in this run. FLOPs counted per model call "
            f"(torch FlopCounterMode, attention included, CFG = 2 rows; a self-draft call counts the target's cheap "
            f"parts it runs). PSNR min = the PSNR of the worst image. FD-tiny, IS-tiny, LPIPS-tiny and alignment "
            f"use the shipped tiny classifier, not Inception/CLIP/AlexNet: compare them only within this table. {extra}").strip()


SELF_DRAFT_NOTE = (
    "Draft 'self' = the target forecasting itself, no weights (docs/method.md): a draft call runs the target's "
    "embedding, conditioning and output layer and forecasts its blocks' residual (order 1 in sigma) from the last "
    "target evaluations on the committed trajectory; 'cache' rows keep the forecast unverified, 'error-ctrl' rows "
    "size each sample's next window from the forecast's error measured at the window's closing target call, "
    "'sdsv (self)' rows verify windows as SDSV does.")


def _plans(methods: list[Method]) -> str:
    return "; ".join(f"{m.label}: {m.policy.describe()}" + (f" ({m.accept})" if m.speculates and m.accept else "")
                     for m in methods)


def _target(r: Runner) -> Method:
    return Method("target-only", StagePlan.target_only(r.steps))


def _measure(r: Runner, methods: list[Method], ref: Method, n: int | None = None) -> list[dict]:
    for m in methods:
        r.run(m, n)
    lat = r.latency(methods)
    rows = []
    for m in methods:
        row = {"method": m.label, "plan": m.policy.describe(), "steps": m.policy.num_steps,
               "draft": m.draft if m.policy.uses_draft else None, "solver": m.solver, "family": m.schedule_type,
               "verify": m.verify if m.speculates else None, "accept_test": str(m.accept) if m.speculates else None}
        row.update(r.efficiency(m, lat[m.key], lat[ref.key], ref, n))
        row.update(r.quality(m, ref, n))
        rows.append(row)
    return rows


# ---- who wins on speed and the worst image ---------------------------------------------------
FAMILIES = {"SDSV": "SDSV (verified windows)", "error-controlled": "error-controlled windows",
            "cache": "unverified cache", "target": "the target alone with fewer steps",
            "draft": "a trained draft unverified"}
DOMINATED_KEY = {"speedup": "dominated_by", "flops_speedup": "dominated_by_flops"}


def _names(v: list[str], most: int = 4) -> str:
    return ", ".join(v[:most]) + (f" and {len(v) - most} more" if len(v) > most else "")


def _who_wins(rows: list[dict], x: str, what: str) -> str:
    """One bullet: the rows on the (``x``, worst-image PSNR) frontier, slowest first, the rows
    off it and which rows beat them (``row[DOMINATED_KEY[x]]``), and where each family of
    schedules is on the frontier. The reference (no PSNR) takes no part."""
    key = DOMINATED_KEY[x]
    rated = [r for r in rows if r.get("psnr_min") is not None]
    for r in rated:
        r[key] = dominated_by(rated, r, x)
    front = sorted((r for r in rated if not r[key]), key=lambda r: r[x])
    on_front = {r["method"] for r in front}

    def pt(r):
        return f"{r['method']} {r[x]:.2f}x / {r['psnr_min']:.2f} dB"

    text = (f"- **By {what}.** On the frontier, slowest to fastest: "
            + "; ".join(f"{pt(r)} ({r['family']})" for r in front) + ".")
    lost = [r for r in rated if r[key]]
    if lost:
        text += " Dominated: " + "; ".join(
            f"{pt(r)} by {_names(sorted(r[key], key=lambda name: name not in on_front))}" for r in lost) + "."
    where = []
    for fam in dict.fromkeys(r["family"] for r in rated):
        mine = [r for r in rated if r["family"] == fam]
        top = [r[x] for r in front if r["family"] == fam]
        if top:
            span = f"{min(top):.2f}x" if min(top) == max(top) else f"{min(top):.2f}x–{max(top):.2f}x"
            where.append(f"{FAMILIES.get(fam, fam)}: at {span} ({len(top)} of {len(mine)} rows)")
        else:
            where.append(f"{FAMILIES.get(fam, fam)}: nowhere ({len(mine)} row{'s' if len(mine) > 1 else ''}, dominated)")
    return text + " Where each kind of schedule is on the frontier — " + "; ".join(where) + "."


def _winners(rows: list[dict]) -> str:
    """The dominance paragraph of an experiment, by measured and by counted-FLOPs speedup."""
    return ("\n**Who wins on speed and the worst image** (computed from the rows above; a row is dominated when "
            "another row is at least as fast and at least as good on its worst image, one of the two strictly; "
            "x = speedup over target-only, dB = PSNR min; measured speedups within a few percent of each other can "
            "swap between runs, counted FLOPs do not):\n\n"
            + _who_wins(rows, "speedup", "measured latency speedup") + "\n"
            + _who_wins(rows, "flops_speedup", "counted-FLOPs speedup") + "\n")


def _write(out: Path, name: str, md: str, rows: list[dict], setup: dict, files: list[Path], t0: float) -> ExperimentResult:
    elapsed = time.perf_counter() - t0
    md += (f"\nExperiment wall time {elapsed:.0f} s (methods already sampled by an earlier experiment of the same "
           f"run are reused, not re-sampled).\n")
    setup = {**setup, "experiment_wall_s": elapsed}
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.md").write_text(md)
    (out / f"{name}.json").write_text(json.dumps({"experiment": name, **setup, "rows": rows}, indent=1, default=str))
    return ExperimentResult(name, md, rows, [out / f"{name}.md", out / f"{name}.json", *files])


def _setup_dict(r: Runner, cfg: EvalConfig, n: int | None = None) -> dict:
    return {"images": n or r.n, "steps": r.steps, "batch": r.batch, "latency_images": r.latency_n, "guidance": r.guidance,
            "accept": str(cfg.accept), "provenance": provenance(r.weights_dir, r.backend)}


PSNR_COLS = [("psnr", "PSNR ↑", ".2f"), ("psnr_min", "PSNR min ↑", ".2f")]


# ---- Table 1: draft models ---------------------------------------------------------------------
def table1(r: Runner, cfg: EvalConfig, out: Path) -> ExperimentResult:
    t0 = time.perf_counter()
    ref = _target(r)
    methods = [ref]
    methods += [Method(f"draft {d} alone", StagePlan.draft_only(r.steps), d) for d in ("lite", "svd")]
    methods += [Method(f"SDSV w/ {d}", StagePlan.paper_default(r.steps), d, "endpoints", cfg.accept) for d in ("lite", "svd")]
    own = self_draft_methods(r.steps)
    own = [dataclasses.replace(m, label="SDSV w/ self") if m.schedule_type == "SDSV" else m for m in own]
    methods += own
    r.begin("table1", methods, methods)
    rows = _measure(r, methods, ref)
    r.end()
    cols = [("method", "model", "s"), ("fd", "FD-tiny ↓", ".3f"), ("align", "Align ↑", ".3f"),
            ("lpips", "LPIPS-tiny ↓", ".4f"), ("is_tiny", "IS-tiny ↑", ".2f"), *PSNR_COLS,
            ("fd_data", "FD-tiny vs data ↓", ".3f"), ("speedup", "speedup", lambda v: f"{v:.2f}x"),
            ("gflops", "GFLOPs/img", ".2f"), ("acceptance", "accept", ".0%")]
    md = (header("Table 1 (tiny): SDSV with different draft models, and the self-draft's schedules", _setup(
        r, cfg, f"SDSV plan: {StagePlan.paper_default(r.steps).describe()}, verification 'endpoints'. "
                "FD-tiny vs data compares with real procedural images of the same prompts. " + SELF_DRAFT_NOTE
                + f" Their plans — {_plans(own)}."), provenance(r.weights_dir, r.backend))
          + "\n" + md_table(rows, cols) + "\n" + _winners(rows))
    return _write(out, "table1", md, rows, _setup_dict(r, cfg), [], t0)


# ---- Table 2: efficiency vs quality --------------------------------------------------------------
def table2(r: Runner, cfg: EvalConfig, out: Path) -> ExperimentResult:
    t0 = time.perf_counter()
    ref, d = _target(r), cfg.draft
    own = self_draft_methods(r.steps)
    own = [dataclasses.replace(m, label="SDSV-slow (self)") if m.schedule_type == "SDSV" else m for m in own]
    own += on_dpm_methods(r.steps)  # speculation on DPM-Solver++(2M), next to that solver alone
    methods = [ref, Method(f"Improved-Draft ({d})", StagePlan.improved_draft(r.steps), d),
               Method(f"SDSV-fast ({d})", StagePlan.fast(r.steps), d, "endpoints", cfg.accept),
               Method(f"SDSV-slow ({d})", StagePlan.slow(r.steps), d, "endpoints", cfg.accept), *own]
    methods += [fewer_steps(s, solver) for s, solver in cfg.table_fewer if s < r.steps]
    r.begin("table2", methods, methods)
    rows = _measure(r, methods, ref)
    r.end()
    cols = [("method", "method", "s"), ("gflops", "GFLOPs/img ↓", ".2f"), ("latency_ms", "latency ms ↓", ".1f"),
            ("speedup", "speedup ↑", lambda v: f"{v:.2f}x"), ("lpips", "LPIPS-tiny ↓", ".4f"), *PSNR_COLS,
            ("ssim", "SSIM ↑", ".3f"), ("fd", "FD-tiny ↓", ".3f"), ("align", "Align ↑", ".3f"),
            ("target_evals", "target evals/img", ".1f"), ("draft_evals", "draft evals/img", ".1f"),
            ("acceptance", "accept", ".0%")]
    md = (header("Table 2 (tiny): efficiency and quality of SDSV vs the Improved-Draft baseline, the self-draft "
                 "and the target alone with fewer steps",
                 _setup(r, cfg, f"{SELF_DRAFT_NOTE} Plans — {_plans(methods[1:])}."), provenance(r.weights_dir, r.backend))
          + "\n" + md_table(rows, cols) + "\n" + _winners(rows))
    return _write(out, "table2", md, rows, _setup_dict(r, cfg), [], t0)


# ---- Figure 2: warm-up strategies -------------------------------------------------------------
def warmup(r: Runner, cfg: EvalConfig, out: Path) -> ExperimentResult:
    t0 = time.perf_counter()
    n, d, a = r.steps, cfg.draft, cfg.accept
    ref = _target(r)
    methods = [Method("(a) minimal warm-up", StagePlan.minimal_warmup(n), d, "endpoints", a), ref,
               Method("(c) conservative warm-up", StagePlan.conservative_warmup(n), d, "endpoints", a),
               Method("(d) multi-stage", StagePlan.paper_default(n), d, "endpoints", a)]
    methods[1] = dataclasses.replace(ref, label="(b) vanilla (target)")
    r.begin("warmup", methods, methods)
    rows = _measure(r, methods, ref)
    r.end()
    k = min(cfg.strip_images, r.n)
    strip = image_strip({m.label: r.run(m).images[:k] for m in methods}, r.prompts[:k], out / "warmup_strip.png",
                        f"Warm-up strategies, draft {d}, {n} steps (seeds {r.seeds[0]}..{r.seeds[k - 1]})")
    cols = [("method", "configuration", "s"), ("plan", "plan (steps: who)", "s"), ("target_evals", "target evals/img", ".1f"),
            ("draft_evals", "draft evals/img", ".1f"), ("gflops", "GFLOPs/img", ".2f"), ("latency_ms", "latency ms", ".1f"),
            ("speedup", "speedup", lambda v: f"{v:.2f}x"), ("acceptance", "accept", ".0%"), *PSNR_COLS,
            ("ssim", "SSIM ↑", ".3f"), ("lpips", "LPIPS-tiny ↓", ".4f"), ("fd", "FD-tiny ↓", ".3f")]
    md = (header("Figure 2 (tiny): warm-up and stage strategies", _setup(r, cfg, f"Draft {d}."), provenance(r.weights_dir, r.backend))
          + "\n" + md_table(rows, cols) + f"\n\nImage strip: `{strip.name}`\n" + _winners(rows))
    return _write(out, "warmup", md, rows, _setup_dict(r, cfg), [strip], t0)


# ---- Pareto: speed vs quality --------------------------------------------------------------------
def _vs_fewer(rows: list[dict], fewer: list[dict], x: str) -> None:
    """Per row: PSNR minus the fewer-steps target curve at equal ``x`` (linear interpolation,
    None outside its range), and whether some fewer-steps run is at least as fast and as good."""
    pts = sorted((f[x], f["psnr"], f["fd"]) for f in fewer)
    xs, ps, fs = (np.array(v) for v in zip(*pts))
    for row in rows:
        inside = xs[0] <= row[x] <= xs[-1]
        row[f"dpsnr_{x}"] = float(row["psnr"] - np.interp(row[x], xs, ps)) if inside else None
        row[f"dfd_{x}"] = float(row["fd"] - np.interp(row[x], xs, fs)) if inside else None
        row[f"dominated_{x}"] = bool(any(f[x] >= row[x] and f["psnr"] >= row["psnr"] for f in fewer))


def _verdict(rows: list[dict], fewer: list[dict], x: str, what: str) -> str:
    lo, hi = min(f[x] for f in fewer), max(f[x] for f in fewer)
    better = [r["method"] for r in rows if r[f"dpsnr_{x}"] is not None and r[f"dpsnr_{x}"] > 0]
    worse = [r["method"] for r in rows if r[f"dpsnr_{x}"] is not None and r[f"dpsnr_{x}"] <= 0]
    outside = [r["method"] for r in rows if r[f"dpsnr_{x}"] is None]
    undominated = [r["method"] for r in rows if not r[f"dominated_{x}"]]
    fd_better = [r["method"] for r in rows if r[f"dfd_{x}"] is not None and r[f"dfd_{x}"] < 0]
    def names(v):
        return ", ".join(v) if v else "none"
    return (f"- By {what} (the fewer-Euler-steps target spans {lo:.2f}x–{hi:.2f}x): higher mean PSNR than the target "
            f"alone at equal speedup for {len(better)} of {len(rows)} configurations ({names(better)}); lower or equal "
            f"for {len(worse)} ({names(worse)}); {len(outside)} lie outside that speedup range ({names(outside)}). "
            f"Lower FD-tiny at equal speedup: {len(fd_better)} ({names(fd_better)}). Not dominated in (speedup, mean "
            f"PSNR) by any fewer-Euler-steps run: {len(undominated)} ({names(undominated)}).")


def pareto(r: Runner, cfg: EvalConfig, out: Path) -> ExperimentResult:
    t0 = time.perf_counter()
    n, n_img = r.steps, cfg.pareto_images or r.n
    ref = _target(r)
    default_tau = cfg.accept.tau
    sweep = []
    for d in ("lite", "svd"):
        for verify in ("endpoints", "full"):
            for tau in sorted(set(cfg.taus) | {default_tau}):
                acc = AcceptanceTest(cfg.accept.metric, tau)
                sweep.append((d, verify, tau, 9, Method(f"{d}/{verify} tau={tau:g} K2=9", StagePlan.paper_default(n),
                                                        d, verify, acc)))
            for k2 in (cfg.k2s if verify in cfg.k2_verify else ()):
                plan = dataclasses.replace(StagePlan.paper_default(n), k_main=k2, name=f"paper_default_k{k2}")
                sweep.append((d, verify, default_tau, k2, Method(f"{d}/{verify} tau={default_tau:g} K2={k2}", plan, d,
                                                                 verify, cfg.accept)))
    own = [({"every": e}, cache(n, e)) for e in cfg.cache_every]
    own += [({"tol": t}, error_controlled(n, tol=t)) for t in cfg.tols]
    own += [({"tau": t}, sdsv_self(n, AcceptanceTest(SELF_SDSV_ACCEPT.metric, t), f"sdsv (self) tau={t:g}"))
            for t in cfg.self_taus]
    fewer = [fewer_steps(s) for s in cfg.fewer_steps if s < n]
    fewer += [fewer_steps(s, "dpm++2m") for s in cfg.dpm_steps if s < n]
    base = [Method(f"draft {d} alone", StagePlan.draft_only(n), d) for d in ("lite", "svd")]
    base += [Method(f"Improved-Draft ({d})", StagePlan.improved_draft(n), d) for d in ("lite", "svd")]
    methods = [ref] + [s[-1] for s in sweep] + [m for _, m in own] + fewer + base
    r.begin("pareto", methods, methods, n_img)
    measured = {row["method"]: row for row in _measure(r, methods, ref, n_img)}
    r.end()
    rows = []
    for d, verify, tau, k2, m in sweep:
        rows.append({**measured[m.label], "draft": d, "verify": verify, "tau": tau, "k2": k2})
    own_rows = [{**measured[m.label], **param} for param, m in own]
    fewer_rows = [measured[m.label] for m in fewer]
    euler_rows = [f for f in fewer_rows if f["solver"] == "euler"]
    base_rows = [measured[ref.label]] + [measured[m.label] for m in base]
    if euler_rows:
        for x in ("speedup", "flops_speedup"):
            _vs_fewer(rows + own_rows, euler_rows, x)
    series = {}
    for row in rows:
        series.setdefault(f"SDSV {row['draft']}/{row['verify']} (tau sweep, K2 = 9)" if row["k2"] == 9 else
                          f"SDSV {row['draft']}/{row['verify']} (K2 sweep, tau {default_tau:g})", []).append(row)
    own_series = {"cache": "cache (self), target every n-th step", "error-controlled": "error-ctrl (self), tol sweep",
                  "SDSV": f"SDSV (self), {SELF_SDSV_ACCEPT.metric} tau sweep"}
    for row in own_rows:
        series.setdefault(own_series[row["family"]], []).append(row)
    lines = {"target alone, fewer Euler steps": euler_rows,
             "target alone, fewer DPM-Solver++(2M) steps": [f for f in fewer_rows if f["solver"] == "dpm++2m"]}
    points = {row["method"]: row for row in base_rows[1:]}
    points["target-only (reference)"] = {**measured[ref.label], "fd": 0.0}
    title = f"Speed vs quality on the tiny models ({n_img} images, {n} steps; trained drafts' tau: {cfg.accept.metric})"
    files = [pareto_plot(series, points, lines, out / "pareto.png", title),
             pareto_plot(series, points, lines, out / "pareto_flops.png", title, x="flops_speedup",
                         xlabel="speedup over target-only (counted FLOPs)")]
    cols = [("method", "method", "s"), ("acceptance", "accept", ".0%"), ("target_evals", "target evals/img", ".1f"),
            ("draft_evals", "draft evals/img", ".1f"), ("gflops", "GFLOPs/img", ".2f"),
            ("flops_speedup", "FLOPs speedup", lambda v: f"{v:.2f}x"), ("latency_ms", "latency ms", ".1f"),
            ("speedup", "speedup", lambda v: f"{v:.2f}x"), *PSNR_COLS, ("ssim", "SSIM ↑", ".3f"),
            ("fd", "FD-tiny ↓", ".3f"), ("dpsnr_speedup", "ΔPSNR vs fewer Euler steps at equal speedup", "+.2f")]
    all_rows = rows + own_rows + fewer_rows + base_rows
    verdict = ""
    if euler_rows:
        verdict = ("\n**Against the target alone with fewer Euler steps, by mean PSNR** (computed from the rows above; "
                   "the SDSV sweep and the self-draft's schedules):\n\n"
                   + _verdict(rows + own_rows, euler_rows, "speedup", "measured latency speedup") + "\n"
                   + _verdict(rows + own_rows, euler_rows, "flops_speedup", "counted-FLOPs speedup") + "\n")
    sweep_note = (f"Sweep: plan {StagePlan.paper_default(n).describe()} with K2 replaced where stated; tau of "
                  f"{cfg.accept.metric}. Self-draft: cache every {', '.join(map(str, cfg.cache_every))}; error-controlled "
                  f"tol {', '.join(f'{t:g}' for t in cfg.tols)}; SDSV (self) plan {StagePlan.slow(n).describe()}, "
                  f"{SELF_SDSV_ACCEPT.metric} tau {', '.join(f'{t:g}' for t in cfg.self_taus)}. {SELF_DRAFT_NOTE} "
                  f"Fewer steps: Euler {', '.join(str(m.policy.num_steps) for m in fewer if m.solver == 'euler')}, "
                  f"DPM-Solver++(2M) {', '.join(str(m.policy.num_steps) for m in fewer if m.solver != 'euler')}.")
    md = (header("Pareto (tiny): speedup vs quality — SDSV's tau and K2 for both verifications and both drafts, the "
                 "self-draft's schedules, and the target alone with fewer steps",
                 _setup(r, cfg, sweep_note + ("" if n_img == r.n else f" The sweep is the most expensive "
                                f"experiment, so it uses the first {n_img} of the {r.n} images: FD-tiny at {n_img} "
                                "images is biased upwards, compare its values within this experiment only."),
                        n_img), provenance(r.weights_dir, r.backend))
          + "\n**SDSV with the trained drafts:**\n\n" + md_table(rows, cols)
          + "\n\n**The self-draft's schedules:**\n\n" + md_table(own_rows, cols)
          + "\n\n**Baselines:**\n\n" + md_table(fewer_rows + base_rows, cols[:-1]) + "\n"
          + verdict + _winners(all_rows)
          + "\nPlots: `pareto.png` (measured speedup), `pareto_flops.png` (counted-FLOPs speedup); filled markers: mean "
            "PSNR, hollow: the worst image\n")
    return _write(out, "pareto", md, all_rows, _setup_dict(r, cfg, n_img), files, t0)


RUNNERS = {"table1": table1, "table2": table2, "warmup": warmup, "pareto": pareto}
