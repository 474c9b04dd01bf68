"""Sharded model rows on the tiny models over torch.distributed (gloo, CPU): wall time per image
with 1 and with N processes, the same total number of CPU threads.

    python benchmarks/distributed_tiny.py                                   # 1 process
    torchrun --nproc-per-node 2 benchmarks/distributed_tiny.py              # 2 processes
    python benchmarks/distributed_tiny.py --launch 1,2 --out benchmarks/results/distributed_cpu

``--launch`` runs the listed process counts one after the other (torchrun for N > 1) and writes
one JSON/markdown table. Rows sharded: the guidance rows of every target call (batch 1, so the
conditional and unconditional halves go to two ranks) — target-only (50 Euler steps) and the
self-draft's error-controlled windows (``SelfDraft(ShardedSplit(split))`` inside the guidance
wrapper: each rank forecasts its rows, every rank's anchor bank gets every residual). Eager
models; every rank checks that it produced the single-process images (max abs difference).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import torch
import torch.distributed as dist

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.join(HERE, "..", "python"), os.path.join(HERE, "..")]

from sdsv import ClassifierFreeGuidance, ErrorControlled, SelfDraft, StagePlan, flow_match_sigmas, sample  # noqa: E402
from sdsv.demo import DEFAULT_PROMPTS, machine  # noqa: E402
from sdsv.distributed import ShardedDenoiser, ShardedSplit  # noqa: E402
from sdsv.tiny.pipeline import DEFAULT_GUIDANCE, TinyPipeline  # noqa: E402
from sdsv.tiny.split import TinyDiTSplit  # noqa: E402


def denoisers(pipe: TinyPipeline, config: str, sharded: bool):
    null = {"labels": torch.tensor(pipe.target.null_labels)}
    if config == "target-only":
        fn = lambda x, s, labels: pipe.target(x, s, labels)  # noqa: E731
        return ClassifierFreeGuidance(ShardedDenoiser(fn) if sharded else fn, DEFAULT_GUIDANCE, null), None, None
    split = TinyDiTSplit(pipe.target)
    sd = SelfDraft(ShardedSplit(split) if sharded else split)
    return (ClassifierFreeGuidance(sd.target, DEFAULT_GUIDANCE, null),
            ClassifierFreeGuidance(sd.draft, DEFAULT_GUIDANCE, null), sd)


PLANS = {"target-only": lambda: StagePlan.target_only(50), "error-ctrl (self)": lambda: ErrorControlled(50)}


def run_one(args) -> dict:
    """Inside this process's group: every configuration over the prompts; returns rank 0's timings."""
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.set_num_threads(max(1, args.threads // world))
    pipe = TinyPipeline.from_pretrained(names=["target"])
    prompts = list(DEFAULT_PROMPTS[: args.prompts])
    sig = flow_match_sigmas(50)
    out = {"world": world, "threads_per_rank": torch.get_num_threads(), "configs": {}}
    with torch.inference_mode():
        for name, plan in PLANS.items():
            times, diffs = [], []
            for i, prompt in enumerate(["a red circle"] + prompts):  # the first is a warm-up
                labels, noise = pipe.encode([prompt]), pipe.noise(1, i)
                tgt, drf, sd = denoisers(pipe, "target-only" if name == "target-only" else "self", world > 1)
                dist.barrier()
                t0 = time.perf_counter()
                res = sample(tgt, drf, noise, sig, plan(), self_draft=sd, labels=labels)
                dt = time.perf_counter() - t0
                if i == 0:
                    continue
                times.append(dt)
                tgt1, drf1, sd1 = denoisers(pipe, "target-only" if name == "target-only" else "self", False)
                ref = sample(tgt1, drf1, noise, sig, plan(), self_draft=sd1, labels=labels)
                diffs.append((res.latents - ref.latents).abs().max().item())
            out["configs"][name] = {"s_per_image": statistics.fmean(times), "max_abs_diff_vs_unsharded": max(diffs),
                                    "target_calls": res.stats.target_calls}
            if rank == 0:
                print(f"[{world} rank(s) x {torch.get_num_threads()} thread(s)] {name}: "
                      f"{statistics.fmean(times) * 1e3:.1f} ms/image, max |diff| vs unsharded {max(diffs):.2e}",
                      flush=True)
    return out


def launch(args) -> None:
    rows = []
    for n in [int(v) for v in args.launch.split(",")]:
        part = f"{args.out}.world{n}.json"
        cmd = ([sys.executable, os.path.abspath(__file__)] if n == 1 else
               [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={n}",
                os.path.abspath(__file__)])
        subprocess.run(cmd + ["--json", part, "--prompts", str(args.prompts), "--threads", str(args.threads)],
                       check=True)
        rows.append(json.load(open(part)))
        os.remove(part)
    base = rows[0]["configs"]
    lines = ["# Sharded guidance rows on the tiny models (gloo, CPU)\n", f"machine: {machine()}; "
             f"{args.threads} threads in total; {args.prompts} prompts, batch 1, guidance {DEFAULT_GUIDANCE:g}, "
             f"eager models; date {time.strftime('%Y-%m-%d')}\n",
             "| processes x threads | configuration | ms / image | vs 1 process | max abs diff vs unsharded |",
             "|---|---|---:|---:|---:|"]
    for r in rows:
        for name, c in r["configs"].items():
            lines.append(f"| {r['world']} x {r['threads_per_rank']} | {name} | {c['s_per_image'] * 1e3:.1f} | "
                         f"{base[name]['s_per_image'] / c['s_per_image']:.2f}x | {c['max_abs_diff_vs_unsharded']:.1e} |")
    text = "\n".join(lines) + "\n"
    print(text)
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out + ".md", "w") as f:
        f.write(text)
    with open(args.out + ".json", "w") as f:
        json.dump({"machine": machine(), "runs": rows}, f, indent=1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--launch", default=None, help="comma-separated process counts to run in turn, e.g. 1,2")
    ap.add_argument("--out", default="benchmarks/results/distributed_cpu")
    ap.add_argument("--json", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--prompts", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2, help="CPU threads in total, split between the processes")
    args = ap.parse_args()
    if args.launch:
        launch(args)
        return
    if "RANK" in os.environ:
        dist.init_process_group("gloo")
    else:
        dist.init_process_group("gloo", init_method="tcp://127.0.0.1:29533", rank=0, world_size=1)
    try:
        out = run_one(args)
        if dist.get_rank() == 0 and args.json:
            with open(args.json, "w") as f:
                json.dump(out, f)
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
