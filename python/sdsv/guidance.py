"""Classifier-free guidance folded into one velocity, so the sampler stays guidance-agnostic."""

from __future__ import annotations

import math
import numbers
from typing import Callable, Sequence

import torch

from .contract import is_per_row


def guided_conditioning(cond: dict, other: dict, rows: int, other_first: bool = False, shared=()) -> dict:
    """The conditioning of ONE forward call over both guidance branches (``2 rows``): a kwarg in
    ``other`` is ``cat([cond[k], other[k]])`` (``other_first``: the other branch first), a
    per-row kwarg (:func:`sdsv.contract.is_per_row`) not named in ``shared`` is repeated, the
    rest pass as they are."""
    both = {}
    for k, v in cond.items():
        if k in other:
            both[k] = torch.cat([other[k], v] if other_first else [v, other[k]])
        elif k not in shared and is_per_row(v, rows):
            both[k] = torch.cat([v, v])
        else:
            both[k] = v
    return both


def combine_guided(out: torch.Tensor, scale: float, uncond_first: bool = False) -> torch.Tensor:
    """``u + scale (c - u)`` from the output of a call over both branches (``cond`` rows first
    unless ``uncond_first``)."""
    a, b = out.chunk(2)
    c, u = (b, a) if uncond_first else (a, b)
    return u + scale * (c - u)


class ClassifierFreeGuidance:
    """Wrap ``model(x, sigma, **cond)`` into ``v = u + g (c - u)``.

    The conditional and unconditional rows run in ONE forward call of twice the batch: the
    sampler's verification batch of R rows becomes a model batch of 2R. ``uncond`` maps each
    conditioning kwarg to its unconditional value (a tensor broadcastable to the cond tensor's
    shape, e.g. the null label or the empty-prompt embedding). Other tensor kwargs with one row
    per state are repeated for the second half, except those named in ``shared`` (passed as
    they are: say so for a shared tensor whose first dimension happens to equal the row count).
    ``scale == 1`` skips the unconditional half entirely.
    """

    def __init__(self, model: Callable[..., torch.Tensor], scale: float, uncond: dict, shared: Sequence[str] = ()):
        if not callable(model):
            raise TypeError("model must be callable")
        if isinstance(scale, bool) or not isinstance(scale, numbers.Real) or not math.isfinite(scale) or scale < 0:
            raise ValueError(f"guidance scale must be a finite number >= 0, got {scale!r}")
        if not isinstance(uncond, dict):
            raise TypeError(f"uncond must be a dict of conditioning kwarg -> unconditional value, got {type(uncond).__name__}")
        self.model, self.scale, self.uncond = model, float(scale), dict(uncond)
        self.shared = {shared} if isinstance(shared, str) else set(shared)

    @property
    def sdsv_pure(self) -> bool:
        """Guided, the wrapped model sees fresh concatenations, never the caller's tensors."""
        return self.scale != 1.0

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, **cond) -> torch.Tensor:
        if self.scale == 1.0:
            return self.model(x, sigma, **cond)
        missing = set(self.uncond) - set(cond)
        if missing:
            raise ValueError(f"guidance needs the conditioning kwargs {sorted(missing)} (they have unconditional values)")
        rows = x.shape[0]
        uncond = {}
        for k in self.uncond:
            v = cond[k]
            if not isinstance(v, torch.Tensor):
                raise TypeError(f"guided conditioning {k!r} must be a tensor, got {type(v).__name__}")
            try:
                uncond[k] = torch.as_tensor(self.uncond[k], device=v.device, dtype=v.dtype).expand_as(v)
            except RuntimeError as e:
                shape = tuple(torch.as_tensor(self.uncond[k]).shape)
                raise ValueError(f"uncond[{k!r}] of shape {shape} does not broadcast to the conditioning's "
                                 f"shape {tuple(v.shape)}") from e
        both = guided_conditioning(cond, uncond, rows, shared=self.shared)
        out = self.model(torch.cat([x, x]), torch.cat([sigma, sigma]), **both)
        if not isinstance(out, torch.Tensor):
            raise TypeError(f"the guided model returned {type(out).__name__}, expected a tensor of shape "
                            f"{(2 * rows, *x.shape[1:])} (cond rows, then uncond rows)")
        if out.shape != (2 * rows, *x.shape[1:]):
            raise ValueError(f"the guided model returned shape {tuple(out.shape)} for {2 * rows} rows (cond and "
                             f"uncond of {rows} states), expected {(2 * rows, *x.shape[1:])}")
        return combine_guided(out, self.scale)
