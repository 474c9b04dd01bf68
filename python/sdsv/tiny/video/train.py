"""Train the tiny video models: ``python -m sdsv.tiny.video.train --stage all``.

The image training script's recipe (:mod:`sdsv.tiny.train`) on clips: the same rectified-flow
loss with the shape region weighted up, sigma sampling, AdamW with warm-up and cosine decay,
EMA, 10% label dropout for classifier-free guidance, and the same distillation of the ``lite``
draft to the target's guided velocity. Stages (each seeded, resumable from its checkpoint
``<out>/video_<stage>.ckpt``, each can run alone; later ones load what earlier ones wrote):

* ``target``     — :class:`~sdsv.tiny.video.model.TinyVideoDiT`.
* ``classifier`` — :class:`~sdsv.tiny.video.classifier.VideoClassifier` (colour, shape, motion).
* ``lite``       — every other block of the target (:func:`sdsv.tiny.compress.make_lite`),
                   distilled to its guided velocity at guidance 1..5.

The log goes to ``<out>/video_train_log.md`` (human; how long each stage took) and
``<out>/video_train_log.json`` (per stage); docs/tiny_video.md reads the shipped run's.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from ..compress import block_linear_macs, make_lite
from ..train import (GUIDANCE_RANGE, _optimise, guided_teacher_velocity, sample_sigmas, shape_weights,
                     weighted_mse, write_log)
from ..weights import WEIGHTS_DIR, load_model, save_model
from .classifier import GROUPS, VideoClassifier
from .data import MOTIONS, make_clips
from .model import TinyVideoDiT, TinyVideoDiTConfig

LOG_NAME = "video_train_log.json"


def clip_weights(mask: torch.Tensor) -> torch.Tensor:
    """:func:`sdsv.tiny.train.shape_weights` frame by frame, for masks ``[b, 1, T, H, W]``."""
    b, _, t, h, w = mask.shape
    per_frame = shape_weights(mask.transpose(1, 2).reshape(b * t, 1, h, w))
    return per_frame.reshape(b, t, 1, h, w).transpose(1, 2)


def noisy_clips(batch: int, g: torch.Generator, frames: int, size: int):
    """``(x_t, sigma, labels [b, 3], velocity, per-pixel loss weights)`` of one fresh batch of clips."""
    x0, color, shape, motion, mask = make_clips(batch, g, frames=frames, size=size, return_mask=True)
    noise = torch.randn(x0.shape, generator=g)
    sigma = sample_sigmas(batch, g)
    s = sigma.view(-1, 1, 1, 1, 1)
    xt = (1 - s) * x0 + s * noise
    return xt, sigma, torch.stack([color, shape, motion], 1), noise - x0, clip_weights(mask)


def train_target(args) -> dict:
    cfg = TinyVideoDiTConfig(frames=args.frames, image_size=args.size, patch=args.patch, patch_t=args.patch_t,
                             dim=args.dim, depth=args.depth, heads=args.heads, num_motions=len(MOTIONS))
    torch.manual_seed(args.seed)
    model = TinyVideoDiT(cfg)
    null = torch.tensor(model.null_labels)

    def loss_fn(m, g):
        xt, sigma, labels, v, w = noisy_clips(args.batch, g, cfg.frames, cfg.image_size)
        drop = torch.rand(labels.shape[0], generator=g) < args.label_dropout
        labels = torch.where(drop[:, None], null[None], labels)
        return weighted_mse(m(xt, sigma, labels), v, w)

    ema, hist, secs = _optimise(model, args.target_steps, args.batch, args.lr, args.seed, loss_fn, "video target",
                                log_every=args.log_every, checkpoint=Path(args.out) / "video_target.ckpt")
    save_model(ema, Path(args.out) / "video_target.safetensors")
    return {"params": sum(p.numel() for p in ema.parameters()), "config": cfg.to_dict(), "steps": args.target_steps,
            "batch": args.batch, "lr": args.lr, "seconds": round(secs), "loss": hist}


def train_lite(args) -> dict:
    teacher = load_model(Path(args.out) / "video_target.safetensors")
    draft = make_lite(teacher).train().requires_grad_(True)
    lo, hi = GUIDANCE_RANGE
    cfg = teacher.cfg

    def loss_fn(m, g):
        xt, sigma, labels, _, w = noisy_clips(args.batch, g, cfg.frames, cfg.image_size)
        scale = lo + (hi - lo) * torch.rand(labels.shape[0], generator=g)
        with torch.no_grad():
            want = guided_teacher_velocity(teacher, xt, sigma, labels, scale)
        return weighted_mse(m(xt, sigma, labels, guidance=scale), want, w)

    ema, hist, secs = _optimise(draft, args.distill_steps, args.batch, args.distill_lr, args.seed + 1, loss_fn,
                                "video lite", log_every=args.log_every, checkpoint=Path(args.out) / "video_lite.ckpt")
    save_model(ema, Path(args.out) / "video_lite.safetensors")
    return {"params": sum(p.numel() for p in ema.parameters()), "config": ema.cfg.to_dict(),
            "block_linear_macs_per_token": block_linear_macs(ema),
            "target_block_linear_macs_per_token": block_linear_macs(teacher),
            "steps": args.distill_steps, "batch": args.batch, "lr": args.distill_lr, "seconds": round(secs), "loss": hist}


def classifier_loss(clf: VideoClassifier, clips: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Sum of the cross-entropies of the three prompt words."""
    parts = clf(clips).split(GROUPS, dim=1)
    return sum(F.cross_entropy(p, labels[:, i]) for i, p in enumerate(parts))


