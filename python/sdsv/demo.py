"""``sdsv demo``: SDSV against its baselines on the shipped tiny models, in one run.

For each prompt (own seed, batch 1 — the latency-bound setting speculative sampling is for)
every method samples the same noise; the table reports counted model calls, measured wall
time, speedup over target-only, acceptance, PSNR/SSIM against the target-only images (fidelity)
and PSNR against a converged solution (accuracy: DPM-Solver++(2M) with twice the steps,
sampled once after the timed rounds, so the timing is unchanged).
After one warm-up call per method, the methods take turns image by image (``--repeats`` rounds
over all prompts; wall time is the mean round). On a shared machine a process's speed drifts
over seconds; taking turns lets every method see the same machine, where timing each method in a
block of its own did not reproduce (docs/demo.md, "How it is measured").
The models run through ``torch.compile`` unless ``--no-compile``
(:meth:`sdsv.tiny.pipeline.TinyPipeline.compile` says why).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .acceptance import AcceptanceTest
from .evaluation.report import machine
from .evaluation.tail import converged_reference
from .cli_args import (check, check_output_file, check_output_folder, check_weights, finite_float, int_at_least,
                       tiny_prompt, weights_folder)
from .evaluation.methods import Method, dominated_by, fewer_steps, intent_methods, on_dpm_methods, self_draft_methods
from .metrics import psnr, ssim
from .policies import StagePlan
from .tiny.pipeline import DEFAULT_GUIDANCE, TinyPipeline
from .tiny.weights import MODEL_NAMES

DEFAULT_PROMPTS = (
    "a red circle", "a blue triangle", "a green square", "a yellow ring",
    "a purple cross", "an orange diamond", "a cyan triangle", "a white square",
)
# chosen with benchmarks/sweep_tau.py (benchmarks/results/tau_sweep.md); docs/demo.md, "Choosing the acceptance test"
DEFAULT_METRIC = "x0_rms"
DEFAULT_TAU = 0.3


def methods_for(num_steps: int, drafts: list[str], plan_name: str, verify: str = "endpoints",
                accept: AcceptanceTest | None = None) -> list[Method]:
    """Target-only, the baselines a user would pick instead (fewer steps, a second-order solver,
    an unverified forecast cache), the trained drafts and the self-draft, in one table; the
    trained drafts' SDSV rows use ``accept`` (the self-draft's has its own, stricter test)."""
    sdsv_plan = getattr(StagePlan, plan_name)(num_steps)
    ms = [Method("target-only", StagePlan.target_only(num_steps))]
    ms += [fewer_steps(steps) for steps in (20, 25) if steps < num_steps]
    ms += [fewer_steps(steps, "dpm++2m") for steps in (15, 20, 25) if steps < num_steps]
    ms += [fewer_steps(steps, "unipc") for steps in (12,) if steps < num_steps]  # the accurate intent's yardstick
    trained = [d for d in drafts if d != "self"]
    ms += [Method(f"draft-only ({d})", StagePlan.draft_only(num_steps), d) for d in trained]
    ms += [Method(f"improved-draft ({d})", StagePlan.improved_draft(num_steps), d) for d in trained]
    ms += [Method(f"sdsv ({d})", sdsv_plan, d, verify, accept) for d in trained]
    if "self" in drafts:
        ms += intent_methods(num_steps)
        ms += self_draft_methods(num_steps, verify)
        ms += on_dpm_methods(num_steps)
    return ms


def load_pipeline(args) -> tuple[TinyPipeline, str]:
    """The shipped models, compiled unless ``--no-compile``; also says how they run."""
    pipe = TinyPipeline.from_pretrained(args.weights)
    if not args.compile:
        return pipe, "eager (--no-compile)"
    if not args.quiet:
        print("compiling the models with torch.compile (one-time, about 30 s on 2 cores; "
              "--no-compile skips it)", file=sys.stderr, flush=True)
    return pipe, pipe.compile_or_warn(guidance=args.guidance)


def run(args) -> tuple[list[dict], str, dict[str, list[float]]]:
    """The table rows (wall time: seconds per round, averaged over the rounds), how the models
    ran (compiled or eager), and each method's speedup over target-only in each round."""
    torch.set_num_threads(args.threads)
    pipe, backend = load_pipeline(args)
    accept = AcceptanceTest(args.metric, args.tau)
    methods = methods_for(args.steps, args.drafts, args.plan, args.verify, accept)
    prompts = list(args.prompts)
    seeds = [args.seed + i for i in range(len(prompts))]

    images = {m.label: [None] * len(prompts) for m in methods}
    wall = {m.label: [0.0] * args.repeats for m in methods}  # wall[name][r]: seconds in round r
    totals = {m.label: dict(target_calls=0, target_evals=0, draft_evals=0, proposed=0, accepted=0, sampler_s=0.0,
                            model_s=0.0) for m in methods}
    kw = {m.label: dict(m.pipeline_kwargs(), guidance=args.guidance) for m in methods}
    with torch.inference_mode(), tqdm(total=(args.repeats * len(prompts) + 1) * len(methods), desc="sampling",
                                      unit="image", disable=args.quiet) as bar:
        # warm-up: the first calls of a model pay for allocations and thread-pool start-up and,
        # compiled, for a recompilation at each new batch size (the verification batch)
        for m in methods:
            bar.set_postfix_str(f"warm-up, {m.label}")
            pipe(prompts[0], seed=seeds[0], **kw[m.label])
            bar.update(1)
        # methods take turns image by image, so every method sees the same machine: a shared
        # machine's speed drifts over seconds (docs/demo.md, "How it is measured")
        for r in range(args.repeats):
            for p, (prompt, seed) in enumerate(zip(prompts, seeds)):
                for m in methods:
                    bar.set_postfix_str(f"round {r + 1}/{args.repeats}, {m.label}: {prompt}")
                    t0 = time.perf_counter()
                    out = pipe(prompt, seed=seed, **kw[m.label])
                    wall[m.label][r] += time.perf_counter() - t0
                    bar.update(1)
                    s, tot = out.stats, totals[m.label]
                    tot["sampler_s"] += s.sampler_s
                    tot["model_s"] += s.target_s + s.draft_s
                    if r:  # every round samples the same images with the same counts
                        continue
                    images[m.label][p] = out.images[0]
                    tot["target_calls"] += s.target_calls
                    tot["target_evals"] += s.target_evals
                    tot["draft_evals"] += s.draft_evals
                    tot["proposed"] += s.proposed_steps
                    tot["accepted"] += s.accepted_steps

    # the converged reference, outside the timed rounds: one batch of all prompts
    conv = converged_reference(args.steps)
    converged = pipe(prompts, seed=seeds, guidance=args.guidance, **conv.pipeline_kwargs()).images
    ref = torch.stack(images["target-only"])
    rows, ref_wall = [], statistics.fmean(wall["target-only"])
    for m in methods:
        img = torch.stack(images[m.label])
        tot, mean = totals[m.label], statistics.fmean(wall[m.label])
        p = None if m.label == "target-only" else psnr(img, ref)
        acc = psnr(img, converged)
        rows.append({
            "method": m.label,
            "target_calls": tot["target_calls"],
            "target_evals": tot["target_evals"],
            "draft_evals": tot["draft_evals"],
            "wall_s": round(mean, 4),
            "speedup": round(ref_wall / mean, 3),
            "acceptance": round(tot["accepted"] / tot["proposed"], 4) if tot["proposed"] else None,
            "psnr": None if p is None else round(p.mean().item(), 2),
            "psnr_min": None if p is None else round(p.min().item(), 2),
            "ssim": None if p is None else round(ssim(img, ref).mean().item(), 4),
            "psnr_converged": round(acc.mean().item(), 2),
            "psnr_converged_min": round(acc.min().item(), 2),
            # the sampler's own share of the time spent in sampling calls (ops, bookkeeping, checks)
            "sampler_share": round(tot["sampler_s"] / (tot["sampler_s"] + tot["model_s"]), 4),
        })
    if args.out:
        save_grid(images, prompts, Path(args.out) / "demo_grid.png")
        save_speed_quality_plot(rows, Path(args.out) / "demo_speed_psnr.png")
    rounds = {m.label: [wall["target-only"][r] / wall[m.label][r] for r in range(args.repeats)] for m in methods}
    return rows, backend, rounds


