"""Train the shipped tiny models: ``python -m sdsv.tiny.train --stage all``.

Stages (each seeded, each can be run alone; later stages load what earlier ones wrote):

* ``target``     — TinyDiT trained by rectified flow on the procedural data, 10% label dropout
                   (so classifier-free guidance works), EMA weights kept.
* ``classifier`` — the small CNN that the metrics use (alignment, feature distances).
* ``lite``/``svd`` — drafts compressed from the target (:mod:`sdsv.tiny.compress`), then
                   distilled to the target's *guided* velocity at guidance scales 1..5.
* ``report``     — measures what was trained: target-only with 10/20/25 steps against 50
                   steps, classifier accuracy on generated images, forward time of each model.

About an hour on 2 CPU cores for the defaults; run it in the background. The log goes to
``<out>/train_log.md`` (human) and ``<out>/train_log.json`` (per stage).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import platform
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from .classifier import ShapeClassifier
from .compress import block_linear_macs, make_lite, make_svd
from .data import COLORS, SHAPES, class_index, make_batch
from .model import TinyDiT, TinyDiTConfig
from .weights import WEIGHTS_DIR, load_model, save_model

GUIDANCE_RANGE = (1.0, 5.0)


def sample_sigmas(n: int, g: torch.Generator) -> torch.Tensor:
    """Half logit-normal (SD3's choice: most weight mid-trajectory), half uniform (coverage of the ends)."""
    ln = torch.sigmoid(torch.randn(n, generator=g))
    un = torch.rand(n, generator=g)
    pick = torch.rand(n, generator=g) < 0.5
    return torch.where(pick, ln, un).clamp(1e-4, 1.0)


def lr_at(step: int, total: int, peak: float, warmup: int) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)))


def ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    with torch.no_grad():
        for pe, pm in zip(ema.parameters(), model.parameters()):
            pe.lerp_(pm, 1 - decay)


def noisy_batch(batch: int, g: torch.Generator):
    """``(x_t, sigma, labels, velocity, per-pixel loss weights)`` of one fresh training batch."""
    x0, color, shape, mask = make_batch(batch, g, return_mask=True)
    noise = torch.randn(x0.shape, generator=g)
    sigma = sample_sigmas(batch, g)
    s = sigma[:, None, None, None]
    xt = (1 - s) * x0 + s * noise
    labels = torch.stack([color, shape], 1)
    return xt, sigma, labels, noise - x0, shape_weights(mask)


SHAPE_WEIGHT = 8.0


def shape_weights(mask: torch.Tensor) -> torch.Tensor:
    """Per-pixel loss weights: 1 + SHAPE_WEIGHT on the shape and a one-pixel band around it.

    The prompt's shape word decides only the outline pixels of a small object, a few percent of
    a plain MSE (docs/tiny_models.md), while the label-independent textured backgrounds dominate it.
    Weighting the object region makes the outline worth learning within a CPU budget.
    """
    band = F.max_pool2d(mask, 3, stride=1, padding=1)
    return 1.0 + SHAPE_WEIGHT * band


