"""The tail as a measurement (``sdsv eval --experiment tail``): how bad the images a user sees
only now and then get, on a set large enough for a 1st percentile to mean something.

Every method samples a report set (every prompt with many seeds) and, right after it, a
calibration set of other seeds on which a configuration would be chosen; figures are reported
on the report set. Each image is compared with two references: the target's own 50-step Euler
output (fidelity: how close a speed-up stays to what the slow sampler gives) and a converged
solution, DPM-Solver++(2M) with twice the steps (accuracy: how close it is to the ODE's
solution; the 50-step output is itself a method there). Per method and yardstick: mean, 5th and
1st percentile and worst-image PSNR, mean SSIM; which methods lose on (speedup, 5th percentile).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from .methods import Method, cache, dominated_by, fewer_steps, intent_methods
from ..metrics import psnr, ssim, tail_summary
from .report import header, md_table, provenance, tail_plot
from .runner import Runner

#: seeds of the 256-image tables (table1, table2, warmup, pareto): the tail's sets avoid them
TABLE_SEEDS = range(10_000, 10_256)
#: the report set's first seed; the calibration set's seeds follow the report set's
TAIL_SEED = 20_000
#: the converged reference: DPM-Solver++(2M) with this many times the evaluation's steps (100 of 50)
CONVERGED_FACTOR = 2
#: how converged it is: the same solver with this many times the evaluation's steps (200 of 50)
#: against it, on the first images of the report set
CHECK_FACTOR = 4

# the rows, as fractions of the evaluation's steps (of 50): one list, so that a new window policy
# is one more line in tail_methods. Kept to what decides the verdicts, so that 1056 images run in
# under an hour on 2 cores: the baselines nearest the intents' speed and the fidelity goal's
# comparator (DPM-Solver++(2M) 25); the wider sweeps are in benchmarks/tail_study.py
EULER_STEPS = (0.3,)                  # 15
DPM_STEPS = (0.5,)                    # 25
UNIPC_STEPS = (0.24,)                 # 12
CACHE_EVERY = (3,)                    # the unverified cache on Euler, target every 3rd step


@dataclass(frozen=True)
class SeedSets:
    """Image ``i`` of the tail's runner: prompt ``i`` of :func:`~sdsv.evaluation.runner.balanced_prompts`
    (every 48 consecutive images cover every prompt once), seed ``start + i``; the first
    ``report`` images are the report set, the next ``calibration`` the calibration set."""

    report: int
    calibration: int
    start: int = TAIL_SEED

    @property
    def report_seeds(self) -> range:
        return range(self.start, self.start + self.report)

    @property
    def calibration_seeds(self) -> range:
        return range(self.start + self.report, self.start + self.report + self.calibration)

    def check_disjoint(self) -> None:
        """The two sets and the tables' seeds share no seed."""
        sets = {"report": set(self.report_seeds), "calibration": set(self.calibration_seeds),
                "the tables'": set(TABLE_SEEDS)}
        names = list(sets)
        for i, a in enumerate(names):
            for b in names[i + 1:]:
                if sets[a] & sets[b]:
                    raise ValueError(f"the {a} and {b} seed sets overlap: {sorted(sets[a] & sets[b])[:5]}...")

    def describe(self) -> str:
        def span(r: range) -> str:
            return f"{r.start}..{r.stop - 1}" if len(r) else "none"
        return f"report set seeds {span(self.report_seeds)}, calibration set seeds {span(self.calibration_seeds)}"


def _steps(fractions, steps: int) -> list[int]:
    return list(dict.fromkeys(s for f in fractions if 2 <= (s := round(f * steps)) < steps))


def tail_methods(steps: int) -> list[Method]:
    """The tail's rows, first the fidelity reference (the target alone, ``steps`` Euler steps):
    the target alone with fewer steps of each solver, the unverified cache, and the two intents
    of the self-draft (faithful: error-controlled windows on Euler; accurate: corrected short
    windows on UniPC with fewer steps)."""
    ms = [fewer_steps(steps)]
    ms += [fewer_steps(s) for s in _steps(EULER_STEPS, steps)]
    ms += [fewer_steps(s, "dpm++2m") for s in _steps(DPM_STEPS, steps)]
    ms += [fewer_steps(s, "unipc") for s in _steps(UNIPC_STEPS, steps)]
    ms += [cache(steps, every) for every in CACHE_EVERY]
    return ms + intent_methods(steps)


