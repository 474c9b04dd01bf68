"""Measure the trained tiny models (the ``report`` stage of ``sdsv.tiny.train``)."""

from __future__ import annotations

import time
from pathlib import Path

import torch

from ..metrics import psnr
from ..policies import StagePlan
from .data import COLORS, SHAPES, class_index, prompt_of
from .pipeline import DEFAULT_GUIDANCE, TinyPipeline
from .weights import MODEL_NAMES, load_model


def all_prompts() -> list[str]:
    return [prompt_of(c, s) for c in range(len(COLORS)) for s in range(len(SHAPES))]


def classify(classifier, images01: torch.Tensor) -> torch.Tensor:
    return classifier(images01 * 2 - 1).argmax(1)


def forward_ms(fn, batch: int, reps: int = 30) -> float:
    x = torch.randn(batch, 3, 32, 32)
    s = torch.rand(batch)
    labels = torch.zeros(batch, 2, dtype=torch.long)
    with torch.inference_mode():
        for _ in range(3):
            fn(x, s, labels=labels)
        t0 = time.perf_counter()
        for _ in range(reps):
            fn(x, s, labels=labels)
    return (time.perf_counter() - t0) / reps * 1000


@torch.inference_mode()
def report(weights_dir: Path, seeds_per_prompt: int = 2, guidance: float = DEFAULT_GUIDANCE) -> dict:
    pipe = TinyPipeline.from_pretrained(weights_dir)
    clf = load_model(Path(weights_dir) / "classifier.safetensors")
    prompts = all_prompts() * seeds_per_prompt
    seeds = list(range(len(prompts)))
    labels = pipe.encode(prompts)
    truth = class_index(labels[:, 0], labels[:, 1])
    out: dict = {"guidance": guidance, "images": len(prompts)}

    def run(plan, draft="svd", g=guidance):
        return pipe(prompts, policy=plan, draft=draft, guidance=g, seed=seeds).images

    ref = run(StagePlan.target_only(50))
    out["target_50_alignment"] = (classify(clf, ref) == truth).float().mean().item()
    out["target_50_alignment_no_cfg"] = (classify(clf, run(StagePlan.target_only(50), g=1.0)) == truth).float().mean().item()
    out["target_steps_psnr_vs_50"] = {}
    for n in (10, 20, 25):
        out["target_steps_psnr_vs_50"][n] = psnr(run(StagePlan.target_only(n)), ref).mean().item()
    for name in ("lite", "svd"):
        img = run(StagePlan.draft_only(50), draft=name)
        out[f"{name}_draft_only_alignment"] = (classify(clf, img) == truth).float().mean().item()
        out[f"{name}_draft_only_psnr"] = psnr(img, ref).mean().item()
    timing = {"target_cfg_b1": forward_ms(pipe.denoiser("target", guidance), 1),
              "target_cfg_b2": forward_ms(pipe.denoiser("target", guidance), 2)}
    for name in MODEL_NAMES[1:]:
        timing[f"{name}_b1"] = forward_ms(pipe.denoiser(name, guidance), 1)
    out["forward_ms"] = timing
    return out
