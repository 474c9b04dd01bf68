"""How the acceptance test (metric, tau) trades speed for fidelity on the shipped tiny models.

For each draft, metric and tau: SDSV (paper default plan) on a fixed set of prompts and seeds,
reporting acceptance, counted model calls, measured wall time, speedup over target-only (both
measured in this run) and PSNR/SSIM against the target-only images. This is how the demo's
default acceptance test was chosen (docs/demo.md, "Choosing the acceptance test").

    python benchmarks/sweep_tau.py --out benchmarks/results/tau_sweep
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from sdsv import AcceptanceTest, StagePlan
from sdsv.demo import DEFAULT_PROMPTS, machine
from sdsv.metrics import psnr, ssim
from sdsv.tiny.pipeline import DEFAULT_GUIDANCE, TinyPipeline

GRIDS = {
    "x0_rms": [0.05, 0.1, 0.2, 0.25, 0.3, 0.4],
    "state_rel_l2": [0.002, 0.005, 0.01, 0.02],
    "rel_l2": [0.05, 0.1, 0.2, 0.4],
    "cosine": [0.999, 0.99, 0.98, 0.95],
}


def timed_against_target(pipe, prompts, steps, **kw):
    """One configuration over the prompts, taking turns image by image with target-only.

    Returns the images, the configuration's wall seconds, target-only's wall seconds over the
    same images (measured alternately, so both see the same machine: on a shared 2-core VM speed
    drifts by up to ~30% over seconds, see ``sdsv.demo``) and the per-image stats.
    """
    imgs, wall, ref_wall, stats = [], 0.0, 0.0, []
    for i, p in enumerate(prompts):
        t0 = time.perf_counter()
        pipe(p, seed=i, policy=StagePlan.target_only(steps), guidance=kw["guidance"])
        t1 = time.perf_counter()
        out = pipe(p, seed=i, **kw)
        t2 = time.perf_counter()
        ref_wall += t1 - t0
        wall += t2 - t1
        imgs.append(out.images[0])
        stats.append(out.stats)
    return torch.stack(imgs), wall, ref_wall, stats


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="benchmarks/results/tau_sweep")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--prompts", type=int, default=len(DEFAULT_PROMPTS))
    ap.add_argument("--drafts", nargs="+", default=["lite", "svd"])
    ap.add_argument("--metrics", nargs="+", default=list(GRIDS))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--compile", action=argparse.BooleanOptionalAction, default=True,
                    help="torch.compile the models first, as `sdsv demo` does (default)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    pipe = TinyPipeline.from_pretrained()
    backend = pipe.compile_or_warn(DEFAULT_GUIDANCE) if args.compile else "eager"
    prompts = [DEFAULT_PROMPTS[i % len(DEFAULT_PROMPTS)] for i in range(args.prompts)]
    common = dict(guidance=DEFAULT_GUIDANCE)
    pipe(prompts[0], policy=StagePlan.target_only(args.steps), **common)  # warm-up
    for d in args.drafts:  # compiled: the verification batch (2 rows) compiles here, not in a timed run
        pipe(prompts[0], policy=StagePlan.paper_default(args.steps), draft=d, **common)
    ref = torch.stack([pipe(p, seed=i, policy=StagePlan.target_only(args.steps), **common).images[0]
                       for i, p in enumerate(prompts)])
    rows = []
    jobs = [(d, m, t) for d in args.drafts for m in args.metrics for t in GRIDS[m]]
    for d in args.drafts:
        img, wall, ref_wall, _ = timed_against_target(pipe, prompts, args.steps, policy=StagePlan.draft_only(args.steps),
                                                      draft=d, **common)
        rows.append(dict(draft=d, metric="draft-only", tau=None, acceptance=None, target_calls=0,
                         draft_evals=args.steps * len(prompts), wall_s=wall, target_wall_s=ref_wall,
                         speedup=ref_wall / wall, psnr=psnr(img, ref).mean().item(), ssim=ssim(img, ref).mean().item()))
    for d, m, t in tqdm(jobs, desc="sweep"):
        img, wall, ref_wall, stats = timed_against_target(pipe, prompts, args.steps, policy=StagePlan.paper_default(args.steps),
                                                          draft=d, accept=AcceptanceTest(m, t), **common)
        prop = sum(s.proposed_steps for s in stats)
        rows.append(dict(draft=d, metric=m, tau=t, acceptance=sum(s.accepted_steps for s in stats) / prop,
                         target_calls=sum(s.target_calls for s in stats), draft_evals=sum(s.draft_evals for s in stats),
                         wall_s=wall, target_wall_s=ref_wall, speedup=ref_wall / wall,
                         psnr=psnr(img, ref).mean().item(), ssim=ssim(img, ref).mean().item()))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    header = (f"# Acceptance-test sweep: SDSV paper_default, {args.steps} steps, {len(prompts)} prompts, "
              f"guidance {DEFAULT_GUIDANCE:g}\n\nmachine: {machine()}; models {backend}; date {time.strftime('%Y-%m-%d')}; "
              f"every row's speedup is against target-only timed on the same prompts image by image in turn "
              f"with it (`target s`)\n\n")
    lines = ["| draft | metric | tau | accept | target calls | draft evals | wall s | target s | speedup | PSNR dB | SSIM |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        acc = "-" if r["acceptance"] is None else f"{r['acceptance']:.0%}"
        tau = "-" if r["tau"] is None else f"{r['tau']:g}"
        lines.append(f"| {r['draft']} | {r['metric']} | {tau} | {acc} | {r['target_calls']} | {r['draft_evals']} | "
                     f"{r['wall_s']:.2f} | {r['target_wall_s']:.2f} | {r['speedup']:.2f}x | {r['psnr']:.2f} | {r['ssim']:.3f} |")
    write_sweep(out, header, lines, backend, rows)


def write_sweep(out: Path, header: str, lines: list[str], backend: str, rows: list[dict]) -> None:
    """``out``.md (the header and the table, also printed) and ``out``.json (every measured row)."""
    out.with_suffix(".md").write_text(header + "\n".join(lines) + "\n")
    out.with_suffix(".json").write_text(json.dumps({"machine": machine(), "models": backend, "rows": rows}, indent=1))
    print(header + "\n".join(lines))


if __name__ == "__main__":
    main()
