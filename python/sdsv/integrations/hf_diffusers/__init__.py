"""SDSV on Hugging Face diffusers pipelines: Flux (``FluxPipeline``), Wan2.1 (``WanPipeline``)
and SD3 (``StableDiffusion3Pipeline``).

* :func:`enable` / :func:`disable` — one call: the plain ``pipe(prompt, ...)`` then samples with
  SDSV (see :mod:`.hook` for how, docs/diffusers.md for what is supported and refused).
* :func:`flux_denoiser`, :func:`wan_denoiser`, :func:`sd3_denoiser` — a transformer as the
  sampler's ``(x, sigma, **cond) -> v`` callable, to drive :func:`sdsv.sample` directly.

This package is named ``hf_diffusers`` so it never shadows the real ``diffusers``; diffusers is
imported only when a pipeline is enabled.
"""

from .denoisers import TransformerDenoiser, flux_denoiser, sd3_denoiser, wan_denoiser
from ...errors import RefusedError
from .hook import SDSVConfig, disable, enable, enabled_config, euler_scheduler_for, is_enabled

__all__ = [
    "RefusedError", "SDSVConfig", "TransformerDenoiser", "disable", "enable", "enabled_config", "euler_scheduler_for",
    "flux_denoiser", "is_enabled", "sd3_denoiser", "wan_denoiser",
]