def converged_reference(steps: int) -> Method:
    return fewer_steps(CONVERGED_FACTOR * steps, "dpm++2m")


def convergence_checks(steps: int) -> list[Method]:
    """Compared with the converged reference on a subset: the same solver with ``CHECK_FACTOR``
    times the evaluation's steps, twice the reference's (how far the reference itself is from a
    finer solution)."""
    return [fewer_steps(CHECK_FACTOR * steps, "dpm++2m")]


# ---- measuring -------------------------------------------------------------------------------
YARDSTICKS = {"fid": "fidelity: vs the 50-step Euler output", "acc": "accuracy: vs the converged reference"}


def _against(images: torch.Tensor, ref: torch.Tensor, prefix: str) -> dict:
    stats = tail_summary(psnr(images, ref))
    out = {f"{prefix}_{k}": v for k, v in stats.items()}
    out[f"{prefix}_ssim"] = float(ssim(images, ref).mean())
    return out


def _sample_interleaved(r: Runner, methods: list[Method], upto: int) -> None:
    """Batch ``k`` of every method before batch ``k + 1`` of any: the batched wall times of all
    methods then span the same stretch of a shared machine's load."""
    for n in range(r.batch, upto + r.batch, r.batch):
        for m in methods:
            r.run(m, min(n, upto))


def measure(r: Runner, sets: SeedSets, convergence_n: int) -> tuple[list[dict], list[dict], dict]:
    """The method rows, the convergence rows (each with its per-image PSNR summary) and the wall
    seconds of each phase (what sizing a larger run needs)."""
    methods, conv = tail_methods(r.steps), converged_reference(r.steps)
    checks = convergence_checks(r.steps)
    phases, t0 = {}, time.perf_counter()
    r.begin("tail: convergence checks", checks, [], convergence_n)
    for m in checks:
        r.run(m, convergence_n)
    r.end()
    phases["convergence_checks_s"], t0 = time.perf_counter() - t0, time.perf_counter()
    r.begin("tail", methods + [conv], methods)
    _sample_interleaved(r, methods + [conv], r.n)
    phases["batched_sampling_s"], t0 = time.perf_counter() - t0, time.perf_counter()
    lat = r.latency(methods)
    r.end()
    phases["latency_s"] = time.perf_counter() - t0
    phases["converged_reference_s"] = r.run(conv).batched_s
    R = sets.report
    fid, acc = r.run(methods[0]).images, r.run(conv).images
    base = r.run(methods[0], R)
    rows = []
    for m in methods:
        run, images = r.run(m, R), r.run(m).images
        row = {"method": m.label, "family": m.schedule_type, "solver": m.solver, "steps": m.policy.num_steps,
               "draft": m.draft if m.policy.uses_draft else None,
               "target_evals": run.target_evals / R, "draft_evals": run.draft_evals / R,
               "latency_ms": lat[m.key] * 1000, "speedup": lat[methods[0].key] / lat[m.key],
               "batched_ms": run.batched_s / R * 1000, "batched_speedup": base.batched_s / run.batched_s}
        if m is not methods[0]:
            row.update(_against(images[:R], fid[:R], "fid"))
        row.update(_against(images[:R], acc[:R], "acc"))
        if sets.calibration:
            if m is not methods[0]:
                row.update({f"cal_{k}": v for k, v in _against(images[R:], fid[R:], "fid").items()})
            row.update({f"cal_{k}": v for k, v in _against(images[R:], acc[R:], "acc").items()})
        rows.append(row)
    convergence = [{"method": m.label, "images": convergence_n,
                    **_against(r.run(m, convergence_n).images, acc[:convergence_n], "acc")} for m in checks]
    convergence.append({"method": methods[0].label + " (the fidelity reference)", "images": R,
                        **_against(fid[:R], acc[:R], "acc")})
    return rows, convergence, phases


