"""Text-to-video with the tiny video models: :class:`~sdsv.tiny.pipeline.TinyPipeline`'s call on clips.

Everything the image pipeline does carries over unchanged: the sampler treats a latent's
dimensions after the first as one state (clips ``[b, 3, T, H, W]`` like images), and the
self-draft forecasts the blocks' residual over tokens whatever they cover. What differs is
the prompt ("a <colour> <shape> <motion>"), the noise's shape, the trained draft (``lite``;
there is no ``svd`` video draft) and the pipeline's own step rule, UniPC, as Wan's.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from ..._checks import as_seeds
from ..pipeline import CompileUnavailable, TinyPipeline
from ...result import SampleStats
from ..weights import load_model, shipped_path
from .data import parse_prompt
from .model import TinyVideoDiT

DEFAULT_SOLVER = "unipc"


@dataclass
class TinyVideoOutput:
    frames: torch.Tensor  # [b, 3, T, H, W] in [0, 1]
    latents: torch.Tensor  # [b, 3, T, H, W], the model's space ([-1, 1] nominal)
    stats: SampleStats


class TinyVideoPipeline(TinyPipeline):
    """The video target, its trained ``lite`` draft and ``"self"`` (the target forecasting its
    own blocks). Called like :class:`TinyPipeline`; returns ``.frames``."""

    own_solver = DEFAULT_SOLVER  # Wan's: the faithful intent samples with it
    prompt_form = "'a <colour> <shape> <motion>'"

    @classmethod
    def from_pretrained(cls, weights_dir: str | Path | None = None,
                        names: Sequence[str] = ("target", "lite")) -> "TinyVideoPipeline":
        return cls({n: load_model(shipped_path(f"video_{n}", weights_dir)) for n in names})

    @property
    def target(self) -> TinyVideoDiT:
        return self.models["target"]

    def encode(self, prompts: Sequence[str]) -> torch.Tensor:
        return torch.tensor([parse_prompt(p) for p in prompts], dtype=torch.long)

    def noise(self, num: int, seed: int | Sequence[int]) -> torch.Tensor:
        """One generator per clip (seed + i), so a clip does not depend on its batch mates."""
        seeds = as_seeds("seed", seed, num, what="clips")
        cfg = self.target.cfg
        shape = (cfg.channels, cfg.frames, cfg.image_size, cfg.image_size)
        return torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(s)) for s in seeds])

    def compile(self, *args, **kwargs):
        raise CompileUnavailable("torch.compile is not wired up for the video pipeline yet; models stay eager")

    def __call__(self, prompts: Sequence[str] | str, **kwargs) -> TinyVideoOutput:
        """Clips for ``prompts`` ('a <colour> <shape> <motion>'), one seed per clip.

        Takes :meth:`TinyPipeline.__call__`'s keyword arguments (steps, window policy, draft
        ``"self"`` (default) / ``"lite"``, solver, intent, guidance, seed, ...); ``solver``
        defaults to the intent's, UniPC for the faithful one.
        """
        out = super().__call__(prompts, **kwargs)
        return TinyVideoOutput(frames=out.images, latents=out.latents, stats=out.stats)