def weighted_mse(pred: torch.Tensor, want: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return ((pred - want).square() * w).mean() / w.mean()


def _optimise(model, steps, batch, lr, seed, loss_fn, desc, ema_decay=0.995, log_every=100, checkpoint=None):
    """AdamW + warm-up/cosine LR + EMA. With ``checkpoint`` (a path) the state is saved every
    ``log_every`` steps and a run that finds one resumes from it (same seed stream order is
    not reproduced across a resume; the log says where it resumed)."""
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, betas=(0.9, 0.99), weight_decay=0.0)
    ema = copy.deepcopy(model).requires_grad_(False)
    history, running, start = [], 0.0, 0
    if checkpoint is not None and Path(checkpoint).exists():
        ck = torch.load(checkpoint, weights_only=False)
        model.load_state_dict(ck["model"]), ema.load_state_dict(ck["ema"]), opt.load_state_dict(ck["opt"])
        g.set_state(ck["rng"])
        start, history = ck["step"], ck["history"] + [{"resumed_at": ck["step"]}]
    bar = tqdm(range(start, steps), desc=desc, mininterval=5.0, initial=start, total=steps)
    t0 = time.time()
    for step in bar:
        for group in opt.param_groups:
            group["lr"] = lr_at(step, steps, lr, warmup=min(100, steps // 10 + 1))
        loss = loss_fn(model, g)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        # EMA horizon ~1/(1-decay) steps; copy the weights until 20% (early weights are useless)
        ema_update(ema, model, ema_decay if step > steps // 5 else 0.0)
        running += loss.item()
        if (step + 1) % log_every == 0 or step + 1 == steps:
            n = (step % log_every) + 1
            history.append({"step": step + 1, "loss": running / n, "elapsed_s": round(time.time() - t0, 1)})
            bar.set_postfix(loss=f"{running / n:.4f}")
            running = 0.0
            if checkpoint is not None:
                torch.save({"model": model.state_dict(), "ema": ema.state_dict(), "opt": opt.state_dict(),
                            "rng": g.get_state(), "step": step + 1, "history": history}, checkpoint)
    return ema.eval(), history, time.time() - t0


def train_target(args) -> dict:
    cfg = TinyDiTConfig(dim=args.dim, depth=args.depth, heads=args.heads, patch=args.patch,
                        num_colors=len(COLORS), num_shapes=len(SHAPES))
    torch.manual_seed(args.seed)
    model = TinyDiT(cfg)
    warm = None
    if args.init_from:
        warm = warm_start(model, args.init_from)
    null = torch.tensor(model.null_labels)

    def loss_fn(m, g):
        xt, sigma, labels, v, w = noisy_batch(args.batch, g)
        drop = torch.rand(labels.shape[0], generator=g) < args.label_dropout
        labels = torch.where(drop[:, None], null[None], labels)
        return weighted_mse(m(xt, sigma, labels), v, w)

    ema, hist, secs = _optimise(model, args.target_steps, args.batch, args.lr, args.seed, loss_fn, "target",
                                checkpoint=Path(args.out) / "target.ckpt")
    save_model(ema, Path(args.out) / "target.safetensors")
    return {"params": sum(p.numel() for p in ema.parameters()), "config": cfg.to_dict(),
            "steps": args.target_steps, "batch": args.batch, "seconds": round(secs), "loss": hist,
            **({"warm_start": warm} if warm else {})}


def warm_start(model: TinyDiT, path: str) -> dict:
    """Start from an earlier target's weights (a ``.safetensors`` file or a training ``.ckpt``).

    Parameters the earlier model lacks (e.g. the condition tokens and output conv added after
    the first shipped target) keep their fresh initialisation — both are no-ops at init, so the
    warm-started model starts out computing (nearly) what the earlier one did.
    """
    from safetensors.torch import load_file

    if str(path).endswith(".ckpt"):
        ck = torch.load(path, weights_only=False)
        state, note = ck["ema"], f"EMA weights of {path} after {ck['step']} steps"
    else:
        state, note = load_file(str(path)), f"weights of {path}"
    own = model.state_dict()
    bad = [k for k, v in state.items() if k not in own or own[k].shape != v.shape]
    if bad:
        raise ValueError(f"--init-from {path}: parameters that do not fit this architecture: {bad[:5]}")
    missing = [k for k in own if k not in state]
    model.load_state_dict({k: v.float() for k, v in state.items()}, strict=False)
    print(f"[target] warm start from {note}; freshly initialised: {missing}", flush=True)
    return {"from": note, "fresh_parameters": missing}


def guided_teacher_velocity(teacher: TinyDiT, xt, sigma, labels, scale) -> torch.Tensor:
    """``u + g (c - u)`` with cond and uncond rows in one forward call."""
    null = torch.tensor(teacher.null_labels).expand_as(labels)
    both = teacher(torch.cat([xt, xt]), torch.cat([sigma, sigma]), torch.cat([labels, null]))
    c, u = both.chunk(2)
    return u + scale.view(-1, *[1] * (xt.dim() - 1)) * (c - u)  # images and clips


def distill(args, name: str) -> dict:
    teacher = load_model(Path(args.out) / "target.safetensors")
    draft = make_lite(teacher) if name == "lite" else make_svd(teacher)
    warm = warm_start_draft(draft, Path(args.draft_init_from) / f"{name}.safetensors") if args.draft_init_from else None
    draft.train().requires_grad_(True)
    lo, hi = GUIDANCE_RANGE

    def loss_fn(m, g):
        xt, sigma, labels, _, w = noisy_batch(args.batch, g)
        scale = lo + (hi - lo) * torch.rand(labels.shape[0], generator=g)
        with torch.no_grad():
            want = guided_teacher_velocity(teacher, xt, sigma, labels, scale)
        return weighted_mse(m(xt, sigma, labels, guidance=scale), want, w)

    seed = args.seed + (1 if name == "lite" else 2)
    ema, hist, secs = _optimise(draft, args.distill_steps, args.batch, args.distill_lr, seed, loss_fn, f"distill {name}")
    save_model(ema, Path(args.out) / f"{name}.safetensors")
    return {"params": sum(p.numel() for p in ema.parameters()), "config": ema.cfg.to_dict(),
            "block_linear_macs_per_token": block_linear_macs(ema),
            "target_block_linear_macs_per_token": block_linear_macs(teacher),
            "steps": args.distill_steps, "batch": args.batch, "seconds": round(secs), "loss": hist,
            **({"warm_start": warm} if warm else {})}


def warm_start_draft(draft: TinyDiT, path: Path) -> dict:
    """Continue distilling an earlier draft instead of compressing the target anew.

    After the target is fine-tuned, the previously distilled draft is much closer to it than a
    fresh pruning / truncated SVD of the new weights, so the distillation budget goes further.
    The earlier draft must have exactly the architecture the compression would produce.
    """
    earlier = load_model(path)
    if earlier.cfg != draft.cfg:
        raise ValueError(f"--draft-init-from {path}: its config {earlier.cfg.to_dict()} is not the one compressing "
                         f"this target gives ({draft.cfg.to_dict()})")
    draft.load_state_dict(earlier.state_dict())
    print(f"[{path.stem}] warm start from {path}", flush=True)
    return {"from": str(path)}


def train_classifier(args) -> dict:
    torch.manual_seed(args.seed + 3)
    clf = ShapeClassifier()

    def loss_fn(m, g):
        x, color, shape = make_batch(args.batch, g)
        # robustness to the slight noise / blur of generated images
        x = x + 0.08 * torch.rand(x.shape[0], 1, 1, 1, generator=g) * torch.randn(x.shape, generator=g)
        return F.cross_entropy(m(x), class_index(color, shape))

    ema, hist, secs = _optimise(clf, args.classifier_steps, args.batch, 2e-3, args.seed + 3, loss_fn, "classifier", ema_decay=0.99)
    g = torch.Generator().manual_seed(12345)
    x, color, shape = make_batch(2048, g)
    with torch.no_grad():
        acc = (ema(x).argmax(1) == class_index(color, shape)).float().mean().item()
    save_model(ema, Path(args.out) / "classifier.safetensors")
    return {"steps": args.classifier_steps, "seconds": round(secs), "heldout_accuracy": acc, "loss": hist}


def write_log(out: Path, stage: str, result: dict, name: str = "train_log.json") -> None:
    """Merge one stage's result into ``out/name`` (locked: the two drafts train in parallel)."""
    import fcntl

    path = out / name
    with open(out / ".train_log.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        log = json.loads(path.read_text()) if path.exists() else {}
        result = {**result, "threads": torch.get_num_threads(), "finished": time.strftime("%Y-%m-%d %H:%M:%S")}
        log[stage] = result
        log["_machine"] = {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                           "cpus": __import__("os").cpu_count(), "torch": torch.__version__}
        path.write_text(json.dumps(log, indent=1))


def write_markdown(out: Path) -> None:
    """train_log.md: the training log's key numbers for people (train_log.json has everything)."""
    log = json.loads((out / "train_log.json").read_text())
    m, lines = log.get("_machine", {}), ["# Tiny models: training log", ""]
    lines.append(f"machine: {m.get('processor')} x{m.get('cpus')} cpus, {m.get('platform')}, torch {m.get('torch')}")
    lines += ["", "| stage | params | steps x batch | threads | minutes | final loss |", "|---|---|---|---|---|---|"]
    for st in ("target", "lite", "svd", "classifier"):
        r = log.get(st)
        if r:
            loss = [h for h in r.get("loss", []) if "loss" in h]
            lines.append(f"| {st} | {r.get('params', '-')} | {r['steps']} x {r.get('batch', '-')} | {r.get('threads', '-')} | "
                         f"{r['seconds'] / 60:.1f} | {loss[-1]['loss']:.4f} |" if loss else f"| {st} | - | - | - | - | - |")
    lineage = log.get("target", {}).get("lineage")
    if lineage:
        lines += ["", "The shipped target was trained in stages, each warm-started from the previous one's EMA "
                  "weights (parameters new in a stage start as no-ops):", ""]
        for i, st in enumerate(lineage, 1):
            lines.append(f"{i}. {st['steps']} steps x {st['batch']}, peak lr {st['lr']:g}, {st['minutes']:.0f} min: "
                         f"{st['what']} (final loss {st['final_loss']:.4f})")
    for d in ("lite", "svd"):
        stages = log.get(d, {}).get("lineage")
        if stages:
            lines += ["", f"The `{d}` draft was distilled in stages (`--draft-init-from`):", ""]
            lines += [f"{i}. {st['steps']} steps x {st['batch']}, {st['minutes']:.0f} min: {st['what']}"
                      for i, st in enumerate(stages, 1)]
    rep = log.get("report")
    if rep:
        lines += ["", f"Measured on {rep['images']} generated images (every prompt, {rep['images'] // 48} seeds), "
                  f"guidance {rep['guidance']:g}, 50 Euler steps unless said:", ""]
        lines.append(f"- classifier accuracy on held-out procedural data: {log.get('classifier', {}).get('heldout_accuracy', float('nan')):.1%}")
        lines.append(f"- target samples classified as their prompt: {rep['target_50_alignment']:.1%} "
                     f"(without guidance: {rep['target_50_alignment_no_cfg']:.1%})")
        for n, v in rep["target_steps_psnr_vs_50"].items():
            lines.append(f"- target-only with {n} steps vs 50 steps: PSNR {v:.2f} dB")
        for d in ("lite", "svd"):
            lines.append(f"- draft-only `{d}`: PSNR vs target {rep[f'{d}_draft_only_psnr']:.2f} dB, "
                         f"classified as prompt {rep[f'{d}_draft_only_alignment']:.1%}")
        ft = rep["forward_ms"]
        lines.append("- one forward (ms, batch 1, guided): " + ", ".join(f"{k} {v:.2f}" for k, v in ft.items()))
    (out / "train_log.md").write_text("\n".join(lines) + "\n")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stage", default="all", choices=["all", "target", "classifier", "lite", "svd", "report"])
    p.add_argument("--out", default=str(WEIGHTS_DIR))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--dim", type=int, default=192)
    p.add_argument("--depth", type=int, default=8)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--patch", type=int, default=4)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--distill-lr", type=float, default=3e-4)
    p.add_argument("--label-dropout", type=float, default=0.1)
    p.add_argument("--target-steps", type=int, default=1200)
    p.add_argument("--init-from", default=None,
                   help="warm-start the target from an earlier target (.safetensors or .ckpt)")
    p.add_argument("--distill-steps", type=int, default=300)
    p.add_argument("--draft-init-from", default=None,
                   help="folder with earlier lite/svd drafts of the same architecture to continue distilling")
    p.add_argument("--classifier-steps", type=int, default=600)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stages = ["target", "classifier", "lite", "svd", "report"] if args.stage == "all" else [args.stage]
    for stage in stages:
        if stage == "target":
            result = train_target(args)
        elif stage == "classifier":
            result = train_classifier(args)
        elif stage in ("lite", "svd"):
            result = distill(args, stage)
        else:
            from .report import report  # needs the sampler; imported late on purpose

            result = report(out)
        write_log(out, stage, result)
        if stage == "report":
            write_markdown(out)
        print(f"[{stage}] done: " + json.dumps({k: v for k, v in result.items() if k != "loss"})[:400], flush=True)


if __name__ == "__main__":
    main()
