"""``sdsv demo --video``: the demo's table on the tiny video model, beside the paper's Wan2.1 rows.

Eight prompts (every motion), one clip each (seed ``seed + i``); the reference is the target
alone with the full UniPC schedule (Wan2.1's solver). Against it: the target alone with fewer
steps on Euler, DPM-Solver++(2M) and UniPC; the unverified cache; the self-draft's schedules
(the faithful default, short windows, SDSV's verified windows); the trained ``lite`` draft under
the paper's Improved-Draft and SDSV plans. Per row: target calls, wall-clock speed-up (the
reference is timed before and after each prompt's rows, so both see the same machine), per-frame
PSNR against the reference clip (mean, worst clip, worst frame), temporal consistency (how far
the frame-to-frame change of a clip departs from the reference's) and the video classifier's
reading (colour, shape, motion), with the speed-up the paper reports for its Wan2.1 rows.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from ...evaluation.methods import SELF_SDSV_ACCEPT, Method, faithful_method
from ...evaluation.report import machine
from ...metrics import psnr
from ...policies import ErrorControlled, FixedInterval, StagePlan
from ...policies.error_controlled import SHORT_WINDOWS
from ..weights import load_model, shipped_path
from .pipeline import DEFAULT_SOLVER, TinyVideoPipeline

PROMPTS = ("a red circle moving left", "a blue square moving right", "a green triangle moving up",
           "a yellow diamond moving down", "a purple cross rotating", "an orange ring growing",
           "a cyan square shrinking", "a white triangle moving left")
#: the paper's Wan2.1 speed-ups (its video table), by this demo's row of the same schedule
PAPER_WAN = {"improved-draft (lite)": "3.67x", "sdsv-fast (lite)": "3.01x", "sdsv-slow (lite)": "1.77x"}


#: the drafts of the video demo's rows (there is no video svd draft)
VIDEO_DRAFTS = ("lite", "self")


def methods(n: int, drafts=VIDEO_DRAFTS) -> list[Method]:
    """The rows at ``n`` steps: the target alone with fewer steps, and the rows of ``drafts``."""
    on = dict(solver=DEFAULT_SOLVER)
    half, fifth = max(2, n // 2), max(2, n // 5)
    fewer = dict.fromkeys([(half, "euler"), (max(2, 3 * n // 10), "dpm++2m"), (half, DEFAULT_SOLVER),
                           (max(2, 3 * n // 10), DEFAULT_SOLVER), (fifth, DEFAULT_SOLVER)])  # few steps: no twins
    return [m for m in [
        *(Method(f"target-only ({k} steps, {solver})", StagePlan.target_only(k), solver=solver) for k, solver in fewer),
        Method("cache every 3 (self)", FixedInterval(n, every=3), "self", **on),
        faithful_method(n, DEFAULT_SOLVER),
        Method("error-ctrl (self, k 1-2)", ErrorControlled(n, **SHORT_WINDOWS), "self", **on),
        Method("sdsv-slow (self)", StagePlan.slow(n), "self", accept=SELF_SDSV_ACCEPT, **on),
        Method("improved-draft (lite)", StagePlan.improved_draft(n), "lite", **on),
        Method("sdsv-fast (lite)", StagePlan.fast(n), "lite", **on),
        Method("sdsv-slow (lite)", StagePlan.slow(n), "lite", **on),
    ] if m.draft is None or m.draft in drafts]


def frame_psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``[b, T]`` PSNR of each frame of clips ``[b, 3, T, H, W]`` in [0, 1]."""
    per_frame = lambda x: x.transpose(1, 2).flatten(0, 1)  # noqa: E731
    return psnr(per_frame(a), per_frame(b)).view(a.shape[0], a.shape[2])


