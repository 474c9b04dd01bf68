"""Random-weight instances of the real diffusers pipelines, small enough for a CPU.

The real classes (``FluxPipeline``, ``WanPipeline``, ``StableDiffusion3Pipeline`` with their
transformers, VAEs and schedulers) built from small configs, with random weights and no text
encoders: the call passes ``prompt_embeds`` (and pooled / negative embeddings) directly. Nothing
is downloaded. They show how :func:`sdsv.enable` plugs into a pipeline and let the tests check it
on every family; their images are noise (random weights), so they say nothing about quality.

``<family>_pipe(seed)`` builds a pipeline, ``<family>_transformer(seed, **config)`` a transformer
of the same family (a draft, or the same one with other sizes), ``<family>_kwargs(batch, cfg,
steps)`` the arguments of one call.
"""

from __future__ import annotations

import torch


def _seeded(fn, seed):
    torch.manual_seed(seed)
    return fn()


# ---- Flux -----------------------------------------------------------------------------------
FLUX_TR = dict(patch_size=1, in_channels=4, num_layers=1, num_single_layers=1, attention_head_dim=16,
               num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=32, axes_dims_rope=[4, 4, 8],
               guidance_embeds=True)


def flux_transformer(seed=0, **over):
    from diffusers import FluxTransformer2DModel
    return _seeded(lambda: FluxTransformer2DModel(**{**FLUX_TR, **over}), seed).eval()


def flux_pipe(seed=0, **transformer_config):
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline
    vae = _seeded(lambda: AutoencoderKL(sample_size=32, in_channels=3, out_channels=3, block_out_channels=(4,),
                                        layers_per_block=1, latent_channels=1, norm_num_groups=1, use_quant_conv=False,
                                        use_post_quant_conv=False, shift_factor=0.0609, scaling_factor=1.5035), seed)
    pipe = FluxPipeline(scheduler=FlowMatchEulerDiscreteScheduler(), vae=vae.eval(), text_encoder=None, tokenizer=None,
                        text_encoder_2=None, tokenizer_2=None, transformer=flux_transformer(seed, **transformer_config))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def flux_kwargs(batch=1, cfg=False, steps=6):
    g = torch.Generator().manual_seed(11)
    kw = dict(prompt_embeds=torch.randn(batch, 8, 32, generator=g), pooled_prompt_embeds=torch.randn(batch, 32, generator=g),
              height=16, width=16, num_inference_steps=steps, guidance_scale=3.5)
    if cfg:
        kw.update(negative_prompt_embeds=torch.randn(batch, 8, 32, generator=g),
                  negative_pooled_prompt_embeds=torch.randn(batch, 32, generator=g), true_cfg_scale=2.5)
    return kw


# ---- Wan ------------------------------------------------------------------------------------
WAN_TR = dict(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=16, out_channels=16,
              text_dim=32, freq_dim=256, ffn_dim=32, num_layers=2, cross_attn_norm=True,
              qk_norm="rms_norm_across_heads", rope_max_seq_len=32)


def wan_transformer(seed=0, **over):
    from diffusers import WanTransformer3DModel
    return _seeded(lambda: WanTransformer3DModel(**{**WAN_TR, **over}), seed).eval()


def wan_pipe(seed=0, **transformer_config):
    from diffusers import AutoencoderKLWan, FlowMatchEulerDiscreteScheduler, WanPipeline
    vae = _seeded(lambda: AutoencoderKLWan(base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                                           temperal_downsample=[False, True, True]), seed)
    pipe = WanPipeline(tokenizer=None, text_encoder=None, vae=vae.eval(), scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
                       transformer=wan_transformer(seed, **transformer_config))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def wan_kwargs(batch=1, cfg=False, steps=6):
    g = torch.Generator().manual_seed(12)
    kw = dict(prompt_embeds=torch.randn(batch, 8, 32, generator=g), height=16, width=16, num_frames=5,
              num_inference_steps=steps, guidance_scale=4.0 if cfg else 1.0)
    if cfg:
        kw["negative_prompt_embeds"] = torch.randn(batch, 8, 32, generator=g)
    return kw


# ---- SD3 ------------------------------------------------------------------------------------
SD3_TR = dict(sample_size=32, patch_size=1, in_channels=4, num_layers=1, attention_head_dim=8, num_attention_heads=4,
              caption_projection_dim=32, joint_attention_dim=32, pooled_projection_dim=64, out_channels=4)


def sd3_transformer(seed=0, **over):
    from diffusers import SD3Transformer2DModel
    return _seeded(lambda: SD3Transformer2DModel(**{**SD3_TR, **over}), seed).eval()


def sd3_pipe(seed=0, **transformer_config):
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, StableDiffusion3Pipeline
    vae = _seeded(lambda: AutoencoderKL(sample_size=32, in_channels=3, out_channels=3, block_out_channels=(4,),
                                        layers_per_block=1, latent_channels=4, norm_num_groups=1, use_quant_conv=False,
                                        use_post_quant_conv=False, shift_factor=0.0609, scaling_factor=1.5035), seed)
    pipe = StableDiffusion3Pipeline(scheduler=FlowMatchEulerDiscreteScheduler(), vae=vae.eval(), text_encoder=None,
                                    tokenizer=None, text_encoder_2=None, tokenizer_2=None, text_encoder_3=None,
                                    tokenizer_3=None, transformer=sd3_transformer(seed, **transformer_config))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def sd3_kwargs(batch=1, cfg=False, steps=6):
    g = torch.Generator().manual_seed(13)
    kw = dict(prompt_embeds=torch.randn(batch, 8, 32, generator=g), pooled_prompt_embeds=torch.randn(batch, 64, generator=g),
              height=16, width=16, num_inference_steps=steps, guidance_scale=5.0 if cfg else 1.0)
    if cfg:
        kw.update(negative_prompt_embeds=torch.randn(batch, 8, 32, generator=g),
                  negative_pooled_prompt_embeds=torch.randn(batch, 64, generator=g))
    return kw


PIPELINES = {"flux": (flux_pipe, flux_kwargs), "wan": (wan_pipe, wan_kwargs), "sd3": (sd3_pipe, sd3_kwargs)}
