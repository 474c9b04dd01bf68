"""The sampler's own time (``stats.sampler_s``: everything but the model calls) and its share of
the wall time, for target-only and speculative rows at batch 1; and the target-only overhead of
``sdsv.sample`` against the plain DPM-Solver++(2M) loop. ``--models tiny``: the shipped tiny
models (eager), as ``sdsv demo`` runs them; ``--models toy``: a row-wise toy denoiser whose calls
cost microseconds, so the sampler's own time is not buried under the models' timing noise.

``--compare OLD_TREE`` measures an older source tree too (e.g. ``git archive <commit>`` unpacked,
with the compiled ``sdsv_kernels/_C*.so`` copied in), in alternating subprocesses, so both see
the same machine: on a shared VM the speed drifts by tens of percent over minutes.

    python benchmarks/sampler_overhead.py --compare /tmp/old --rounds 6 --repeats 5 \\
        --json benchmarks/results/sampler_overhead/tiny.json
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


def configurations(steps: int, models: str):
    if models == "toy":
        return toy_configurations(steps)
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


def toy_configurations(steps: int):
    import torch

    import sdsv
    from sdsv import AcceptanceTest, ErrorControlled, FixedInterval, SelfDraft, StagePlan, flow_match_sigmas

    sys.path.insert(0, str(Path.cwd() / "tests"))
    from toy_models import RowwiseDenoiser, RowwiseSplit

    new = "policy" in sdsv.sample.__code__.co_varnames
    if new:
        from multistep_oracle import sample_dpm_solver_2m
    else:
        from sdsv.multistep import sample_dpm_solver_2m
    target, draft = RowwiseDenoiser(), RowwiseDenoiser(bias=0.01)
    noise, sig, loose = torch.randn(1, 3, 32, 32), flow_match_sigmas(steps), AcceptanceTest("x0_rms", 1.0)

    def run(policy, t=target, d=draft, **kw):
        return lambda: sdsv.sample(t, d, noise, sig, policy, **kw)

    def self_draft(policy, **kw):
        return lambda: sdsv.sample(None, None, noise, sig, policy, self_draft=SelfDraft(RowwiseSplit()), **kw)

    return {
        "plain loop, dpm++2m": lambda: sample_dpm_solver_2m(target, noise, sig),
        "sdsv.sample target-only, dpm++2m": run(StagePlan.target_only(steps), d=None, solver="dpm++2m"),
        "target-only, euler": run(StagePlan.target_only(steps), d=None),
        "draft-only": run(StagePlan.draft_only(steps), t=None),
        "sdsv endpoints": run(StagePlan.paper_default(steps), accept=loose),
        "sdsv full": run(StagePlan.paper_default(steps), verify="full", accept=loose),
        "sdsv endpoints, dpm++2m": run(StagePlan.paper_default(steps), accept=loose, solver="dpm++2m"),
        "cache (every 3), self-draft": self_draft(FixedInterval(steps, every=3)),
        "error-ctrl, self-draft": self_draft(ErrorControlled(steps)),
        "error-ctrl, self-draft, dpm++2m": self_draft(ErrorControlled(steps, tol=0.2, k_min=1, k_init=1, k_max=2),
                                                      solver="dpm++2m"),
    }


def worker(steps: int, repeats: int, models: str) -> dict:
    """Every configuration ``repeats`` times, taking turns; sampler seconds and shares per call."""
    import torch

    torch.set_num_threads(1)
    configs = configurations(steps, models)
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


def run_tree(tree: Path, steps: int, repeats: int, models: str) -> dict:
    env = dict(os.environ, PYTHONPATH=f"{tree / 'python'}{os.pathsep}{tree}")
    res = subprocess.run([sys.executable, __file__, "--worker", "--steps", str(steps), "--repeats", str(repeats),
                          "--models", models],
                         env=env, cwd=tree, capture_output=True, text=True, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=5, help="calls per configuration in each subprocess")
    ap.add_argument("--rounds", type=int, default=4, help="subprocesses per tree, alternating")
    ap.add_argument("--compare", type=Path, default=None, help="an older source tree to measure alternately")
    ap.add_argument("--json", default=None)
    ap.add_argument("--models", choices=["tiny", "toy"], default="tiny")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.steps, args.repeats, args.models)))
        return 0
    trees = {"after": ROOT} | ({"before": args.compare.resolve()} if args.compare else {})
    samples: dict[str, dict] = {t: {} for t in trees}
    for _ in range(args.rounds):
        for tree, path in trees.items():
            for name, d in run_tree(path, args.steps, args.repeats, args.models).items():
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
                row[f"{tree}_sampler_min_ms"] = round(1e3 * min(d["sampler_s"]), 3)
                row[f"{tree}_share"] = round(statistics.median(d["share"]), 4)
        rows.append(row)
    import torch

    meta = {"machine": f"{platform.processor() or platform.machine()} x{os.cpu_count()} (shared VM), "
                       f"torch {torch.__version__}, python {platform.python_version()}, 1 thread",
            "steps": args.steps, "batch": 1, "models": args.models + (" (eager)" if args.models == "tiny" else ""), "calls_per_config": args.repeats * args.rounds,
            "trees": {t: str(p) for t, p in trees.items()}}
    for r in rows:
        print(f"{r['config']:<40}" + "".join(f"  {t}: median {r.get(t + '_sampler_ms', float('nan')):7.3f} ms, "
                                             f"min {r.get(t + '_sampler_min_ms', float('nan')):7.3f} ms "
                                             f"({r.get(t + '_share', float('nan')):.2%})" for t in trees))
    if args.json:
        Path(args.json).write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
