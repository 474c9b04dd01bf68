"""The forecast self-draft's schedules on the shipped tiny models: which one, with which settings.

Every configuration uses ``draft="self"`` (the target forecasting its 8 blocks from its own last
evaluations; docs/method.md, "The self-draft") and is timed image by image in turns with
target-only on the same prompts and seeds; PSNR is against those target-only images, mean and
worst prompt. Rows:

* the unverified cache (``FixedInterval``: the target every N-th step) at several N and orders;
* error-controlled windows (``ErrorControlled``) with the plain controller of docs/method.md on
  ``x0_rms`` errors and k in [1, 8], and on the velocity error ``v_rms`` with several k ranges —
  this is how the library's defaults were chosen;
* SDSV's verified windows with the self-draft at several thresholds.

With ``--solver dpm++2m`` (or ``unipc``) the rows are the same schedules on that second-order
solver (``sdsv.sample``'s ``solver``), next to the solver alone at 15/20/25 steps: the cache
every 2nd/3rd step and error-controlled windows of 1-3 forecast steps, at 20-40 solver steps.

    python benchmarks/sweep_self_draft.py --out benchmarks/results/self_draft_sweep
    python benchmarks/sweep_self_draft.py --solver dpm++2m --out benchmarks/results/dpm_self_draft_sweep
    python benchmarks/sweep_self_draft.py --solver unipc --out benchmarks/results/unipc_self_draft_sweep
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from sdsv import AcceptanceTest, ErrorControlled, FixedInterval, StagePlan
from sdsv.demo import DEFAULT_PROMPTS, machine
from sdsv.metrics import psnr
from sdsv.tiny.pipeline import DEFAULT_GUIDANCE, TinyPipeline
from sweep_tau import timed_against_target, write_sweep


def configurations(n: int) -> list[tuple[str, dict]]:
    rows = []
    for every in (2, 3, 4, 5):
        rows.append((f"cache every {every}, order 1", dict(policy=FixedInterval(n, every=every))))
    rows.append(("cache every 3, order 0", dict(policy=FixedInterval(n, every=3), forecast_order=0)))
    for every in (3, 4):
        rows.append((f"cache every {every}, order 2", dict(policy=FixedInterval(n, every=every, warmup=3), forecast_order=2)))
    for tol in (0.04, 0.06, 0.08, 0.12):  # docs/method.md's plain controller
        rows.append((f"error-ctrl x0_rms tol {tol:g}, k 1-8",
                     dict(policy=ErrorControlled(n, tol=tol, error_metric="x0_rms", k_min=1, k_max=8))))
    for tol in (0.2, 0.3, 0.5, 0.8):  # the library's default controller (v_rms, k in [2, 4])
        rows.append((f"error-ctrl v_rms tol {tol:g}, k 2-4", dict(policy=ErrorControlled(n, tol=tol))))
    for k_min, k_max in ((1, 4), (2, 5), (3, 5), (1, 8)):
        rows.append((f"error-ctrl v_rms tol 0.3, k {k_min}-{k_max}",
                     dict(policy=ErrorControlled(n, tol=0.3, k_min=k_min, k_init=max(2, k_min), k_max=k_max))))
    rows.append(("error-ctrl v_rms tol 0.3, k 2-4, order 2",
                 dict(policy=ErrorControlled(n, tol=0.3, order=2, warmup=3), forecast_order=2)))
    rows.append(("error-ctrl v_rms tol 0.3, k 2-4, reject > 0.45",
                 dict(policy=ErrorControlled(n, tol=0.3, reject_above=0.45))))
    for tau in (0.1, 0.2, 0.3):
        rows.append((f"sdsv slow (K2=5), x0_rms <= {tau:g}", dict(policy=StagePlan.slow(n), accept=AcceptanceTest("x0_rms", tau))))
    rows.append(("sdsv paper_default, x0_rms <= 0.2", dict(policy=StagePlan.paper_default(n), accept=AcceptanceTest("x0_rms", 0.2))))
    rows.append(("sdsv slow, full, x0_rms <= 0.2", dict(policy=StagePlan.slow(n), verify="full",
                                                        accept=AcceptanceTest("x0_rms", 0.2))))
    return rows


def multistep_configurations(solver: str) -> list[tuple[str, dict]]:
    """Baselines and the self-draft's schedules on a second-order solver; each row names its step count."""
    name = {"dpm++2m": "DPM-Solver++(2M)", "unipc": "UniPC"}[solver]
    rows = [(f"{name} alone, {n} steps", dict(policy=StagePlan.target_only(n))) for n in (15, 20, 25)]
    for n in (20, 25, 30, 40):
        for every in (2, 3):
            rows.append((f"cache every {every}, {n} steps", dict(policy=FixedInterval(n, every=every))))
    for n in (25, 30):
        for tol, k_max in ((0.1, 2), (0.2, 2), (0.2, 3), (0.4, 3)):
            rows.append((f"error-ctrl v_rms tol {tol:g}, k 1-{k_max}, {n} steps",
                         dict(policy=ErrorControlled(n, tol=tol, k_min=1, k_init=1, k_max=k_max))))
    rows.append(("error-ctrl v_rms tol 0.3, k 2-4 (the Euler default), 50 steps", dict(policy=ErrorControlled(50, tol=0.3))))
    rows.append(("sdsv slow (K2=5), x0_rms <= 0.2, 25 steps",
                 dict(policy=StagePlan.slow(25), accept=AcceptanceTest("x0_rms", 0.2))))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="benchmarks/results/self_draft_sweep")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--prompts", type=int, default=len(DEFAULT_PROMPTS))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--compile", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--solver", default="euler", choices=["euler", "dpm++2m", "unipc"],
                    help="the step rule of every configuration (the reference stays 50 Euler steps)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    pipe = TinyPipeline.from_pretrained(names=["target"])
    backend = pipe.compile_or_warn(DEFAULT_GUIDANCE) if args.compile else "eager"
    prompts = [DEFAULT_PROMPTS[i % len(DEFAULT_PROMPTS)] for i in range(args.prompts)]
    common = dict(guidance=DEFAULT_GUIDANCE, draft="self", solver=args.solver)
    configs = configurations(args.steps) if args.solver == "euler" else multistep_configurations(args.solver)
    for _, kw in configs:  # compile every batch size (verification rows) before anything is timed
        pipe(prompts[0], **common, **kw)
    ref = torch.stack([pipe(p, seed=i, policy=StagePlan.target_only(args.steps), guidance=DEFAULT_GUIDANCE).images[0]
                       for i, p in enumerate(prompts)])
    rows = []
    for name, kw in tqdm(configs, desc="sweep"):
        img, wall, ref_wall, stats = timed_against_target(pipe, prompts, args.steps, **common, **kw)
        p = psnr(img, ref)
        rows.append(dict(config=name, target_calls=sum(s.target_calls for s in stats),
                         target_evals=sum(s.target_evals for s in stats), draft_evals=sum(s.draft_evals for s in stats),
                         rejected=sum(s.rejected_unverified for s in stats), wall_s=wall, target_wall_s=ref_wall,
                         speedup=ref_wall / wall, psnr=p.mean().item(), psnr_min=p.min().item(),
                         sampler_share=sum(s.sampler_s for s in stats) / sum(s.wall_s for s in stats)))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    on = "" if args.solver == "euler" else f" on {args.solver} (reference: target-only, {args.steps} Euler steps)"
    header = (f"# Self-draft schedules{on}: {args.steps} steps, {len(prompts)} prompts, guidance {DEFAULT_GUIDANCE:g}\n\n"
              f"machine: {machine()}; models {backend}; date {time.strftime('%Y-%m-%d')}; every row's speedup is "
              f"against target-only timed on the same prompts image by image in turn with it (`target s`); "
              f"PSNR against those target-only images, mean and worst prompt\n\n")
    lines = ["| configuration | target calls | target evals | draft evals | rejected | wall s | target s | speedup | "
             "PSNR dB | worst PSNR | sampler |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['config']} | {r['target_calls']} | {r['target_evals']} | {r['draft_evals']} | {r['rejected']} | "
                     f"{r['wall_s']:.2f} | {r['target_wall_s']:.2f} | {r['speedup']:.2f}x | {r['psnr']:.2f} | "
                     f"{r['psnr_min']:.2f} | {r['sampler_share']:.1%} |")
    write_sweep(out, header, lines, backend, rows)


if __name__ == "__main__":
    main()