def train_classifier(args) -> dict:
    torch.manual_seed(args.seed + 3)
    clf = VideoClassifier(frames=args.frames)

    def loss_fn(m, g):
        x, color, shape, motion = make_clips(args.batch, g, frames=args.frames, size=args.size)
        # robustness to the slight noise of generated clips
        x = x + 0.08 * torch.rand(x.shape[0], 1, 1, 1, 1, generator=g) * torch.randn(x.shape, generator=g)
        return classifier_loss(m, x, torch.stack([color, shape, motion], 1))

    ema, hist, secs = _optimise(clf, args.classifier_steps, args.batch, 2e-3, args.seed + 3, loss_fn, "video classifier",
                                ema_decay=0.99, log_every=args.log_every, checkpoint=Path(args.out) / "video_classifier.ckpt")
    g = torch.Generator().manual_seed(12345)
    x, color, shape, motion = make_clips(1024, g, frames=args.frames, size=args.size)
    with torch.no_grad():
        hit = ema.predict(x) == torch.stack([color, shape, motion], 1)
    save_model(ema, Path(args.out) / "video_classifier.safetensors")
    acc = {w: hit[:, i].float().mean().item() for i, w in enumerate(("color", "shape", "motion"))}
    return {"steps": args.classifier_steps, "batch": args.batch, "seconds": round(secs),
            "heldout_accuracy": {**acc, "all_three": hit.all(1).float().mean().item()}, "loss": hist}


def write_markdown(out: Path) -> None:
    """video_train_log.md: the training log's key numbers for people."""
    log = json.loads((out / LOG_NAME).read_text())
    m = log.get("_machine", {})
    lines = ["# Tiny video models: training log", "",
             f"machine: {m.get('processor')} x{m.get('cpus')} cpus, {m.get('platform')}, torch {m.get('torch')}", "",
             "| stage | params | steps x batch | threads | minutes | final loss | finished |", "|---|---|---|---|---|---|---|"]
    for st in ("target", "lite", "classifier"):
        r = log.get(st)
        if r:
            loss = [h for h in r["loss"] if "loss" in h]
            lines.append(f"| {st} | {r.get('params', '-')} | {r['steps']} x {r['batch']} | {r['threads']} | "
                         f"{r['seconds'] / 60:.1f} | {loss[-1]['loss']:.4f} | {r['finished']} |")
    if "target" in log:
        cfg = log["target"]["config"]
        lines += ["", f"target: {cfg['frames']} frames of {cfg['image_size']}x{cfg['image_size']}, "
                  f"{cfg['patch_t']}x{cfg['patch']}x{cfg['patch']} patches, width {cfg['dim']}, {cfg['depth']} blocks"]
    if "classifier" in log:
        acc = log["classifier"]["heldout_accuracy"]
        lines.append("classifier accuracy on 1024 held-out procedural clips: " +
                     ", ".join(f"{k} {v:.1%}" for k, v in acc.items()))
    for st in ("target", "lite", "classifier"):
        r = log.get(st)
        if r:
            resumed = [h["resumed_at"] for h in r["loss"] if "resumed_at" in h]
            curve = [h for h in r["loss"] if "loss" in h]
            pick = curve[:: max(1, len(curve) // 8)]
            pick += curve[-1:] if pick[-1] is not curve[-1] else []
            lines += ["", f"{st} loss (step: loss): " + ", ".join(f"{h['step']}: {h['loss']:.4f}" for h in pick)
                      + (f"; resumed at step {resumed}" if resumed else "")]
    (out / "video_train_log.md").write_text("\n".join(lines) + "\n")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stage", default="all", choices=["all", "target", "classifier", "lite"])
    p.add_argument("--out", default=str(WEIGHTS_DIR))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--patch", type=int, default=4)
    p.add_argument("--patch-t", type=int, default=2)
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--depth", type=int, default=6)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--distill-lr", type=float, default=3e-4)
    p.add_argument("--label-dropout", type=float, default=0.1)
    p.add_argument("--target-steps", type=int, default=3000)
    p.add_argument("--distill-steps", type=int, default=1200)
    p.add_argument("--classifier-steps", type=int, default=2000)
    p.add_argument("--log-every", type=int, default=50, help="steps between log lines and checkpoints")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stages = ["target", "classifier", "lite"] if args.stage == "all" else [args.stage]
    run = {"target": train_target, "classifier": train_classifier, "lite": train_lite}
    for stage in stages:
        t0 = time.time()
        result = run[stage](args)
        write_log(out, stage, result, name=LOG_NAME)
        write_markdown(out)
        print(f"[{stage}] done in {time.time() - t0:.0f} s: "
              + json.dumps({k: v for k, v in result.items() if k != "loss"})[:400], flush=True)


if __name__ == "__main__":
    main()
