"""A first look at speculative sampling on the tiny video model (issue 24).

On a few prompts, target-only UniPC with 50 steps is the reference; against it: the target
alone with fewer steps, the trained ``lite`` draft (Improved-Draft, SDSV-fast/slow/default,
the paper's Wan rows) and the self-draft (the unverified cache, error-controlled windows,
SDSV's verified windows). For each: target calls and wall time against the reference (the
reference clip is timed before and after each prompt's configurations, so both see the same
machine), per-frame PSNR against the reference clip (mean, worst clip, worst frame, and by
frame index: does the error grow along the time axis?) and the video classifier's reading of
the clips (colour, shape, motion). The reference clips are drawn to ``<out>.png``.

    python benchmarks/video_first_look.py --out benchmarks/results/video_first_look
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from sdsv import StagePlan
from sdsv.demo import machine
from sdsv.methods import DPM_ERROR_CONTROLLED, SELF_SDSV_ACCEPT, Method, cache, error_controlled, fewer_steps
from sdsv.metrics import psnr
from sdsv.tiny.pipeline import DEFAULT_GUIDANCE
from sdsv.tiny.video.pipeline import TinyVideoPipeline
from sdsv.tiny.weights import load_model, shipped_path

PROMPTS = ("a red circle moving left", "a blue square moving right", "a green triangle moving up",
           "a yellow diamond moving down", "a purple cross rotating", "an orange ring growing",
           "a cyan square shrinking", "a white triangle moving left")
SOLVER = "unipc"


def methods(n: int) -> list[Method]:
    on = dict(solver=SOLVER)
    ms = [fewer_steps(k, SOLVER) for k in (25, 15, 10)]
    ms += [Method("improved-draft (lite)", StagePlan.improved_draft(n), "lite", **on),
           Method("sdsv-fast (lite)", StagePlan.fast(n), "lite", **on),
           Method("sdsv-slow (lite)", StagePlan.slow(n), "lite", **on),
           Method("sdsv paper_default (lite)", StagePlan.paper_default(n), "lite", **on)]
    ms += [Method(c.label, c.policy, c.draft, **on) for c in (cache(n, 2), cache(n, 3))]
    ms += [Method(e.label, e.policy, e.draft, **on) for e in
           (error_controlled(n, tol=0.3), error_controlled(n, tol=0.5),
            error_controlled(n, f"error-ctrl (self, k 1-2, tol {DPM_ERROR_CONTROLLED['tol']:g})", **DPM_ERROR_CONTROLLED))]
    ms.append(Method("sdsv-slow (self)", StagePlan.slow(n), "self", accept=SELF_SDSV_ACCEPT, **on))
    return ms


def frame_psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``[b, T]`` PSNR of each frame of clips ``[b, 3, T, H, W]`` in [0, 1]."""
    per_frame = lambda x: x.transpose(1, 2).flatten(0, 1)  # noqa: E731
    return psnr(per_frame(a), per_frame(b)).view(a.shape[0], a.shape[2])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="benchmarks/results/video_first_look")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--prompts", type=int, default=len(PROMPTS))
    ap.add_argument("--guidance", type=float, default=DEFAULT_GUIDANCE)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--weights", default=None, help="folder of the video_*.safetensors (default: the shipped ones)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    pipe = TinyVideoPipeline.from_pretrained(args.weights)
    clf = load_model(shipped_path("video_classifier", args.weights))
    prompts, n = PROMPTS[: args.prompts], args.steps
    labels = pipe.encode(prompts)
    ms = methods(n)
    ref_plan = StagePlan.target_only(n)

    clips = {m.label: [] for m in ms}
    stats = {m.label: [] for m in ms}
    wall = {m.label: 0.0 for m in ms}
    ref_clips, ref_wall = [], 0.0
    t_start = time.time()
    for i, p in enumerate(prompts):
        def reference():
            t0 = time.perf_counter()
            out = pipe(p, seed=i, policy=ref_plan, solver=SOLVER, guidance=args.guidance)
            return out, time.perf_counter() - t0

        out, before = reference()
        ref_clips.append(out.frames[0])
        for m in ms:
            t0 = time.perf_counter()
            o = pipe(p, seed=i, guidance=args.guidance, **m.pipeline_kwargs())
            wall[m.label] += time.perf_counter() - t0
            clips[m.label].append(o.frames[0])
            stats[m.label].append(o.stats)
        _, after = reference()  # the same clip again: only its time is kept
        ref_wall += (before + after) / 2
        print(f"[{i + 1}/{len(prompts)}] {p}: reference {before:.2f} / {after:.2f} s", flush=True)
    ref = torch.stack(ref_clips)

    def read(x):
        with torch.no_grad():
            hit = clf.predict(x * 2 - 1) == labels
        return {w: hit[:, j].float().mean().item() for j, w in enumerate(("color", "shape", "motion"))} | {
            "all": hit.all(1).float().mean().item()}

    rows = [{"method": f"target-only ({n} steps, {SOLVER}) = reference", "target_calls": n, "draft_calls": 0,
             "call_speedup": 1.0, "wall_s": ref_wall, "speedup": 1.0, "acceptance": None,
             "psnr_mean": None, "psnr_min": None, "psnr_worst_frame": None, "psnr_by_frame": None,
             "classifier": read(ref)}]
    for m in ms:
        x = torch.stack(clips[m.label])
        fp = frame_psnr(x, ref)  # [clips, T]
        st = stats[m.label]
        tc = sum(s.target_calls for s in st) / len(st)
        verified = [s for s in st if s.verified_windows]
        rows.append({
            "method": m.label, "schedule_type": m.schedule_type,
            "target_calls": tc, "draft_calls": sum(s.draft_calls for s in st) / len(st),
            "call_speedup": n / tc, "wall_s": wall[m.label], "speedup": ref_wall / wall[m.label],
            "acceptance": sum(s.acceptance_rate for s in verified) / len(verified) if verified else None,
            "psnr_mean": fp.clamp(max=99).mean().item(), "psnr_min": fp.clamp(max=99).mean(1).min().item(),
            "psnr_worst_frame": fp.min().item(), "psnr_by_frame": fp.clamp(max=99).mean(0).tolist(),
            "classifier": read(x),
        })
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"machine": machine(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "steps": n,
            "solver": SOLVER, "guidance": args.guidance, "prompts": list(prompts), "seeds": list(range(len(prompts))),
            "frames": list(ref.shape[1:]), "seconds": round(time.time() - t_start)}
    out.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    write_markdown(out.with_suffix(".md"), meta, rows)
    write_strip(out.with_suffix(".png"), ref)
    print(out.with_suffix(".md").read_text())


