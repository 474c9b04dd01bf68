"""Train the tiny Flux: ``python -m sdsv.tiny.flux.train --stage all``.

Stages (each seeded, resumable from its checkpoint in ``--work``, each writing its part of the
diffusers folder ``--out`` so that ``FluxPipeline.from_pretrained(out)`` works after any of them):

* ``vae``         — ``AutoencoderKL`` on the procedural images (MSE + a small KL term); then
                    ``shift_factor`` / ``scaling_factor`` from its latents' statistics. Also writes
                    the frozen text encoders, the tokenizers and the scheduler.
* ``transformer`` — ``FluxTransformer2DModel`` by rectified flow on the VAE's latents, exactly
                    as the pipeline feeds it (packed latents, its own ``encode_prompt``), 10% empty
                    prompts, the guidance input held at 1; the shape region weighted as in
                    :mod:`sdsv.tiny.train`.
* ``guidance``    — distils the guided velocity ``u + g (c - u)`` at ``g`` in 1..5 into the
                    guidance embedding (FLUX.1-dev's convention: one forward per step, no CFG
                    batch), the teacher being the ``transformer`` stage's weights.
* ``draft``       — ``lite``: every other block of each stream, distilled to the guided target.
* ``report``      — what was trained: classifier alignment at 50 steps, few-step PSNR, timings.

The log goes to ``<out>/train_log.json`` and ``train_log.md``.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from ..data import COLORS, IMAGE_SIZE, SHAPES, make_batch, prompt_of
from ..train import GUIDANCE_RANGE, _optimise, sample_sigmas, shape_weights, write_log
from . import components as C

WORK_DIR = C.PIPELINE_DIR.parent / "work"  # checkpoints (git-ignored)
ALL_PROMPTS = [prompt_of(c, s) for c in range(len(COLORS)) for s in range(len(SHAPES))]


# ---- the VAE ----------------------------------------------------------------------------------
def train_vae(args) -> dict:
    dev = torch.device(args.device)
    vae = C.build_vae(args.seed).to(dev)

    def loss_fn(m, g):
        x = make_batch(args.batch, g)[0].to(dev)
        post = m.encode(x).latent_dist
        z = post.mean + post.std * torch.randn(post.mean.shape, generator=g).to(dev)
        rec = m.decode(z).sample
        kl = 0.5 * (post.mean.square() + post.var - 1 - post.logvar).mean()
        return F.mse_loss(rec, x) + args.vae_kl * kl

    ema, hist, secs = _optimise(vae, args.vae_steps, args.batch, args.vae_lr, args.seed + 10, loss_fn, "vae",
                                ema_decay=0.99, checkpoint=Path(args.work) / "vae.ckpt")
    ema = ema.cpu()
    g = torch.Generator().manual_seed(4242)
    x, _, _ = make_batch(512, g)
    with torch.no_grad():
        z = ema.encode(x).latent_dist.mean
        rec = ema.decode(z).sample.clamp(-1, 1)
    mse = (rec - x).square().flatten(1).mean(1)
    psnr = (10 * torch.log10(4.0 / mse)).double()  # images in [-1, 1]: peak-to-peak 2
    ema.register_to_config(shift_factor=round(z.mean().item(), 4), scaling_factor=round(1.0 / z.std().item(), 4))
    _save(ema, Path(args.out) / "vae")
    _write_fixed_parts(Path(args.out), args.seed)
    return {"params": sum(p.numel() for p in ema.parameters()), "steps": args.vae_steps, "batch": args.batch,
            "seconds": round(secs), "loss": hist, "reconstruction_psnr_mean": psnr.mean().item(),
            "reconstruction_psnr_p5": psnr.quantile(0.05).item(),
            "shift_factor": ema.config.shift_factor, "scaling_factor": ema.config.scaling_factor}


def _write_fixed_parts(out: Path, seed: int) -> None:
    """Text encoders, tokenizers and scheduler: untrained, written once beside the VAE."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    clip, t5 = C.build_text_encoders(seed)
    clip.save_pretrained(out / "text_encoder")
    t5.save_pretrained(out / "text_encoder_2")
    C.build_tokenizer(with_bos=True).save_pretrained(out / "tokenizer")
    C.build_tokenizer(with_bos=False).save_pretrained(out / "tokenizer_2")
    FlowMatchEulerDiscreteScheduler(**C.SCHEDULER).save_pretrained(out / "scheduler")
    (out / "model_index.json").write_text(json.dumps(C.model_index(), indent=2) + "\n")


