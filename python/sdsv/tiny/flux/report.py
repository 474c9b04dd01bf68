"""Measure the trained tiny Flux through ``FluxPipeline`` itself (the ``report`` training stage)."""

from __future__ import annotations

import time
from pathlib import Path

import torch

from ...metrics import psnr, tail_summary
from ..data import class_index, parse_prompt
from ..weights import load_model, shipped_path
from . import components as C

REPORT_SEEDS = 30000  # first seed of the report's images; nothing was chosen on them
GUIDANCE = 3.0


def all_prompts() -> list[str]:
    from ..report import all_prompts as prompts

    return prompts()


def draw(pipe, prompts, seeds, steps: int, guidance: float = GUIDANCE, chunk: int = 48) -> torch.Tensor:
    """``[n, 3, 32, 32]`` images in [0, 1], one generator per image (a sample does not depend on
    its batch mates), in chunks of ``chunk`` prompts."""
    out = []
    for i in range(0, len(prompts), chunk):
        gens = [torch.Generator().manual_seed(int(s)) for s in seeds[i:i + chunk]]
        out.append(pipe(prompts[i:i + chunk], generator=gens, output_type="pt",
                        **C.call_kwargs(steps=steps, guidance=guidance)).images)
    return torch.cat(out).float()


def alignment(images01: torch.Tensor, prompts) -> float:
    """Share of images the project's classifier reads as their prompt's (colour, shape)."""
    clf = load_model(shipped_path("classifier"))
    truth = torch.tensor([class_index(*map(torch.tensor, parse_prompt(p))).item() for p in prompts])
    with torch.inference_mode():
        return (clf(images01 * 2 - 1).argmax(1) == truth).float().mean().item()


def forward_ms(transformer, batch: int = 1, reps: int = 20) -> float:
    from diffusers import FluxPipeline

    x = torch.randn(batch, 64, transformer.config.in_channels)
    kw = dict(timestep=torch.full((batch,), 0.5), guidance=torch.full((batch,), GUIDANCE),
              pooled_projections=torch.randn(batch, C.TEXT_DIM), encoder_hidden_states=torch.randn(batch, C.TEXT_LEN, C.TEXT_DIM),
              txt_ids=torch.zeros(C.TEXT_LEN, 3), img_ids=FluxPipeline._prepare_latent_image_ids(1, 8, 8, "cpu", torch.float32),
              return_dict=False)
    with torch.inference_mode():
        for _ in range(3):
            transformer(x, **kw)
        t0 = time.perf_counter()
        for _ in range(reps):
            transformer(x, **kw)
    return (time.perf_counter() - t0) / reps * 1000


@torch.inference_mode()
def report(folder: Path, seeds_per_prompt: int = 4) -> dict:
    from diffusers import FluxTransformer2DModel

    pipe = C.load_pipeline(folder)
    pipe.set_progress_bar_config(disable=True)
    prompts = all_prompts() * seeds_per_prompt
    seeds = [REPORT_SEEDS + i for i in range(len(prompts))]
    ref = draw(pipe, prompts, seeds, 50)
    out: dict = {"images": len(prompts), "guidance": GUIDANCE, "seeds": [seeds[0], seeds[-1]],
                 "alignment_50": alignment(ref, prompts),
                 "alignment_50_guidance_1": alignment(draw(pipe, prompts, seeds, 50, guidance=1.0), prompts),
                 "steps_psnr_vs_50": {n: tail_summary(psnr(draw(pipe, prompts, seeds, n), ref))
                                      for n in (10, 20, 25)}}
    timing = {"target_b1": forward_ms(pipe.transformer)}
    draft_dir = Path(folder) / "draft_lite"
    if draft_dir.exists():
        lite = FluxTransformer2DModel.from_pretrained(str(draft_dir)).eval()
        target = pipe.transformer
        pipe.transformer = lite
        img = draw(pipe, prompts, seeds, 50)
        pipe.transformer = target
        out["lite_draft_only_psnr"] = tail_summary(psnr(img, ref))
        out["lite_draft_only_alignment"] = alignment(img, prompts)
        timing["lite_b1"] = forward_ms(lite)
    out["forward_ms"] = timing
    return out