def format_table(rows: list[dict]) -> str:
    head = ["method", "target calls", "target evals", "draft evals", "wall s", "speedup", "accept", "PSNR dB",
            "acc PSNR", "worst PSNR", "acc worst", "SSIM", "sampler"]
    body = []
    for r in rows:
        body.append([
            r["method"], str(r["target_calls"]), str(r["target_evals"]), str(r["draft_evals"]),
            f"{r['wall_s']:.2f}", f"{r['speedup']:.2f}x",
            "-" if r["acceptance"] is None else f"{r['acceptance']:.0%}",
            "ref" if r["psnr"] is None else f"{r['psnr']:.2f}",
            f"{r['psnr_converged']:.2f}",
            "ref" if r["psnr_min"] is None else f"{r['psnr_min']:.2f}",
            f"{r['psnr_converged_min']:.2f}",
            "ref" if r["ssim"] is None else f"{r['ssim']:.3f}",
            f"{r['sampler_share']:.1%}",
        ])
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(head)]
    line = lambda cells: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))
    return "\n".join([line(head), line(["-" * w for w in widths])] + [line(b) for b in body])


def save_grid(images: dict, prompts: list[str], path: Path, scale: int = 3) -> None:
    """Rows = methods, columns = prompts, with labels."""
    from PIL import Image, ImageDraw

    names = list(images)
    cell, label_w, head_h = 32 * scale, 150, 28
    grid = Image.new("RGB", (label_w + cell * len(prompts), head_h + cell * len(names)), "white")
    draw = ImageDraw.Draw(grid)
    for c, prompt in enumerate(prompts):
        words = prompt.split(" ", 1)[-1]
        draw.text((label_w + c * cell + 4, 8), words, fill="black")
    for r, name in enumerate(names):
        draw.text((6, head_h + r * cell + cell // 2 - 6), name, fill="black")
        for c, img in enumerate(images[name]):
            arr = (img.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
            tile = Image.fromarray(arr).resize((cell, cell), Image.NEAREST)
            grid.paste(tile, (label_w + c * cell, head_h + r * cell))
    path.parent.mkdir(parents=True, exist_ok=True)
    grid.save(path)


def save_speed_quality_plot(rows: list[dict], path: Path) -> None:
    """Speedup vs PSNR of every method: mean (filled) and worst prompt (hollow), joined."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no speed/PSNR plot (pip install matplotlib)", file=sys.stderr)
        return
    fig, ax = plt.subplots(figsize=(12, 6))
    families = [("on dpm++2m", "tab:purple"), ("on unipc", "tab:purple"), ("unipc)", "tab:green"), ("(self", "tab:red"),
                ("cache", "tab:orange"), ("dpm++2m", "tab:blue"), ("steps)", "tab:cyan"), ("", "tab:gray")]
    # the trained drafts sit ~15-20 dB below everything else: listed under the plot, not drawn,
    # so the frontier where the methods compete stays readable
    floor = 30.0
    below = [r for r in rows if r["psnr"] is not None and r["psnr"] < floor]
    for r in rows:
        if r["psnr"] is None or r in below:
            continue
        color = next(c for key, c in families if key in r["method"])
        x = r["speedup"]
        ax.plot([x, x], [r["psnr_min"], r["psnr"]], color=color, lw=1, alpha=0.6)
        ax.scatter([x], [r["psnr"]], color=color, zorder=3)
        ax.scatter([x], [r["psnr_min"]], facecolors="white", edgecolors=color, zorder=3)
        ax.annotate(r["method"], (x, r["psnr"]), textcoords="offset points", xytext=(4, 3), fontsize=7)
    from matplotlib.lines import Line2D

    legend = [Line2D([], [], color=c, marker="o", lw=0, label=lbl) for lbl, c in (
        ("self-draft, verified (sdsv / error-ctrl)", "tab:red"), ("unverified cache (self)", "tab:orange"),
        ("self-draft on DPM-Solver++(2M)", "tab:purple"),
        ("target-only, DPM-Solver++(2M)", "tab:blue"), ("target-only, fewer Euler steps", "tab:cyan"))]
    ax.legend(handles=legend, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)  # outside: no point hidden
    ax.set_xlabel("speedup over target-only (50 Euler steps), wall clock")
    ax.set_ylabel("PSNR vs target-only, dB  (filled: mean, hollow: worst prompt)")
    ax.set_title("sdsv demo: speed vs quality on the shipped tiny models")
    ax.grid(alpha=0.3)
    if below:
        text = "below %g dB, not drawn: " % floor + "; ".join(
            f"{r['method']} {r['speedup']:.2f}x {r['psnr']:.1f}/{r['psnr_min']:.1f} dB" for r in below)
        fig.text(0.01, 0.005, text, fontsize=6, wrap=True, va="bottom")
        fig.tight_layout(rect=(0, 0.05, 1, 1))
    else:
        fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--prompts", nargs="+", type=tiny_prompt, default=list(DEFAULT_PROMPTS),
                   help="'a <color> <shape>' prompts")
    p.add_argument("--steps", type=int_at_least(2), default=50, help="sampling steps (default 50)")
    p.add_argument("--seed", type=int_at_least(0), default=0, help="seed of the first prompt; prompt i uses seed + i")
    # the options the video demo does not use default to None, so that giving one with --video is refused
    # (check_arguments puts the image demo's defaults in)
    p.add_argument("--plan", default=None, choices=["paper_default", "fast", "slow"],
                   help="SDSV stage plan (default paper_default)")
    p.add_argument("--verify", default=None, choices=["endpoints", "full"], help="(default endpoints)")
    p.add_argument("--metric", default=None, choices=["x0_rms", "state_rel_l2", "rel_l2", "cosine"],
                   help=f"(default {DEFAULT_METRIC})")
    p.add_argument("--tau", type=finite_float(), default=None,
                   help=f"acceptance threshold (range depends on --metric; default {DEFAULT_TAU})")
    p.add_argument("--guidance", type=finite_float(0.0), default=DEFAULT_GUIDANCE, help="classifier-free guidance scale")
    p.add_argument("--drafts", nargs="+", default=None, choices=list(DRAFT_CHOICES),
                   help="drafts to compare (default all): the trained lite/svd, and self (the target forecasting "
                        "its own blocks, with the cache and error-controlled schedules); the video demo has lite "
                        "and self")
    p.add_argument("--out", default="sdsv_demo", help="folder for demo_grid.png ('' to skip)")
    p.add_argument("--json", default=None, help="also write the table as JSON to this file")
    p.add_argument("--weights", type=weights_folder, default=None, help="folder of tiny-model weights (default: shipped)")
    p.add_argument("--threads", type=int_at_least(1), default=min(2, os.cpu_count() or 1), help="torch CPU threads")
    p.add_argument("--repeats", type=int_at_least(1), default=None,
                   help="rounds of timing (each runs every method over all prompts, taking turns image by image); "
                        "wall time is the mean round (default 3)")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="run every model through torch.compile first (default; falls back to eager with a "
                        "warning where inductor cannot build); --no-compile measures eager PyTorch")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--video", action="store_true",
                   help="the tiny video model instead (8 prompts, one per motion, eager; uses --steps, --seed, "
                        "--guidance, --drafts (lite, self), --threads, --weights, --out, --json; refuses the others)")


#: every draft the demo's rows may use
DRAFT_CHOICES = ("lite", "svd", "self")
#: the image demo's defaults of the options the video demo refuses (None in the parser: given or not)
IMAGE_ONLY = {"plan": "paper_default", "verify": "endpoints", "metric": DEFAULT_METRIC, "tau": DEFAULT_TAU,
              "repeats": 3, "compile": True}


def check_arguments(p: argparse.ArgumentParser, args) -> None:
    """What one option's type cannot see: the threshold's range for its metric, the schedules
    the step count must allow, the weights the pipeline loads, the outputs it will write; and
    with ``--video``, every option the video demo would not use is refused."""
    check_output_folder(p, "--out", args.out)
    check_output_file(p, "--json", args.json)
    if args.video:
        from .tiny.video.demo import VIDEO_DRAFTS, methods as video_methods
        from .tiny.weights import VIDEO_MODEL_NAMES
        if args.prompts != list(DEFAULT_PROMPTS):
            p.error("argument --prompts: the video demo samples its own 8 prompts (one per motion)")
        for name in IMAGE_ONLY:
            if getattr(args, name) is not None and not (name == "compile" and args.compile is False):
                option = "--compile" if name == "compile" else f"--{name}"
                p.error(f"argument {option}: not used by the video demo (its rows are fixed, its models eager); "
                        "leave it out with --video")
        args.compile = False
        unknown = [d for d in args.drafts or () if d not in VIDEO_DRAFTS]
        if unknown:
            p.error(f"argument --drafts: the video demo has no {', '.join(unknown)} draft (it has "
                    f"{', '.join(VIDEO_DRAFTS)})")
        args.drafts = list(args.drafts or VIDEO_DRAFTS)
        check(p, "--steps", lambda: video_methods(args.steps))
        check_weights(p, args.weights, list(VIDEO_MODEL_NAMES) + ["video_classifier"])
        return
    for name, default in IMAGE_ONLY.items():
        if getattr(args, name) is None:
            setattr(args, name, default)
    args.drafts = list(args.drafts or DRAFT_CHOICES)
    check(p, "--tau", lambda: AcceptanceTest(args.metric, args.tau))
    check(p, "--steps", lambda: methods_for(args.steps, args.drafts, args.plan, args.verify))
    check_weights(p, args.weights, list(MODEL_NAMES))


def best_checked(rows: list[dict], methods: dict[str, Method]) -> dict | None:
    """The fastest self-draft row on Euler whose forecast's error is checked — SDSV's verified
    windows or the error-controlled windows (unverified, but each closing target step measures
    the error); not the plain cache — that reaches 38 dB mean and 35 dB on the worst prompt, else
    the fastest of them. ``methods``: label -> Method."""
    checked = [r for r in rows if r["psnr"] is not None and (m := methods[r["method"]]).draft == "self"
                and m.schedule_type in ("SDSV", "error-controlled") and m.solver == "euler"]
    if not checked:
        return None
    return max(checked, key=lambda r: (r["psnr"] >= 38 and r["psnr_min"] >= 35, r["speedup"]))


def main(args) -> int:
    if getattr(args, "video", False):
        from .tiny.video.demo import main as video_main
        return video_main(args)
    rows, backend, rounds = run(args)
    methods = {m.label: m for m in methods_for(args.steps, args.drafts, args.plan, args.verify,
                                                AcceptanceTest(args.metric, args.tau))}
    print(f"\nSDSV demo: {len(args.prompts)} prompts x {args.steps} steps, plan {args.plan}, verify {args.verify}, "
          f"accept {AcceptanceTest(args.metric, args.tau)}, guidance {args.guidance:g}")
    print(f"machine: {machine()}; models {backend}")
    print(f"wall s: one round (all prompts), mean of {args.repeats}; methods take turns image by image, after a "
          f"warm-up each")
    print(f"PSNR dB / worst PSNR / SSIM: against target-only (fidelity); acc PSNR / acc worst: against a converged "
          f"solution, {converged_reference(args.steps).label} (accuracy), sampled after the timed rounds\n")
    print(format_table(rows))
    if args.repeats > 1:
        print("\nspeedup over target-only in each round:")
        for name, sp in rounds.items():
            if name != "target-only":
                print(f"  {name:<22} " + "  ".join(f"{x:.2f}x" for x in sp))
    best = best_checked(rows, methods)
    if best is not None:
        beaten = dominated_by(rows, best)
        print(f"\nbest self-draft configuration with its error checked (verified or error-controlled windows): {best['method']}, {best['speedup']:.2f}x at "
              f"{best['psnr']:.2f} dB mean / {best['psnr_min']:.2f} dB worst prompt; "
              + (f"dominated on (speedup, worst PSNR) by {', '.join(beaten)}" if beaten else
                 "not dominated on (speedup, worst PSNR) by any other row"))
    on_second_order = [r for r in rows if methods[r["method"]].solver != "euler" and methods[r["method"]].policy.uses_draft]
    solver_alone = [r for r in rows if methods[r["method"]].solver != "euler" and not methods[r["method"]].policy.uses_draft]
    alone = ", ".join(f"{methods[r['method']].solver} {methods[r['method']].policy.num_steps}" for r in solver_alone)
    for r in on_second_order:
        beaten = dominated_by(solver_alone, r)
        print(f"{r['method']}: {r['speedup']:.2f}x at {r['psnr']:.2f} / {r['psnr_min']:.2f} dB; "
              + (f"dominated by a second-order solver alone: {', '.join(beaten)}" if beaten else
                 f"not dominated by a second-order solver alone ({alone} steps)"))
    if args.out:
        print(f"\nimage grid (rows = methods, columns = prompts): {Path(args.out) / 'demo_grid.png'}")
        print(f"speed vs PSNR plot: {Path(args.out) / 'demo_speed_psnr.png'}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(rows, indent=1))
        print(f"table as JSON: {args.json}")
    return 0