def temporal_error(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per clip, the RMS difference between the frame-to-frame changes of ``a`` and of its
    reference ``b`` (``[b, 3, T, H, W]``), relative to the reference's: 0 when the clip moves as
    the reference does, whatever a constant per-frame offset."""
    da, db = a.diff(dim=2), b.diff(dim=2)
    return ((da - db).flatten(1).pow(2).mean(1) / db.flatten(1).pow(2).mean(1).clamp_min(1e-12)).sqrt()


def run(pipe: TinyVideoPipeline, prompts, n: int, seed: int, guidance: float, progress=print, drafts=VIDEO_DRAFTS):
    """Sample every prompt (prompt ``i`` with seed ``seed + i``) with the reference and every row
    (of ``drafts``); returns the rows (``per_clip``: each clip's mean frame PSNR) and the reference clips."""
    ms = methods(n, drafts)
    seeds = [seed + i for i in range(len(prompts))]
    ref_plan = StagePlan.target_only(n)
    clips = {m.label: [] for m in ms}
    stats = {m.label: [] for m in ms}
    wall = {m.label: 0.0 for m in ms}
    ref_clips, ref_wall = [], 0.0
    for i, p in enumerate(prompts):
        def reference():
            t0 = time.perf_counter()
            out = pipe(p, seed=seeds[i], policy=ref_plan, solver=DEFAULT_SOLVER, guidance=guidance)
            return out, time.perf_counter() - t0

        pipe(p, seed=seeds[i], policy=StagePlan.target_only(2), solver=DEFAULT_SOLVER, guidance=guidance)  # warm-up
        out, before = reference()
        ref_clips.append(out.frames[0])
        for m in ms:
            t0 = time.perf_counter()
            o = pipe(p, seed=seeds[i], guidance=guidance, **m.pipeline_kwargs())
            wall[m.label] += time.perf_counter() - t0
            clips[m.label].append(o.frames[0])
            stats[m.label].append(o.stats)
        _, after = reference()  # the same clip again: only its time is kept
        ref_wall += (before + after) / 2
        progress(f"[{i + 1}/{len(prompts)}] {p}: reference {before:.2f} / {after:.2f} s")
    ref = torch.stack(ref_clips)
    rows = [{"method": f"target-only ({n} steps, {DEFAULT_SOLVER}) = reference", "target_calls": float(n),
             "speedup": 1.0, "acceptance": None, "psnr_mean": None, "psnr_min": None, "psnr_worst_frame": None,
             "temporal": None, "per_clip": None, "clips": ref}]
    for m in ms:
        x = torch.stack(clips[m.label])
        fp = frame_psnr(x, ref).clamp(max=99)
        st = stats[m.label]
        verified = [s for s in st if s.verified_windows]
        rows.append({
            "method": m.label, "target_calls": sum(s.target_calls for s in st) / len(st),
            "speedup": ref_wall / wall[m.label],
            "acceptance": sum(s.acceptance_rate for s in verified) / len(verified) if verified else None,
            "psnr_mean": fp.mean().item(), "psnr_min": fp.mean(1).min().item(), "psnr_worst_frame": fp.min().item(),
            "temporal": temporal_error(x, ref).mean().item(), "per_clip": fp.mean(1), "clips": x,
        })
    return rows, ref


def classify(rows, classifier, labels) -> None:
    """Each row's share of clips whose colour / shape / motion the classifier reads as prompted."""
    for r in rows:
        with torch.no_grad():
            hit = classifier.predict(r["clips"] * 2 - 1) == labels
        r["classifier"] = {w: hit[:, j].float().mean().item() for j, w in enumerate(("colour", "shape", "motion"))}


def fmt_or_dash(v, fmt: str) -> str:
    """``v`` formatted, or "-" where it was not measured."""
    return "-" if v is None else format(v, fmt)


def format_table(rows) -> str:
    head = ("| method | target calls | speed-up | paper (Wan2.1) | accepted | PSNR mean | worst clip | worst frame "
            "| temporal err. | colour / shape / motion |")
    lines = [head, "|" + "---|" * 10]
    for r in rows:
        c = r["classifier"]
        lines.append(f"| {r['method']} | {r['target_calls']:.1f} | {r['speedup']:.2f}x | {PAPER_WAN.get(r['method'], '')} "
                     f"| {fmt_or_dash(r['acceptance'], '.0%')} | {fmt_or_dash(r['psnr_mean'], '.2f')} | {fmt_or_dash(r['psnr_min'], '.2f')} "
                     f"| {fmt_or_dash(r['psnr_worst_frame'], '.2f')} | {fmt_or_dash(r['temporal'], '.3f')} "
                     f"| {c['colour']:.0%} / {c['shape']:.0%} / {c['motion']:.0%} |")
    return "\n".join(lines)


def write_strip(path: Path, clips: torch.Tensor, zoom: int = 2) -> None:
    """The clips as a PNG: one row per clip, its frames left to right."""
    from PIL import Image

    b, c, t, h, w = clips.shape
    grid = (clips * 255).round().byte().permute(0, 3, 2, 4, 1).reshape(b * h, t * w, c)
    Image.fromarray(grid.numpy()).resize((t * w * zoom, b * h * zoom), Image.NEAREST).save(path)


def main(args) -> int:
    """``sdsv demo --video`` (the demo's ``--steps``, ``--seed``, ``--guidance``, ``--drafts``,
    ``--threads``, ``--weights``, ``--out``, ``--json``)."""
    torch.set_num_threads(args.threads)
    drafts = tuple(getattr(args, "drafts", None) or VIDEO_DRAFTS)
    pipe = TinyVideoPipeline.from_pretrained(args.weights, names=("target", "lite") if "lite" in drafts else ("target",))
    classifier = load_model(shipped_path("video_classifier", args.weights))
    t0 = time.time()
    with torch.inference_mode():
        rows, ref = run(pipe, PROMPTS, args.steps, args.seed, args.guidance,
                        progress=(lambda s: None) if args.quiet else (lambda s: print(s, flush=True)), drafts=drafts)
    classify(rows, classifier, pipe.encode(PROMPTS))
    print(f"\nSDSV video demo: {len(PROMPTS)} prompts, clips {list(ref.shape[1:])} (C, T, H, W), {args.steps} steps, "
          f"guidance {args.guidance:g}; {time.time() - t0:.0f} s")
    print(f"machine: {machine()}; models eager")
    print("speed-up: the reference's wall time (timed before and after each prompt's rows) over the row's; PSNR: per "
          "frame against the reference clip; temporal err.: frame-to-frame change against the reference's (0 = "
          "moves alike); last column: clips the video classifier reads as prompted\n")
    print(format_table(rows))
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        write_strip(Path(args.out) / "video_reference.png", ref)
        print(f"\nreference clips (rows = prompts, columns = frames): {Path(args.out) / 'video_reference.png'}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps([{k: v for k, v in r.items() if k not in ("clips", "per_clip")}
                                               for r in rows], indent=1))
        print(f"table as JSON: {args.json}")
    return 0
