"""The paper's tables and figures on the tiny models (issue #5): ``table1``, ``table2``,
``warmup``, ``pareto``. Each returns its rows, its markdown (setup and provenance header
included) and the files it wrote. Reference-based metrics (FD-tiny, LPIPS-tiny, PSNR, SSIM)
compare with the target-only images of the same prompts and seeds, as the paper does.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..acceptance import AcceptanceTest
from ..plan import StagePlan
from .report import header, image_strip, md_table, pareto_plot, provenance
from .runner import Method, Runner

EXPERIMENTS = ("table1", "table2", "warmup", "pareto")


@dataclass
class EvalConfig:
    accept: AcceptanceTest              # the acceptance test of every SDSV method except the pareto sweep
    draft: str = "svd"                  # the draft of table2 and warmup (the paper picks its best, SVD)
    taus: tuple = (0.02, 0.05, 0.1)     # pareto: tau of the acceptance metric, at K2 = 9
    k2s: tuple = (5, 15)                # pareto: other Stage-2 window sizes, at the default tau ...
    k2_verify: tuple = ("endpoints",)   # ... for these verification modes ('full' costs more than the target alone)
    fewer_steps: tuple = (10, 15, 20, 25, 30)  # pareto: the target alone with fewer steps
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
            f"{r.steps} Euler steps, guidance {r.guidance:g}, acceptance test {cfg.accept}, sampled in batches of "
            f"{r.batch}; latency = median time per image at batch 1 over the first {r.latency_n} images, all methods "
            f"interleaved; speedup = target-only latency / latency, measured in this run. FLOPs counted per model call "
            f"(torch FlopCounterMode, attention included, CFG = 2 rows). FD-tiny, IS-tiny, LPIPS-tiny and alignment "
            f"use the shipped tiny classifier, not Inception/CLIP/AlexNet: compare them only within this table. {extra}").strip()


def _target(r: Runner) -> Method:
    return Method("target-only", StagePlan.target_only(r.steps))


def _measure(r: Runner, methods: list[Method], ref: Method, n: int | None = None) -> list[dict]:
    for m in methods:
        r.run(m, n)
    lat = r.latency(methods)
    rows = []
    for m in methods:
        row = {"method": m.label, "plan": m.plan.describe(), "draft": m.draft if m.plan.uses_draft else None,
               "verify": m.verify if m.speculates else None, "accept_test": str(m.accept) if m.speculates else None}
        row.update(r.efficiency(m, lat[m.key], lat[ref.key], ref, n))
        row.update(r.quality(m, ref, n))
        rows.append(row)
    return rows


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


# ---- Table 1: draft models ---------------------------------------------------------------------
def table1(r: Runner, cfg: EvalConfig, out: Path) -> ExperimentResult:
    t0 = time.perf_counter()
    ref = _target(r)
    methods = [ref]
    methods += [Method(f"draft {d} alone", StagePlan.draft_only(r.steps), d) for d in ("lite", "svd")]
    methods += [Method(f"SDSV w/ {d}", StagePlan.paper_default(r.steps), d, "endpoints", cfg.accept) for d in ("lite", "svd")]
    r.begin("table1", methods, methods)
    rows = _measure(r, methods, ref)
    r.end()
    cols = [("method", "model", "s"), ("fd", "FD-tiny ↓", ".3f"), ("align", "Align ↑", ".3f"),
            ("lpips", "LPIPS-tiny ↓", ".4f"), ("is_tiny", "IS-tiny ↑", ".2f"), ("psnr", "PSNR ↑", ".2f"),
            ("fd_data", "FD-tiny vs data ↓", ".3f"), ("speedup", "speedup", lambda v: f"{v:.2f}x"),
            ("gflops", "GFLOPs/img", ".2f"), ("acceptance", "accept", ".0%")]
    md = (header("Table 1 (tiny): SDSV with different draft models", _setup(
        r, cfg, f"SDSV plan: {StagePlan.paper_default(r.steps).describe()}, verification 'endpoints'. "
                "FD-tiny vs data compares with real procedural images of the same prompts."), provenance(r.weights_dir, r.backend))
          + "\n" + md_table(rows, cols) + "\n")
    return _write(out, "table1", md, rows, _setup_dict(r, cfg), [], t0)


# ---- Table 2: efficiency vs quality --------------------------------------------------------------
def table2(r: Runner, cfg: EvalConfig, out: Path) -> ExperimentResult:
    t0 = time.perf_counter()
    ref, d = _target(r), cfg.draft
    methods = [ref, Method(f"Improved-Draft ({d})", StagePlan.improved_draft(r.steps), d),
               Method(f"SDSV-fast ({d})", StagePlan.fast(r.steps), d, "endpoints", cfg.accept),
               Method(f"SDSV-slow ({d})", StagePlan.slow(r.steps), d, "endpoints", cfg.accept)]
    r.begin("table2", methods, methods)
    rows = _measure(r, methods, ref)
    r.end()
    cols = [("method", "method", "s"), ("gflops", "GFLOPs/img ↓", ".2f"), ("latency_ms", "latency ms ↓", ".1f"),
            ("speedup", "speedup ↑", lambda v: f"{v:.2f}x"), ("lpips", "LPIPS-tiny ↓", ".4f"), ("psnr", "PSNR ↑", ".2f"),
            ("ssim", "SSIM ↑", ".3f"), ("fd", "FD-tiny ↓", ".3f"), ("align", "Align ↑", ".3f"),
            ("target_evals", "target evals/img", ".1f"), ("draft_evals", "draft evals/img", ".1f"),
            ("acceptance", "accept", ".0%")]
    plans = "; ".join(f"{m.label}: {m.plan.describe()}" for m in methods[1:])
    md = (header("Table 2 (tiny): efficiency and quality of SDSV vs the Improved-Draft baseline",
                 _setup(r, cfg, f"Plans — {plans}."), provenance(r.weights_dir, r.backend)) + "\n" + md_table(rows, cols) + "\n")
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
            ("speedup", "speedup", lambda v: f"{v:.2f}x"), ("acceptance", "accept", ".0%"), ("psnr", "PSNR ↑", ".2f"),
            ("ssim", "SSIM ↑", ".3f"), ("lpips", "LPIPS-tiny ↓", ".4f"), ("fd", "FD-tiny ↓", ".3f")]
    md = (header("Figure 2 (tiny): warm-up and stage strategies", _setup(r, cfg, f"Draft {d}."), provenance(r.weights_dir, r.backend))
          + "\n" + md_table(rows, cols) + f"\n\nImage strip: `{strip.name}`\n")
    return _write(out, "warmup", md, rows, _setup_dict(r, cfg), [strip], t0)


# ---- Pareto: speed vs quality --------------------------------------------------------------------
def _vs_fewer(rows: list[dict], fewer: list[dict], x: str) -> None:
    """Per SDSV row: PSNR minus the fewer-steps target curve at equal ``x`` (linear interpolation,
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
    return (f"- By {what} (the fewer-steps target spans {lo:.2f}x–{hi:.2f}x): SDSV has higher PSNR than the target "
            f"alone at equal speedup for {len(better)} of {len(rows)} configurations ({names(better)}); lower or equal "
            f"for {len(worse)} ({names(worse)}); {len(outside)} lie outside that speedup range ({names(outside)}). "
            f"Lower FD-tiny at equal speedup: {len(fd_better)} ({names(fd_better)}). Not dominated in (speedup, PSNR) by "
            f"any fewer-steps run: {len(undominated)} ({names(undominated)}).")


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
    fewer = [Method(f"target {s} steps", StagePlan.target_only(s)) for s in cfg.fewer_steps if s < n]
    base = [Method(f"draft {d} alone", StagePlan.draft_only(n), d) for d in ("lite", "svd")]
    base += [Method(f"Improved-Draft ({d})", StagePlan.improved_draft(n), d) for d in ("lite", "svd")]
    methods = [ref] + [s[-1] for s in sweep] + fewer + base
    r.begin("pareto", methods, methods, n_img)
    measured = {row["method"]: row for row in _measure(r, methods, ref, n_img)}
    r.end()
    rows = []
    for d, verify, tau, k2, m in sweep:
        rows.append({**measured[m.label], "draft": d, "verify": verify, "tau": tau, "k2": k2})
    fewer_rows = [{**measured[m.label], "steps": m.plan.num_steps} for m in fewer]
    base_rows = [measured[ref.label]] + [measured[m.label] for m in base]
    if fewer_rows:
        for x in ("speedup", "flops_speedup"):
            _vs_fewer(rows, fewer_rows, x)
    files = []
    series = {}
    for row in rows:
        series.setdefault(f"SDSV {row['draft']}/{row['verify']} (tau sweep, K2 = 9)" if row["k2"] == 9 else
                          f"SDSV {row['draft']}/{row['verify']} (K2 sweep, tau {default_tau:g})", []).append(row)
    points = {row["method"]: row for row in base_rows[1:]}
    points["target-only (reference)"] = {**measured[ref.label], "fd": 0.0}
    title = f"SDSV on the tiny models: speed vs quality ({n_img} images, {n} steps, metric {cfg.accept.metric})"
    files.append(pareto_plot(series, points, fewer_rows, out / "pareto.png", title))
    files.append(pareto_plot(series, points, fewer_rows, out / "pareto_flops.png", title, x="flops_speedup",
                             xlabel="speedup over target-only (counted FLOPs)"))
    cols = [("method", "method", "s"), ("acceptance", "accept", ".0%"), ("target_evals", "target evals/img", ".1f"),
            ("draft_evals", "draft evals/img", ".1f"), ("gflops", "GFLOPs/img", ".2f"),
            ("flops_speedup", "FLOPs speedup", lambda v: f"{v:.2f}x"), ("latency_ms", "latency ms", ".1f"),
            ("speedup", "speedup", lambda v: f"{v:.2f}x"), ("psnr", "PSNR ↑", ".2f"), ("ssim", "SSIM ↑", ".3f"),
            ("fd", "FD-tiny ↓", ".3f"), ("dpsnr_speedup", "ΔPSNR vs fewer steps at equal speedup", "+.2f")]
    verdict = ""
    if fewer_rows:
        verdict = ("\n**SDSV vs the target alone with fewer steps** (computed from the rows above):\n\n"
                   + _verdict(rows, fewer_rows, "speedup", "measured latency speedup") + "\n"
                   + _verdict(rows, fewer_rows, "flops_speedup", "counted-FLOPs speedup") + "\n")
    md = (header("Pareto (tiny): speedup vs quality, sweeping tau and K2 for both verifications and both drafts",
                 _setup(r, cfg, f"Sweep: plan {StagePlan.paper_default(n).describe()} with K2 replaced where stated; "
                                f"tau of {cfg.accept.metric}." + ("" if n_img == r.n else f" The sweep is the most expensive "
                                f"experiment, so it uses the first {n_img} of the {r.n} images: FD-tiny at {n_img} "
                                "images is biased upwards, compare its values within this experiment only."),
                        n_img), provenance(r.weights_dir, r.backend))
          + "\n" + md_table(rows, cols) + "\n\nBaselines:\n\n" + md_table(fewer_rows + base_rows, cols[:-1]) + "\n"
          + verdict + "\nPlots: `pareto.png` (measured speedup), `pareto_flops.png` (counted-FLOPs speedup)\n")
    return _write(out, "pareto", md, rows + fewer_rows + base_rows, _setup_dict(r, cfg, n_img), files, t0)


RUNNERS = {"table1": table1, "table2": table2, "warmup": warmup, "pareto": pareto}
