"""Diffusers transformers as the sampler's denoiser: ``(x[b, ...], sigma[b], **cond) -> v[b, ...]``.

One call of a denoiser is ONE forward call of the transformer, whatever the rows: every row
carries its own timestep, so states of different samples at different noise levels batch
together (the verification batch). With classifier-free guidance the conditional and the
unconditional rows of all ``b`` states go into that same forward call (``2b`` rows) and are
combined as ``u + g (c - u)``, the formula all three pipelines use.

Conditioning kwargs are the transformer's own argument names. Per-sample tensors (first
dimension = the sampler's batch) are passed to :func:`sdsv.sample` as ``**cond`` so that the
sampler picks (``expand`` for rows of one sample, no copy) the rows each call needs; their
unconditional counterparts are the same names prefixed with ``negative_``. Everything that is
the same for all rows (rotary position ids, attention kwargs) is fixed when the denoiser is built.

Only ``torch`` is needed here: the module works with any object that behaves like the diffusers
transformer (``model(hidden_states=..., timestep=..., **kwargs, return_dict=False)[0]``).
"""

from __future__ import annotations

from typing import Any

import torch

from ...guidance import combine_guided, guided_conditioning

NEGATIVE = "negative_"


class TransformerDenoiser:
    """A diffusers flow-matching transformer as an SDSV denoiser.

    ``timestep_scale``: the model's timestep is ``sigma * timestep_scale`` (the scheduler's
    ``num_train_timesteps`` for Wan and SD3, which take raw timesteps). Flux takes
    ``timestep / 1000`` and casts the timestep to the latents' dtype first: ``flux_timestep``
    reproduces exactly that arithmetic, so the model sees the very values the pipeline passes.
    ``guidance_scale``: used when ``negative_*`` conditioning is given (CFG on). ``uncond_first``:
    order of the two halves of a guided batch (SD3's pipeline puts the unconditional rows first).
    ``static``: kwargs passed unchanged to every call; ``negative_static`` overrides them for the
    unconditional rows (Flux's text position ids of the negative prompt).
    """

    sdsv_pure = True  # the timestep is computed anew; diffusers' transformers do not write into their inputs

    def __init__(
        self,
        transformer: Any,
        *,
        timestep_scale: float = 1000.0,
        flux_timestep: bool = False,
        guidance_scale: float = 1.0,
        uncond_first: bool = False,
        static: dict | None = None,
        negative_static: dict | None = None,
        name: str = "transformer",
    ):
        if not callable(transformer):
            raise TypeError(f"{name} must be a callable transformer module, got {type(transformer).__name__}")
        if guidance_scale < 0:
            raise ValueError(f"guidance scale must be >= 0, got {guidance_scale}")
        self.transformer = transformer
        self.timestep_scale = timestep_scale
        self.flux_timestep = flux_timestep
        self.guidance_scale = float(guidance_scale)
        self.uncond_first = uncond_first
        self.static = dict(static or {})
        self.negative_static = dict(negative_static or {})
        self.name = name
        self.dtype = getattr(transformer, "dtype", None)
        self.timestep_table: tuple[torch.Tensor, torch.Tensor] | None = None

    def use_timesteps(self, sigmas: torch.Tensor, timesteps: torch.Tensor) -> "TransformerDenoiser":
        """Pass the scheduler's own ``timesteps[i]`` for a row at ``sigmas[i]`` instead of
        ``sigma * timestep_scale``: the multistep schedulers (DPM-Solver, UniPC) store their
        timesteps as integers (``int64(sigma * 1000)``), and the pipeline hands those to the model."""
        if sigmas.dim() != 1 or sigmas.shape != timesteps.shape:
            raise ValueError(f"sigmas and timesteps must be 1-D of one length, got {tuple(sigmas.shape)} and "
                             f"{tuple(timesteps.shape)}")
        self.timestep_table = (sigmas.to(torch.float64), timesteps)
        return self

    # ---- pieces -----------------------------------------------------------------------------
    def timestep(self, sigma: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if self.timestep_table is not None:  # the row's schedule step (the nearest sigma: rows are schedule points)
            sig, ts = self.timestep_table
            t = ts.to(sigma.device)[(sigma.to(torch.float64)[:, None] - sig.to(sigma.device)[None]).abs().argmin(1)]
        else:
            t = sigma.to(torch.float32) * self.timestep_scale  # == scheduler.timesteps (same fp32 op)
        if self.flux_timestep:
            return t.to(x.dtype) / 1000
        return t

    def _to_model(self, v):
        """Cast floating inputs to the model's dtype only when they differ (a draft kept in
        another precision); equal dtypes pass untouched so the target sees the pipeline's bits."""
        if isinstance(v, torch.Tensor) and v.is_floating_point() and self.dtype is not None and v.dtype != self.dtype:
            return v.to(self.dtype)
        return v

    def forward(self, hidden: torch.Tensor, timestep: torch.Tensor, cond: dict, negative: bool = False) -> torch.Tensor:
        """One forward call of the transformer on ``hidden`` (any number of rows)."""
        static = {**self.static, **self.negative_static} if negative else self.static
        kwargs = {k: (v if k in ("guidance",) else self._to_model(v)) for k, v in cond.items()}
        out = self.transformer(hidden_states=self._to_model(hidden), timestep=timestep, **static, **kwargs,
                               return_dict=False)
        return out[0] if isinstance(out, (tuple, list)) else getattr(out, "sample", out)

    # ---- the sampler's callable ---------------------------------------------------------------
    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, **cond) -> torch.Tensor:
        neg = {k[len(NEGATIVE):]: cond.pop(k) for k in list(cond) if k.startswith(NEGATIVE)}
        t = self.timestep(sigma, x)
        if not neg:
            return self.forward(x, t, cond).to(x.dtype)
        missing = set(neg) - set(cond)
        if missing:
            raise ValueError(f"negative conditioning {sorted(NEGATIVE + k for k in missing)} has no positive counterpart")
        can_batch = not self.negative_static or all(
            _same(self.negative_static[k], self.static.get(k)) for k in self.negative_static)
        can_batch = can_batch and all(
            isinstance(neg[k], torch.Tensor) and neg[k].shape == cond[k].shape for k in neg)
        if can_batch:  # cond and uncond rows in ONE forward call (per-row kwargs such as Flux's guidance repeated)
            both = guided_conditioning(cond, neg, x.shape[0], other_first=self.uncond_first)
            out = self.forward(torch.cat([x, x]), torch.cat([t, t]), both)
            return combine_guided(out, self.guidance_scale, self.uncond_first).to(x.dtype)
        # e.g. a negative prompt of another length: two calls, as the pipeline does
        c = self.forward(x, t, cond)
        u = self.forward(x, t, {**{k: v for k, v in cond.items() if k not in neg}, **neg}, negative=True)
        return (u + self.guidance_scale * (c - u)).to(x.dtype)

    def __repr__(self) -> str:
        cls = type(self.transformer).__name__
        return f"TransformerDenoiser({cls}, guidance_scale={self.guidance_scale:g})"


