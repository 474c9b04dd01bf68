"""What the sampler and every denoiser wrapper agree on about one model call.

* **Per-sample tensors.** A conditioning kwarg belongs to the rows when it is a tensor whose
  first dimension is the row count (unless the caller names the per-row kwargs: a shared tensor
  can have that length by accident).
* **Input copies.** A model gets views of the sampler's buffers only when it declares
  ``sdsv_pure = True`` (it never writes into its arguments); any other gets copies.
* **The output.** A tensor of the input's shape, dtype and device.
* **The timed call.** One call is counted (calls, rows) and timed (synchronised on CUDA) into
  the call's :class:`~sdsv.result.SampleStats`.
"""

from __future__ import annotations

import math
import time
from typing import Iterable

import torch

from .result import SampleStats


def per_row_names(cond: dict, rows: int, names: str | Iterable[str] | None = None) -> set:
    """The kwargs of ``cond`` that hold one row per row: ``names`` when given (one name or
    several), else every tensor whose first dimension is ``rows``."""
    if names is None:
        return {k for k, v in cond.items() if is_per_row(v, rows)}
    return {names} if isinstance(names, str) else set(names)


def is_per_row(value, rows: int) -> bool:
    """Whether ``value`` is a tensor with one row per row (first dimension ``rows``)."""
    return isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape[0] == rows


def is_pure(fn) -> bool:
    """Whether ``fn`` (or the object it is a bound method of) declares ``sdsv_pure = True``: it
    never writes into its arguments, so the sampler may hand it views of its buffers."""
    return bool(getattr(fn, "sdsv_pure", False) or getattr(getattr(fn, "__self__", None), "sdsv_pure", False))


def check_model_output(which: str, out, x: torch.Tensor) -> None:
    """A model's output must be a tensor of its input's shape, dtype and device."""
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"the {which} model returned {type(out).__name__}, expected a tensor of shape {tuple(x.shape)}")
    if out.shape != x.shape:
        raise ValueError(f"the {which} model returned shape {tuple(out.shape)} for input of shape {tuple(x.shape)}")
    if out.dtype != x.dtype or out.device != x.device:
        raise TypeError(
            f"the {which} model returned {out.dtype} on {out.device}, but the latents are "
            f"{x.dtype} on {x.device}: cast the model or the noise so they agree"
        )


def all_finite(t: torch.Tensor) -> bool:
    """Whether every element of ``t`` is finite. A finite sum proves it (NaN and inf propagate
    through a sum) and is cheaper than ``isfinite(t).all()`` (no boolean tensor); only a sum that
    overflowed is checked element by element."""
    return math.isfinite(float(t.sum())) or bool(torch.isfinite(t).all())


def timed_call(which: str, fn, x: torch.Tensor, sigma: torch.Tensor, cond: dict, stats: SampleStats,
               copy_inputs: bool) -> torch.Tensor:
    """``fn(x, sigma, **cond)`` under the contract: copies of the inputs unless ``fn`` is pure,
    counted and timed into ``stats`` (``which``: ``"target"`` or ``"draft"``), output checked."""
    if copy_inputs:
        x, sigma = x.clone(), sigma.clone()
    sync = x.device.type == "cuda"
    if sync:
        torch.cuda.synchronize(x.device)
    t0 = time.perf_counter()
    out = fn(x, sigma, **cond)
    if sync:
        torch.cuda.synchronize(x.device)
    dt = time.perf_counter() - t0
    if which == "target":
        stats.target_calls += 1
        stats.target_evals += x.shape[0]
        stats.target_s += dt
    else:
        stats.draft_calls += 1
        stats.draft_evals += x.shape[0]
        stats.draft_s += dt
    check_model_output(which, out, x)
    return out