def write_strip(path: Path, clips: torch.Tensor, zoom: int = 2) -> None:
    """The clips as a PNG: one row per clip, its frames left to right."""
    from PIL import Image

    b, c, t, h, w = clips.shape
    grid = (clips * 255).round().byte().permute(0, 3, 2, 4, 1).reshape(b * h, t * w, c)
    Image.fromarray(grid.numpy()).resize((t * w * zoom, b * h * zoom), Image.NEAREST).save(path)


def _f(v, fmt):
    return "-" if v is None else format(v, fmt)


def write_markdown(path: Path, meta: dict, rows: list[dict]) -> None:
    lines = ["# Speculative sampling on the tiny video model: a first look", "",
             f"{meta['date']}; {meta['machine']}; eager PyTorch; written by `benchmarks/video_first_look.py`.", "",
             f"{len(meta['prompts'])} prompts (seed i for prompt i), clips {meta['frames']} (C, T, H, W), guidance "
             f"{meta['guidance']:g}; reference: the target alone, {meta['steps']} {meta['solver']} steps. Speedups are "
             "against it (target calls: its calls over the method's; wall: its wall time, measured before and after "
             "each prompt's configurations, over the method's). PSNR (dB) is per frame against the reference clip: "
             "mean over clips and frames, the worst clip's mean, the worst single frame. The classifier reads "
             "colour / shape / motion of each clip (all three right: `all`).", "",
             "| method | target calls | draft calls | call speedup | wall speedup | accepted | PSNR mean | worst clip "
             "| worst frame | colour | shape | motion | all |", "|" + "---|" * 13]
    for r in rows:
        c = r["classifier"]
        lines.append(f"| {r['method']} | {r['target_calls']:.1f} | {r['draft_calls']:.1f} | {r['call_speedup']:.2f}x | "
                     f"{r['speedup']:.2f}x | {_f(r['acceptance'], '.1%')} | {_f(r['psnr_mean'], '.2f')} | "
                     f"{_f(r['psnr_min'], '.2f')} | {_f(r['psnr_worst_frame'], '.2f')} | {c['color']:.0%} | "
                     f"{c['shape']:.0%} | {c['motion']:.0%} | {c['all']:.0%} |")
    t = len(rows[1]["psnr_by_frame"])
    lines += ["", "PSNR (dB) by frame index, mean over the clips:", "",
              "| method | " + " | ".join(f"f{i}" for i in range(t)) + " |", "|" + "---|" * (t + 1)]
    for r in rows[1:]:
        lines.append(f"| {r['method']} | " + " | ".join(f"{v:.1f}" for v in r["psnr_by_frame"]) + " |")
    lines += ["", f"The run took {meta['seconds']} s. Prompts: " + "; ".join(meta["prompts"]) + "."]
    path.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
