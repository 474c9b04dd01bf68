"""The paper's Wan2.1 table on video (``sdsv eval --experiment wan-video``), on the tiny video model.

The paper measures its video rows on Wan2.1 (Improved-Draft 3.67x, SDSV-fast 3.01x, SDSV-slow
1.77x). Here the same schedules (and the self-draft's, and fewer solver steps) run on many clips
of the tiny video model: clip ``i`` is prompt ``i`` of :func:`video_prompts` (colours, shapes
and all seven motions in turn) with seed ``VIDEO_SEED + i``. Per row: target calls, wall-clock
speed-up over the 50-step UniPC reference (timed before and after each clip's rows), per-clip
PSNR (the mean of its frames' PSNR against the reference clip) as mean / 5th percentile / worst
clip, the temporal error (frame-to-frame change against the reference's; 0 = moves alike), the
classifier's reading of the motion, and the paper's figure for the same schedule.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from ..metrics import tail_summary
from .report import machine
from ..tiny.video.data import COLOR_NAMES, MOTIONS, SHAPES, prompt_of
from ..tiny.video.demo import PAPER_WAN, classify, fmt_or_dash, run
from ..tiny.video.pipeline import DEFAULT_SOLVER, TinyVideoPipeline
from ..tiny.weights import load_model, shipped_path

#: the first clip's seed: apart from the demo's (0..7) and the image sets'
VIDEO_SEED = 30_000


def video_prompts(n: int) -> list[str]:
    """Prompt ``i``: motion ``i % 7``, colour ``i % 8``, shape ``(i // 8 + i) % 6``: every 7
    consecutive clips cover every motion, every 8 every colour."""
    return [prompt_of(i % len(COLOR_NAMES), (i // len(COLOR_NAMES) + i) % len(SHAPES), i % len(MOTIONS))
            for i in range(n)]


def wan_video(clips: int, steps: int, out: Path, weights_dir=None, guidance: float = 3.0,
              progress: bool = True) -> tuple[str, list[dict], list[Path]]:
    pipe = TinyVideoPipeline.from_pretrained(weights_dir)
    classifier = load_model(shipped_path("video_classifier", weights_dir))
    prompts = video_prompts(clips)
    t0 = time.time()
    with torch.inference_mode():
        rows, ref = run(pipe, prompts, steps, VIDEO_SEED, guidance,
                        progress=(lambda s: print(s, flush=True)) if progress else (lambda s: None))
    classify(rows, classifier, pipe.encode(prompts))
    table = []
    for r in rows:
        summary = None if r["per_clip"] is None else tail_summary(r["per_clip"])
        table.append({"method": r["method"], "target_calls": r["target_calls"], "speedup": r["speedup"],
                      "paper": PAPER_WAN.get(r["method"]), "acceptance": r["acceptance"],
                      "psnr_mean": summary and summary["mean"], "psnr_p5": summary and summary["p5"],
                      "psnr_worst": summary and summary["worst"], "temporal": r["temporal"],
                      "motion_read": r["classifier"]["motion"]})
    out.mkdir(parents=True, exist_ok=True)
    setup = {"clips": clips, "steps": steps, "solver": DEFAULT_SOLVER, "guidance": guidance,
             "seeds": [VIDEO_SEED, VIDEO_SEED + clips - 1], "frames": list(ref.shape[1:]), "machine": machine(),
             "seconds": round(time.time() - t0)}
    md = markdown(table, setup)
    files = [out / "wan_video.md", out / "wan_video.json"]
    files[0].write_text(md)
    files[1].write_text(json.dumps({"setup": setup, "rows": table}, indent=1))
    return md, table, files


def markdown(rows: list[dict], setup: dict) -> str:
    lines = [f"## The paper's Wan2.1 table on the tiny video model: {setup['clips']} clips {setup['frames']} (C, T, H, W)",
             "",
             f"Reference: the target alone, {setup['steps']} {setup['solver']} steps (Wan2.1's solver); clip i = prompt "
             f"i of `video_prompts` (every motion in turn), seed {setup['seeds'][0]} + i. Speed-up: the reference's "
             "wall time (timed before and after each clip's rows) over the row's, batch 1, eager. PSNR: per clip, the "
             "mean of its frames' PSNR against the reference clip; mean / 5th percentile / worst clip. Temporal "
             "error: the frame-to-frame change against the reference's (0 = moves alike). Motion read: clips whose "
             f"motion the video classifier reads as prompted. {setup['machine']}; {setup['seconds']} s.",
             "",
             "| method | target calls | speed-up | paper (Wan2.1) | accepted | PSNR mean | p5 | worst clip "
             "| temporal err. | motion read |", "|" + "---|" * 10]
    for r in rows:
        lines.append(f"| {r['method']} | {r['target_calls']:.1f} | {r['speedup']:.2f}x | {r['paper'] or ''} "
                     f"| {fmt_or_dash(r['acceptance'], '.0%')} | {fmt_or_dash(r['psnr_mean'], '.2f')} | {fmt_or_dash(r['psnr_p5'], '.2f')} "
                     f"| {fmt_or_dash(r['psnr_worst'], '.2f')} | {fmt_or_dash(r['temporal'], '.3f')} | {r['motion_read']:.0%} |")
    return "\n".join(lines) + "\n"