# ---- what the pipeline feeds the transformer --------------------------------------------------
class Conditioning:
    """The pipeline's own prompt embeddings of every prompt and of the empty one (computed once:
    the text encoders are frozen), the VAE to encode images, and the latent packing."""

    def __init__(self, out: Path, seed: int, device: str = "cpu"):
        from diffusers import AutoencoderKL, FluxPipeline

        self.vae = AutoencoderKL.from_pretrained(str(out / "vae")).eval().requires_grad_(False)
        clip, t5 = C.build_text_encoders(seed)
        pipe = FluxPipeline(scheduler=None, vae=self.vae, text_encoder=clip, tokenizer=C.build_tokenizer(True),
                            text_encoder_2=t5, tokenizer_2=C.build_tokenizer(False), transformer=None)
        with torch.no_grad():
            embeds, pooled, self.txt_ids = pipe.encode_prompt(ALL_PROMPTS + [""], prompt_2=None,
                                                              max_sequence_length=C.TEXT_LEN)
        self.device = torch.device(device)
        self.vae = self.vae.to(self.device)
        self.txt_ids = self.txt_ids.to(self.device)
        self.embeds, self.pooled = embeds.to(self.device), pooled.to(self.device)  # row len(ALL_PROMPTS): the empty prompt
        side = IMAGE_SIZE // 2
        self.img_ids = FluxPipeline._prepare_latent_image_ids(1, side // 2, side // 2, self.device, torch.float32)
        self.pack = lambda z: FluxPipeline._pack_latents(z, z.shape[0], z.shape[1], side, side)

    def batch(self, n: int, g: torch.Generator, dropout: float):
        """``(x_t packed, sigma, prompt rows, velocity, loss weights)`` of ``n`` fresh images."""
        # data and noise drawn on the CPU from one generator (the same stream on any device)
        x, color, shape, mask = make_batch(n, g, return_mask=True)
        with torch.no_grad():
            z = self.vae.encode(x.to(self.device)).latent_dist.mean
        z = (z - self.vae.config.shift_factor) * self.vae.config.scaling_factor
        noise = torch.randn(z.shape, generator=g).to(self.device)
        sigma = sample_sigmas(n, g).to(self.device)
        s = sigma[:, None, None, None]
        rows = color * len(SHAPES) + shape
        rows = torch.where(torch.rand(n, generator=g) < dropout, torch.full_like(rows, len(ALL_PROMPTS)), rows).to(self.device)
        w = F.max_pool2d(shape_weights(mask.to(self.device)), 2).expand(-1, z.shape[1], -1, -1)
        return (self.pack((1 - s) * z + s * noise), sigma, rows, self.pack(noise - z), self.pack(w.contiguous()))

    def velocity(self, model, xt, sigma, rows, guidance):
        return model(hidden_states=xt, timestep=sigma, guidance=guidance, pooled_projections=self.pooled[rows],
                     encoder_hidden_states=self.embeds[rows], txt_ids=self.txt_ids, img_ids=self.img_ids,
                     return_dict=False)[0]


def _save(model, folder: Path) -> None:
    """Ship fp16 weights (half the size; ``from_pretrained`` loads them as fp32), and no record of
    the folder a model was loaded from (``_name_or_path``: a path on the training machine)."""
    copy.deepcopy(model).half().cpu().save_pretrained(folder)
    config = Path(folder) / "config.json"
    cfg = json.loads(config.read_text())
    if cfg.pop("_name_or_path", None) is not None:
        config.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")


def _weighted_mse(pred, want, w):
    return ((pred - want).square() * w).mean() / w.mean()


def _load_transformer(folder: Path):
    from diffusers import FluxTransformer2DModel

    return FluxTransformer2DModel.from_pretrained(str(folder))


def train_transformer(args) -> dict:
    out = Path(args.out)
    cond = Conditioning(out, args.seed, args.device)
    model = _load_transformer(Path(args.init_from)) if args.init_from else C.build_transformer(args.seed)
    model.to(cond.device).train()
    ones = torch.ones(args.batch, device=cond.device)

    def loss_fn(m, g):
        xt, sigma, rows, v, w = cond.batch(args.batch, g, args.label_dropout)
        return _weighted_mse(cond.velocity(m, xt, sigma, rows, ones), v, w)

    ema, hist, secs = _optimise(model, args.transformer_steps, args.batch, args.lr, args.seed + 20, loss_fn,
                                "transformer", checkpoint=Path(args.work) / "transformer.ckpt")
    _save(ema, out / "transformer")
    return {"params": sum(p.numel() for p in ema.parameters()), "config": dict(ema.config), "steps": args.transformer_steps,
            "batch": args.batch, "seconds": round(secs), "loss": hist,
            **({"init_from": args.init_from} if args.init_from else {})}


def _distill(student, teacher_velocity, cond, args, desc, checkpoint) -> tuple:
    """Fit ``student(x, sigma, prompt, g)`` to ``teacher_velocity(x, sigma, prompt rows, g)`` at
    guidance scales ``g`` drawn in ``GUIDANCE_RANGE``."""
    lo, hi = GUIDANCE_RANGE

    def loss_fn(m, g):
        xt, sigma, rows, _, w = cond.batch(args.batch, g, dropout=0.0)
        scale = (lo + (hi - lo) * torch.rand(args.batch, generator=g)).to(cond.device)
        with torch.no_grad():
            want = teacher_velocity(xt, sigma, rows, scale)
        return _weighted_mse(cond.velocity(m, xt, sigma, rows, scale), want, w)

    return _optimise(student, args.distill_steps, args.batch, args.distill_lr, args.seed + 30, loss_fn, desc,
                     checkpoint=checkpoint)


def train_guidance(args) -> dict:
    out = Path(args.out)
    cond = Conditioning(out, args.seed, args.device)
    teacher = _load_transformer(out / "transformer").to(cond.device).eval().requires_grad_(False)
    empty = torch.full((args.batch,), len(ALL_PROMPTS), device=cond.device)
    ones = torch.ones(2 * args.batch, device=cond.device)

    def guided(xt, sigma, rows, scale):  # u + g (c - u), cond and uncond rows in one call
        c, u = cond.velocity(teacher, torch.cat([xt, xt]), torch.cat([sigma, sigma]), torch.cat([rows, empty]), ones).chunk(2)
        return u + scale[:, None, None] * (c - u)

    student = copy.deepcopy(teacher).train().requires_grad_(True)
    ema, hist, secs = _distill(student, guided, cond, args, "guidance", Path(args.work) / "guidance.ckpt")
    _save(teacher, Path(args.work) / "unguided_transformer")  # the teacher, kept for the record
    _save(ema, out / "transformer")
    return {"steps": args.distill_steps, "batch": args.batch, "seconds": round(secs), "loss": hist}


def make_lite(target):
    """Every other block of each stream (the paper's layer-pruned draft), same widths."""
    cfg = dict(target.config)
    keep_double = list(range(0, cfg["num_layers"], 2))
    keep_single = list(range(0, cfg["num_single_layers"], 2))
    lite = C.build_transformer(num_layers=len(keep_double), num_single_layers=len(keep_single))
    state = {}
    for k, v in target.state_dict().items():
        for prefix, keep in (("transformer_blocks.", keep_double), ("single_transformer_blocks.", keep_single)):
            if k.startswith(prefix):
                i, rest = k[len(prefix):].split(".", 1)
                if int(i) in keep:
                    state[f"{prefix}{keep.index(int(i))}.{rest}"] = v
                break
        else:
            state[k] = v
    lite.load_state_dict(state)
    return lite


def train_draft(args) -> dict:
    """The ``lite`` draft, fitted to the guidance-distilled target at the same guidance scale."""
    out = Path(args.out)
    cond = Conditioning(out, args.seed, args.device)
    target = _load_transformer(out / "transformer").to(cond.device).eval().requires_grad_(False)
    lite = make_lite(target).to(cond.device).train()
    ema, hist, secs = _distill(lite, lambda xt, sigma, rows, scale: cond.velocity(target, xt, sigma, rows, scale),
                               cond, args, "draft lite", Path(args.work) / "lite.ckpt")
    _save(ema, out / "draft_lite")
    return {"params": sum(p.numel() for p in ema.parameters()), "config": dict(ema.config),
            "steps": args.distill_steps, "batch": args.batch, "seconds": round(secs), "loss": hist}


def snapshot(args) -> dict:
    """The transformer stage's EMA weights so far, written to the folder (for a pipeline that loads
    while training goes on, or to carry a run over to another machine: ``--init-from`` warm-starts
    from the folder when the checkpoint is not there)."""
    ckpt = Path(args.work) / "transformer.ckpt"
    if not ckpt.exists():
        raise SystemExit(f"--stage snapshot: no checkpoint at {ckpt}")
    ck = torch.load(ckpt, weights_only=False)
    model = C.build_transformer(args.seed)
    model.load_state_dict(ck["ema"])
    _save(model, Path(args.out) / "transformer")
    loss = [h for h in ck["history"] if "loss" in h]
    return {"of_stage": "transformer", "step": ck["step"], "of_steps": args.transformer_steps,
            "loss": loss[-1]["loss"] if loss else None}


def stage_seconds(record: dict) -> float:
    """A stage's training time over all its runs: a resumed run's clock starts again at zero, so
    each earlier run counts up to its last logged step (its time after that was redone)."""
    total, last = 0.0, 0.0
    for h in record.get("loss", []):
        if "resumed_at" in h:
            total, last = total + last, 0.0
        else:
            last = h.get("elapsed_s", last)
    return total + record["seconds"]


def write_markdown(out: Path) -> None:
    """``train_log.md``: the log's key numbers for people (``train_log.json`` has everything)."""
    log = json.loads((out / "train_log.json").read_text())
    m = log.get("_machine", {})
    lines = ["# Tiny Flux: training log", "",
             f"machine: {m.get('processor')} x{m.get('cpus')} cpus, {m.get('platform')}, torch {m.get('torch')}", "",
             "| stage | params | steps x batch | threads | minutes | final loss |", "|---|---|---|---|---|---|"]
    snap = log.get("snapshot")
    if snap and "transformer" not in log:
        lines.insert(4, f"**In training**: the shipped transformer is the EMA after step {snap['step']} of "
                        f"{snap['of_steps']} of the transformer stage (loss {snap['loss']:.4f}), not yet guidance-distilled.\n")
    for st in ("vae", "transformer", "guidance", "draft"):
        r = log.get(st)
        if r:
            loss = [h for h in r.get("loss", []) if "loss" in h]
            resumed = [h["resumed_at"] for h in r.get("loss", []) if "resumed_at" in h]
            lines.append(f"| {st} | {r.get('params', '-')} | {r['steps']} x {r['batch']} | {r.get('threads', '-')} | "
                         f"{stage_seconds(r) / 60:.1f}{' (resumed at ' + ', '.join(map(str, resumed)) + ')' if resumed else ''} | "
                         f"{loss[-1]['loss']:.4f} |")
    if "vae" in log:
        v = log["vae"]
        lines += ["", f"VAE reconstruction PSNR on 512 held-out images: {v['reconstruction_psnr_mean']:.2f} dB mean, "
                  f"{v['reconstruction_psnr_p5']:.2f} dB 5th percentile"]
    rep = log.get("report")
    if rep:
        fmt = lambda t: f"{t['mean']:.2f} / {t['p5']:.2f} / {t['worst']:.2f}"
        lines += ["", f"Measured through `FluxPipeline` on {rep['images']} images (every prompt, seeds "
                  f"{rep['seeds'][0]}..{rep['seeds'][1]}), guidance {rep['guidance']:g}, 50 steps unless said:", "",
                  f"- classified as their prompt: {rep['alignment_50']:.1%} (guidance 1: {rep['alignment_50_guidance_1']:.1%})"]
        for n, t in rep["steps_psnr_vs_50"].items():
            lines.append(f"- {n} steps vs 50, PSNR mean / p5 / worst: {fmt(t)} dB")
        if "lite_draft_only_psnr" in rep:
            lines.append(f"- draft-only `lite` vs the target: {fmt(rep['lite_draft_only_psnr'])} dB, classified as prompt "
                         f"{rep['lite_draft_only_alignment']:.1%}")
        lines.append("- one forward (ms, batch 1): " + ", ".join(f"{k} {v:.2f}" for k, v in rep["forward_ms"].items()))
    (out / "train_log.md").write_text("\n".join(lines) + "\n")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stage", default="all", choices=["all", "vae", "transformer", "guidance", "draft", "report", "snapshot"],
                   help="snapshot: write the transformer stage's EMA weights so far into the folder")
    p.add_argument("--out", default=str(C.PIPELINE_DIR), help="the diffusers folder written")
    p.add_argument("--work", default=str(WORK_DIR), help="checkpoints, for resuming")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu", help="e.g. cuda: a GPU trains every stage in minutes")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--vae-steps", type=int, default=3000)
    p.add_argument("--vae-lr", type=float, default=1e-3)
    p.add_argument("--vae-kl", type=float, default=1e-4)
    p.add_argument("--transformer-steps", type=int, default=6000)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--label-dropout", type=float, default=0.1)
    p.add_argument("--init-from", default=None, help="a transformer folder to warm-start the transformer stage from")
    p.add_argument("--distill-steps", type=int, default=1500)
    p.add_argument("--distill-lr", type=float, default=3e-4)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    out, work = Path(args.out), Path(args.work)
    out.mkdir(parents=True, exist_ok=True), work.mkdir(parents=True, exist_ok=True)
    stages = ["vae", "transformer", "guidance", "draft", "report"] if args.stage == "all" else [args.stage]
    for stage in stages:
        t0 = time.time()
        if stage == "report":
            from .report import report  # needs the classifier and the pipeline; imported late on purpose

            result = report(out)
        else:
            result = {"vae": train_vae, "transformer": train_transformer, "guidance": train_guidance,
                      "draft": train_draft, "snapshot": snapshot}[stage](args)
        result["wall_s"] = round(time.time() - t0)
        write_log(out, stage, result)
        write_markdown(out)
        print(f"[{stage}] done: " + json.dumps({k: v for k, v in result.items() if k != "loss"})[:400], flush=True)


if __name__ == "__main__":
    main()