# ---- verdicts --------------------------------------------------------------------------------
def _verdict(rows: list[dict], x: str, y: str, what: str) -> str:
    """One bullet: the (``x``, ``y``) frontier slowest first, and every row off it with the rows
    that beat it (at least as fast and at least as good, one strictly)."""
    rated = [r for r in rows if r.get(y) is not None]
    beaten = {r["method"]: dominated_by(rated, r, x, y) for r in rated}
    front = sorted((r for r in rated if not beaten[r["method"]]), key=lambda r: r[x])
    off = [f"{name} (by {', '.join(by[:3])}{' and more' if len(by) > 3 else ''})"
           for name, by in beaten.items() if by]
    return (f"- **{what}** — frontier: " + "; ".join(f"{r['method']} {r[x]:.2f}x / {r[y]:.2f} dB" for r in front)
            + ". Dominated: " + ("; ".join(off) if off else "none") + ".")


def verdicts(rows: list[dict]) -> tuple[str, dict]:
    """The dominance verdicts on (speedup, 5th percentile) for both yardsticks and both speed
    measures; also ``{row key: {method: dominating methods}}`` for the JSON."""
    lines, lists = [], {}
    for x, speed in (("speedup", "latency speedup (batch 1)"), ("batched_speedup", "batched throughput speedup")):
        for y, name in (("fid_p5", "fidelity"), ("acc_p5", "accuracy")):
            lines.append(_verdict(rows, x, y, f"{name} p5, by {speed}"))
            rated = [r for r in rows if r.get(y) is not None]
            lists[f"dominated_{y}_{x}"] = {r["method"]: dominated_by(rated, r, x, y) for r in rated}
    return "\n".join(lines), lists


# ---- the experiment ---------------------------------------------------------------------------
def _cols(prefix: str, name: str, percentiles: bool = True) -> list[tuple]:
    cols = [(f"{prefix}_mean", f"{name} mean", ".2f"), (f"{prefix}_p5", f"{name} p5", ".2f")]
    if percentiles:
        cols += [(f"{prefix}_p1", f"{name} p1", ".2f"), (f"{prefix}_worst", f"{name} worst", ".2f"),
                 (f"{prefix}_ssim", f"{name} SSIM", ".4f")]
    return cols


