"""The sampler's own time (``stats.sampler_s``: everything but the model calls) and its share of
the wall time, on the shipped tiny models (eager, batch 1), for target-only and speculative rows;
and the target-only overhead of ``sdsv.sample`` against the plain DPM-Solver++(2M) loop.

``--compare OLD_TREE`` measures an older source tree too (e.g. ``git archive <commit>`` unpacked,
with the compiled ``sdsv_kernels/_C*.so`` copied in), in alternating subprocesses, so both see
the same machine: on a shared VM the speed drifts by tens of percent over minutes.

    python benchmarks/sampler_overhead.py --compare /tmp/old --rounds 6 --repeats 5 \\
        --json benchmarks/results/sampler_overhead.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def configurations(steps: int):
    import sdsv
    from sdsv import ErrorControlled, FixedInterval, StagePlan, flow_match_sigmas
    from sdsv.tiny.pipeline import TinyPipeline

    pipe = TinyPipeline.from_pretrained()
    labels, noise, sig = pipe.encode(["a red circle"]), pipe.noise(1, 0), flow_match_sigmas(steps)
    target = pipe.denoiser("target")
    new = "policy" in sdsv.sample.__code__.co_varnames  # the redesigned sampler takes policy=
    window = "policy" if new else "plan"
    if new:
        sys.path.insert(0, str(ROOT / "tests"))
        from multistep_oracle import sample_dpm_solver_2m
    else:
        from sdsv.multistep import sample_dpm_solver_2m

    def tiny(policy, **kw):
        return lambda: pipe("a red circle", **{window: policy}, **kw)

    return {
        "plain loop, dpm++2m": lambda: sample_dpm_solver_2m(target, noise, sig, labels=labels),
        "sdsv.sample target-only, dpm++2m": lambda: sdsv.sample(target, None, noise, sig, StagePlan.target_only(steps),
                                                               solver="dpm++2m", labels=labels),
        "target-only, dpm++2m (tiny pipeline)": tiny(StagePlan.target_only(steps), solver="dpm++2m"),
        "target-only, euler": tiny(StagePlan.target_only(steps)),
        "draft-only (lite)": tiny(StagePlan.draft_only(steps), draft="lite"),
        "sdsv (lite)": tiny(StagePlan.paper_default(steps), draft="lite"),
        "sdsv (lite, full)": tiny(StagePlan.paper_default(steps), draft="lite", verify="full"),
        "cache (every 3)": tiny(FixedInterval(steps, every=3), draft="self"),
        "error-ctrl (self)": tiny(ErrorControlled(steps), draft="self"),
        "error-ctrl on dpm++2m (self)": tiny(ErrorControlled(steps // 2, tol=0.2, k_min=1, k_init=1, k_max=2),
                                             draft="self", solver="dpm++2m"),
        "sdsv (self) on unipc": tiny(StagePlan.slow(steps), draft="self", solver="unipc"),
    }


def worker(steps: int, repeats: int) -> dict:
    """Every configuration ``repeats`` times, taking turns; sampler seconds and shares per call."""
    import torch

    torch.set_num_threads(1)
    configs = configurations(steps)
    out = {k: {"sampler_s": [], "share": []} for k in configs}
    with torch.inference_mode():
        for fn in configs.values():
            fn()  # warm-up
        for _ in range(repeats):
            for name, fn in configs.items():
                s = fn().stats
                out[name]["sampler_s"].append(s.sampler_s)
                out[name]["share"].append(s.sampler_s / s.wall_s)
    return out


def run_tree(tree: Path, steps: int, repeats: int) -> dict:
    env = dict(os.environ, PYTHONPATH=f"{tree / 'python'}{os.pathsep}{tree}")
    res = subprocess.run([sys.executable, __file__, "--worker", "--steps", str(steps), "--repeats", str(repeats)],
                         env=env, cwd=tree, capture_output=True, text=True, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=5, help="calls per configuration in each subprocess")
    ap.add_argument("--rounds", type=int, default=4, help="subprocesses per tree, alternating")
    ap.add_argument("--compare", type=Path, default=None, help="an older source tree to measure alternately")
    ap.add_argument("--json", default=None)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.steps, args.repeats)))
        return 0
    trees = {"after": ROOT} | ({"before": args.compare.resolve()} if args.compare else {})
    samples: dict[str, dict] = {t: {} for t in trees}
    for _ in range(args.rounds):
        for tree, path in trees.items():
            for name, d in run_tree(path, args.steps, args.repeats).items():
                acc = samples[tree].setdefault(name, {"sampler_s": [], "share": []})
                acc["sampler_s"] += d["sampler_s"]
                acc["share"] += d["share"]
    rows = []
    for name in samples["after"]:
        row = {"config": name}
        for tree in trees:
            d = samples[tree].get(name)
            if d:
                row[f"{tree}_sampler_ms"] = round(1e3 * statistics.median(d["sampler_s"]), 3)
                row[f"{tree}_share"] = round(statistics.median(d["share"]), 4)
        rows.append(row)
    import torch

    meta = {"machine": f"{platform.processor() or platform.machine()} x{os.cpu_count()} (shared VM), "
                       f"torch {torch.__version__}, python {platform.python_version()}, 1 thread",
            "steps": args.steps, "batch": 1, "models": "eager", "calls_per_config": args.repeats * args.rounds,
            "trees": {t: str(p) for t, p in trees.items()}}
    for r in rows:
        print(f"{r['config']:<40}" + "".join(f"  {t}: {r.get(t + '_sampler_ms', float('nan')):7.3f} ms "
                                             f"({r.get(t + '_share', float('nan')):.2%})" for t in trees))
    if args.json:
        Path(args.json).write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
