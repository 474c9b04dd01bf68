"""Noise schedules of flow-matching samplers (diffusers' FlowMatchEulerDiscreteScheduler)."""

from __future__ import annotations

import torch

from ._checks import as_float, as_int


def flow_match_sigmas(num_steps: int, shift: float = 1.0, dtype=torch.float32) -> torch.Tensor:
    """``num_steps + 1`` sigmas from 1 to 0: linear spacing, then the SD3/Flux time shift
    ``s' = shift s / (1 + (shift - 1) s)`` (``shift=1`` leaves it linear)."""
    num_steps = as_int("num_steps", num_steps, minimum=1)
    shift = as_float("shift", shift, positive=True)
    if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point and not dtype.is_complex):
        raise TypeError(f"dtype must be a floating-point torch.dtype (torch.float32, ...), got {dtype!r}")
    s = torch.linspace(1.0, 0.0, num_steps + 1, dtype=torch.float64)
    s = shift * s / (1 + (shift - 1) * s)
    return s.to(dtype)


def check_sigmas(sigmas: torch.Tensor) -> None:
    """Raise a clear error unless ``sigmas`` is a 1-D, finite, strictly decreasing schedule ending in 0."""
    if not isinstance(sigmas, torch.Tensor) or sigmas.dim() != 1 or sigmas.numel() < 2:
        shape = tuple(sigmas.shape) if isinstance(sigmas, torch.Tensor) else type(sigmas).__name__
        raise ValueError(f"sigmas must be a 1-D tensor of num_steps + 1 >= 2 values, got {shape}")
    if sigmas.device.type == "meta":
        raise ValueError("sigmas are on the meta device: they hold no values (make them on the latents' device or the CPU)")
    if not torch.isfinite(sigmas).all():
        raise ValueError("sigmas contain NaN or inf")
    steps = sigmas[1:] - sigmas[:-1]
    if (steps >= 0).any():
        i = int(torch.nonzero(steps >= 0)[0])
        raise ValueError(
            f"sigmas must be strictly decreasing; sigmas[{i}]={float(sigmas[i]):g} <= sigmas[{i + 1}]={float(sigmas[i + 1]):g}"
        )
    if float(sigmas[-1]) != 0.0:
        raise ValueError(f"sigmas must end in 0 (the clean sample), got {float(sigmas[-1]):g}")