def tail(r: Runner, sets: SeedSets, convergence_n: int, out: Path) -> tuple[str, list[dict], list[Path]]:
    """Run the experiment on a runner built for ``sets`` (:func:`make_runner`); writes
    ``tail.md``, ``tail.json`` and ``tail.png`` into ``out``; returns the markdown, rows, files."""
    sets.check_disjoint()
    if r.n != sets.report + sets.calibration or r.seeds[0] != sets.start:
        raise ValueError(f"the runner holds {r.n} images from seed {r.seeds[0]}, the sets {sets}")
    t0 = time.perf_counter()
    rows, convergence, phases = measure(r, sets, convergence_n)
    verdict, dominated = verdicts(rows)
    wall = time.perf_counter() - t0
    conv, n = converged_reference(r.steps), r.steps
    prov = provenance(r.weights_dir, r.backend)
    prompts = len(set(r.prompts[: sets.report]))
    setup = (f"Report set: {sets.report} images ({prompts} prompts 'a <color> <shape>', each with "
             f"{sets.report // max(prompts, 1)} seeds); calibration set: {sets.calibration} images; {sets.describe()} "
             f"(image i: prompt i of the balanced cycle over all 48, seed {sets.start} + i; the 256-image tables use "
             f"seeds {TABLE_SEEDS.start}..{TABLE_SEEDS.stop - 1}). Figures are the report set's; "
             + ("the calibration set's (mean and p5) are where a configuration would be chosen. " if sets.calibration
                else "the configurations were chosen on other seeds (benchmarks/tail_study.py's calibration set). ")
             + f"Guidance {r.guidance:g}. "
             f"Fidelity = PSNR/SSIM against the target's {n}-step Euler output (row 1); accuracy = against the "
             f"converged reference, {conv.label}. p5 / p1 = the 5th / 1st percentile of per-image PSNR (numpy's "
             f"linear interpolation), worst = the worst image. Speedup = target-only latency / latency: median "
             f"time per image at batch 1 over the first {r.latency_n} report images, all methods interleaved image by "
             f"image; batched speedup = target-only / method wall time of the report set sampled in batches of "
             f"{r.batch}, batch by batch interleaved over the methods, both measured in this run. Target evals "
             f"per image: counted on the report set (one CFG row = 2-row forward).")
    cols = [("method", "method", "s"), ("target_evals", "target evals/img", ".1f"),
            ("speedup", "speedup (batch 1)", lambda v: f"{v:.2f}x"),
            ("batched_speedup", "batched speedup", lambda v: f"{v:.2f}x"), *_cols("fid", "fid."), *_cols("acc", "acc.")]
    cal_cols = [("method", "method", "s"), *_cols("cal_fid", "fid.", False), *_cols("cal_acc", "acc.", False)]
    conv_cols = [("method", f"against {conv.label}", "s"), ("images", "images", "d"), *_cols("acc", "PSNR")]
    title = f"Tail (tiny): per-image PSNR on {sets.report} images against the 50-step output and a converged solution"
    plot = tail_plot(rows, out / "tail.png", f"{title}\n({sets.report} report images, {n} steps)")
    md = (header(title, setup, prov)
          + f"\n**How converged the reference is** (first {convergence_n} report images for the checks):\n\n"
          + md_table(convergence, conv_cols)
          + f"\n\n**Report set ({sets.report} images), PSNR in dB:**\n\n" + md_table(rows, cols)
          + (f"\n\n**Calibration set ({sets.calibration} images), PSNR in dB:**\n\n" + md_table(rows, cal_cols)
             if sets.calibration else "")
          + "\n\n**Who wins on (speedup, 5th percentile)**, computed from the report set's rows (a row is "
            "dominated when another is at least as fast and at least as good on the 5th percentile, one of "
            "them strictly; fidelity leaves out its own reference):\n\n" + verdict
          + f"\n\nPlot: `{plot.name}` (speedup at batch 1 vs the 5th percentile, both yardsticks).\n"
          + f"\nExperiment wall time {wall:.0f} s: convergence checks {phases['convergence_checks_s']:.0f} s, "
            f"batched sampling of every method {phases['batched_sampling_s']:.0f} s (the converged "
            f"reference's share {phases['converged_reference_s']:.0f} s), latency {phases['latency_s']:.0f} s.\n")
    out.mkdir(parents=True, exist_ok=True)
    data = {"experiment": "tail", "report_images": sets.report, "calibration_images": sets.calibration,
            "report_seeds": [sets.report_seeds.start, sets.report_seeds.stop - 1],
            "calibration_seeds": [sets.calibration_seeds.start, sets.calibration_seeds.stop - 1] if sets.calibration else None,
            "prompts": "balanced_prompts(report + calibration): image i = prompt i, seed start + i",
            "steps": n, "batch": r.batch, "latency_images": r.latency_n, "guidance": r.guidance,
            "fidelity_reference": rows[0]["method"], "converged_reference": conv.label,
            "convergence": convergence, "provenance": prov, "experiment_wall_s": wall, **phases, "rows": rows, **dominated}
    (out / "tail.md").write_text(md)
    (out / "tail.json").write_text(json.dumps(data, indent=1, default=str))
    return md, rows, [out / "tail.md", out / "tail.json", plot]


def make_runner(sets: SeedSets, steps: int, **runner_options) -> Runner:
    """A runner over the report and calibration sets that allows the converged reference's steps."""
    return Runner(images=sets.report + sets.calibration, steps=steps, seed=sets.start,
                  max_steps=max(CONVERGED_FACTOR, CHECK_FACTOR) * steps, **runner_options)
