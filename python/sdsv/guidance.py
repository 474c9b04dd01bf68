"""Classifier-free guidance folded into one velocity, so the sampler stays guidance-agnostic."""

from __future__ import annotations

from typing import Callable

import torch


class ClassifierFreeGuidance:
    """Wrap ``model(x, sigma, **cond)`` into ``v = u + g (c - u)``.

    The conditional and unconditional rows run in ONE forward call of twice the batch: the
    sampler's verification batch of R rows becomes a model batch of 2R. ``uncond`` maps each
    conditioning kwarg to its unconditional value (a tensor broadcastable to the cond tensor's
    shape, e.g. the null label or the empty-prompt embedding). ``scale == 1`` skips the
    unconditional half entirely.
    """

    def __init__(self, model: Callable[..., torch.Tensor], scale: float, uncond: dict):
        if not callable(model):
            raise TypeError("model must be callable")
        if scale < 0:
            raise ValueError(f"guidance scale must be >= 0, got {scale}")
        self.model, self.scale, self.uncond = model, float(scale), dict(uncond)

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, **cond) -> torch.Tensor:
        if self.scale == 1.0:
            return self.model(x, sigma, **cond)
        both = {}
        for k, v in cond.items():
            if k in self.uncond:
                u = torch.as_tensor(self.uncond[k], device=v.device, dtype=v.dtype).expand_as(v)
                both[k] = torch.cat([v, u])
            else:
                both[k] = torch.cat([v, v]) if isinstance(v, torch.Tensor) and v.shape[:1] == x.shape[:1] else v
        missing = set(self.uncond) - set(cond)
        if missing:
            raise ValueError(f"guidance needs the conditioning kwargs {sorted(missing)}")
        out = self.model(torch.cat([x, x]), torch.cat([sigma, sigma]), **both)
        c, u = out.chunk(2)
        return u + self.scale * (c - u)
