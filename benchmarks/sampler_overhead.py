"""The sampler's own share of wall time, and its overhead on a target-only plan against the plain
DPM-Solver++(2M) loop (the test oracle): the shipped tiny models, eager, batch 1.

Every configuration samples the same prompt; they take turns call by call (the shared VM's speed
drifts), and each reports the median over the repeats of ``stats.sampler_s`` (everything but the
model calls) and of the sampler's share of the call's wall time.

    python benchmarks/sampler_overhead.py --repeats 15 --json benchmarks/results/sampler_overhead_after.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
from pathlib import Path

import torch

import sdsv
from sdsv import ErrorControlled, FixedInterval, StagePlan, flow_match_sigmas
from sdsv.tiny.pipeline import TinyPipeline

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def plain_loop():
    """The plain target-only DPM-Solver++(2M) loop: the tests' oracle (formerly sdsv.multistep)."""
    try:
        from multistep_oracle import sample_dpm_solver_2m
    except ImportError:
        from sdsv.multistep import sample_dpm_solver_2m
    return sample_dpm_solver_2m


def configurations(pipe, steps: int):
    labels = pipe.encode(["a red circle"])
    noise = pipe.noise(1, 0)
    sig = flow_match_sigmas(steps)
    target = pipe.denoiser("target")
    window = "policy" if "policy" in sdsv.sample.__code__.co_varnames else "plan"
    loop = plain_loop()
    return {
        "plain loop, dpm++2m (oracle)": lambda: loop(target, noise, sig, labels=labels),
        "sdsv.sample target-only, dpm++2m": lambda: sdsv.sample(target, None, noise, sig, solver="dpm++2m",
                                                               labels=labels, **{window: StagePlan.target_only(steps)}),
        "sdsv.sample target-only, euler": lambda: sdsv.sample(target, None, noise, sig, labels=labels,
                                                             **{window: StagePlan.target_only(steps)}),
        "sdsv (lite), euler": lambda: pipe("a red circle", **{window: StagePlan.paper_default(steps)}, draft="lite"),
        "sdsv (lite, full), euler": lambda: pipe("a red circle", **{window: StagePlan.paper_default(steps)},
                                                 draft="lite", verify="full"),
        "cache (every 3), euler": lambda: pipe("a red circle", **{window: FixedInterval(steps, every=3)}, draft="self"),
        "error-ctrl (self), euler": lambda: pipe("a red circle", **{window: ErrorControlled(steps)}, draft="self"),
        "error-ctrl (self), dpm++2m": lambda: pipe("a red circle", **{window: ErrorControlled(steps // 2, tol=0.2, k_min=1,
                                                   k_init=1, k_max=2)}, draft="self", solver="dpm++2m"),
    }


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    pipe = TinyPipeline.from_pretrained()
    configs = configurations(pipe, args.steps)
    sampler_s = {k: [] for k in configs}
    share = {k: [] for k in configs}
    with torch.inference_mode():
        for fn in configs.values():  # warm-up
            fn()
        for _ in range(args.repeats):
            for name, fn in configs.items():
                s = fn().stats
                sampler_s[name].append(s.sampler_s)
                share[name].append(s.sampler_s / s.wall_s)
    rows = [{"config": k, "sampler_ms": round(1e3 * statistics.median(sampler_s[k]), 3),
             "sampler_share": round(statistics.median(share[k]), 4)} for k in configs]
    meta = {"machine": f"{platform.processor() or platform.machine()}, torch {torch.__version__}, "
                       f"python {platform.python_version()}, {args.threads} thread(s)",
            "steps": args.steps, "repeats": args.repeats, "batch": 1, "models": "eager"}
    for r in rows:
        print(f"{r['config']:<36} sampler {r['sampler_ms']:8.3f} ms  share {r['sampler_share']:.2%}")
    if args.json:
        Path(args.json).write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