def _same(a, b) -> bool:
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        return a.shape == b.shape and a.dtype == b.dtype and bool((a == b).all())
    return a is b or a == b


def flux_denoiser(transformer, *, txt_ids, img_ids, true_cfg_scale: float = 1.0, negative_txt_ids=None,
                  joint_attention_kwargs: dict | None = None) -> TransformerDenoiser:
    """Flux (``FluxTransformer2DModel``): packed latents ``[b, seq, 4 C]``; the model takes
    ``timestep / 1000``; conditioning ``encoder_hidden_states``, ``pooled_projections`` and, for
    guidance-distilled checkpoints (Flux.1-dev), ``guidance`` (the embedded guidance scale, one
    value per row). True CFG: add ``negative_encoder_hidden_states`` and
    ``negative_pooled_projections`` and set ``true_cfg_scale > 1``."""
    neg = {} if negative_txt_ids is None else {"txt_ids": negative_txt_ids}
    return TransformerDenoiser(
        transformer, flux_timestep=True, guidance_scale=true_cfg_scale,
        static={"txt_ids": txt_ids, "img_ids": img_ids, "joint_attention_kwargs": joint_attention_kwargs},
        negative_static=neg, name="Flux transformer",
    )


def wan_denoiser(transformer, *, guidance_scale: float = 1.0, num_train_timesteps: int = 1000,
                 attention_kwargs: dict | None = None) -> TransformerDenoiser:
    """Wan2.1 (``WanTransformer3DModel``): video latents ``[b, C, F, H, W]``, raw timesteps
    ``sigma * num_train_timesteps``; conditioning ``encoder_hidden_states`` (+ ``negative_``)."""
    return TransformerDenoiser(
        transformer, timestep_scale=num_train_timesteps, guidance_scale=guidance_scale,
        static={"attention_kwargs": attention_kwargs}, name="Wan transformer",
    )


def sd3_denoiser(transformer, *, guidance_scale: float = 1.0, num_train_timesteps: int = 1000,
                 joint_attention_kwargs: dict | None = None) -> TransformerDenoiser:
    """SD3 (``SD3Transformer2DModel``): latents ``[b, C, H, W]``, raw timesteps; conditioning
    ``encoder_hidden_states`` and ``pooled_projections`` (+ ``negative_``); a guided batch puts
    the unconditional rows first, as the pipeline does."""
    return TransformerDenoiser(
        transformer, timestep_scale=num_train_timesteps, guidance_scale=guidance_scale, uncond_first=True,
        static={"joint_attention_kwargs": joint_attention_kwargs}, name="SD3 transformer",
    )
