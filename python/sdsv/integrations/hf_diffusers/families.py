"""What SDSV needs to know about each supported diffusers pipeline family.

For every family: which transformer config keys make up the model's input/output contract (a
draft must agree on all of them), which ``__call__`` arguments SDSV cannot honour, how the
pipeline's own transformer calls of the first step turn into the sampler's conditioning, and
which block lists the self-draft forecasts. Nothing of a pipeline's decode is here: the pipeline
decodes sdsv's final latents itself (:mod:`.hook`).
"""

from __future__ import annotations

import torch

from ...errors import RefusedError
from .denoisers import flux_denoiser, sd3_denoiser, wan_denoiser
from .other_caches import describe, step_caches
from .split import TransformerSplit


def unwrap(module):
    """The module behind a ``torch.compile`` wrapper, for type and config checks."""
    return getattr(module, "_orig_mod", module)


def check_hooks_survive_compile(transformer) -> None:
    """Refuse a whole-model compiled transformer when dynamo does not guard on module hooks.

    The self-draft's hooks are ``ModelHook`` s in the blocks' and ``norm_out``'s diffusers
    ``HookRegistry`` (:mod:`.split`), registered from ``sdsv.enable`` to ``sdsv.disable``. The
    checked way to compile is the repeated blocks (``compile_repeated_blocks``): the first sdsv
    call compiles the hooked blocks' few variants (target, draft; per block class) and later
    calls reuse them. A
    whole-model compile is refused under dynamo's default ``skip_nnmodule_hook_guards = True``,
    with which a graph compiled before a module's torch hooks were added ignores them. The
    registry hooks replace the modules' ``forward`` instead and were measured to run under a
    whole-model compile as well (tiny Flux on a CPU, eager and inductor backends), not yet at
    model scale: the refusal stays until that is checked.
    """
    whole = getattr(transformer, "_compiled_call_impl", None) is not None or hasattr(transformer, "_orig_mod")
    if whole and getattr(torch._dynamo.config, "skip_nnmodule_hook_guards", True):
        raise RefusedError(
            "the transformer is compiled as a whole (transformer.compile() or torch.compile(transformer)), and "
            "torch._dynamo does not guard on module hooks, which the self-draft adds to its blocks: sdsv checks "
            "them under a compile of the repeated blocks. Compile those instead "
            "(pipe.transformer.compile_repeated_blocks(fullgraph=True)), or set "
            "torch._dynamo.config.skip_nnmodule_hook_guards = False before compiling")


class Family:
    name = ""
    pipeline_class = ""      # the diffusers pipeline class name (checked with isinstance)
    transformer_class = ""
    contract_keys: tuple[str, ...] = ()
    transformer_args: frozenset = frozenset()   # kwargs the pipeline may pass to the transformer
    refused_args: dict[str, str] = {}            # __call__ argument -> why it is refused
    block_stacks: tuple[str, ...] = ()           # the transformer's block lists, in order (the self-draft's deep part)

    # ---- checks ---------------------------------------------------------------------------
    def pipeline_type(self):
        import diffusers
        return getattr(diffusers, self.pipeline_class)

    def matches(self, pipe) -> bool:
        return isinstance(pipe, self.pipeline_type())

    def check_pipeline(self, pipe) -> None:
        """Refuse pipeline variants this adapter does not cover."""
        check_no_cache(pipe.transformer, "pipe.transformer")

    def self_draft_split(self, transformer, denoiser, head_blocks: int = 0):
        """The forecast self-draft's split of ``transformer`` (:mod:`.split`); refuses a block
        layout other than this family's, a block class diffusers' caches cannot skip, and a
        whole-model compile (:func:`check_hooks_survive_compile`)."""
        check_hooks_survive_compile(transformer)
        return TransformerSplit(denoiser, unwrap(transformer), self.block_stacks, head_blocks)

    def check_draft(self, target, draft) -> None:
        """Refuse a draft whose input/output contract differs from the target's, saying what differs."""
        import diffusers
        want = getattr(diffusers, self.transformer_class)
        d, t = unwrap(draft), unwrap(target)
        if not isinstance(d, want):
            raise RefusedError(
                f"the draft is a {type(d).__name__}, but the {self.name} adapter needs a {self.transformer_class} "
                f"(the target's class {type(t).__name__}): same forward arguments and latent layout"
            )
        check_no_cache(draft, "the draft")
        tc, dc = t.config, d.config
        diffs = []
        for key in self.contract_keys:
            tv, dv = self.contract_value(tc, key), self.contract_value(dc, key)
            if tv != dv:
                diffs.append(f"{key}: target {tv!r}, draft {dv!r}")
        if diffs:
            raise RefusedError(
                f"the draft's input/output contract differs from the target's ({self.transformer_class}): "
                + "; ".join(diffs)
            )
        tdev, ddev = _device(t), _device(d)
        offloaded = hasattr(t, "_hf_hook") or hasattr(d, "_hf_hook")  # accelerate moves them per call
        if not offloaded and tdev is not None and ddev is not None and tdev != ddev:
            raise RefusedError(f"the draft is on {ddev} but the target on {tdev}: move both to the same device")

    def contract_value(self, config, key):
        v = config.get(key) if hasattr(config, "get") else getattr(config, key, None)
        if isinstance(v, list):
            v = tuple(v)
        if key == "out_channels" and v is None:  # diffusers' default: out_channels = in_channels
            v = config.get("in_channels")
        return v

    def refuse_call(self, pipe, args: dict) -> None:
        if args.get("callback_on_step_end") is not None:
            raise RefusedError(
                "callback_on_step_end is not supported with SDSV: a window advances several steps at once, "
                "so there is no per-step latent to show or modify (call sdsv.disable(pipe) to use callbacks)"
            )
        for name, why in self.refused_args.items():
            v = args.get(name)
            if v is not None and v is not False:
                raise RefusedError(f"{name} is not supported with SDSV on {self.pipeline_class}: {why}")

    def check_calls(self, calls: list[dict], expected: int) -> None:
        if len(calls) != expected:
            raise RefusedError(
                f"{self.pipeline_class} called its transformer {len(calls)} times in the first step, the "
                f"{self.name} adapter expects {expected}: an unsupported pipeline variant or diffusers version"
            )
        for c in calls:
            extra = sorted(k for k, v in c.items() if k not in self.transformer_args and v is not None)
            if extra:
                raise RefusedError(
                    f"{self.pipeline_class} passed {extra} to its transformer, which the {self.name} adapter "
                    f"does not forward: an unsupported pipeline variant or diffusers version"
                )

    @staticmethod
    def check_timestep(call: dict, expected: torch.Tensor) -> None:
        """Self-check of the timestep convention against what the pipeline actually passed."""
        got = call["timestep"]
        if got.shape != expected.shape or not torch.equal(got.to(expected.dtype), expected):
            raise RefusedError(
                f"the pipeline passed timestep {got.flatten()[:2].tolist()} at the first step, the adapter would "
                f"pass {expected.flatten()[:2].tolist()}: the timestep convention differs (diffusers version?)"
            )

    # ---- per family -------------------------------------------------------------------------
    def conditioning(self, pipe, args: dict, calls: list[dict], latents: torch.Tensor, num_train_timesteps: int):
        """-> (denoiser factory ``model -> TransformerDenoiser``, per-sample cond dict)."""
        raise NotImplementedError


def check_no_cache(module, what: str) -> None:
    """Refuse a model with another step cache attached (:mod:`.other_caches`): its reused
    activations assume one step per forward, while an SDSV forward holds rows of several steps."""
    found = step_caches(module)
    if found:
        raise RefusedError(
            f"{what} has another step cache attached: {describe(found)}. Its reused activations assume one "
            "step per forward, while sdsv batches rows of different steps and samples: remove it first"
        )


def _device(module):
    try:
        return next(module.parameters()).device
    except (StopIteration, AttributeError, TypeError):
        return None


# ---------------------------------------------------------------------------------------------
class FluxFamily(Family):
    name = "Flux"
    pipeline_class = "FluxPipeline"
    transformer_class = "FluxTransformer2DModel"
    block_stacks = ("transformer_blocks", "single_transformer_blocks")
    contract_keys = ("in_channels", "out_channels", "patch_size", "joint_attention_dim", "pooled_projection_dim",
                     "guidance_embeds")
    transformer_args = frozenset({"hidden_states", "timestep", "guidance", "pooled_projections",
                                  "encoder_hidden_states", "txt_ids", "img_ids", "joint_attention_kwargs",
                                  "return_dict"})
    refused_args = {
        "ip_adapter_image": "IP-Adapter image embeddings are not forwarded to the draft",
        "ip_adapter_image_embeds": "IP-Adapter image embeddings are not forwarded to the draft",
        "negative_ip_adapter_image": "IP-Adapter image embeddings are not forwarded to the draft",
        "negative_ip_adapter_image_embeds": "IP-Adapter image embeddings are not forwarded to the draft",
    }

    def conditioning(self, pipe, args, calls, latents, num_train_timesteps):
        # FluxPipeline's own rule: a second (negative) call iff true_cfg_scale > 1 and a negative prompt
        has_neg = args.get("negative_prompt") is not None or (
            args.get("negative_prompt_embeds") is not None and args.get("negative_pooled_prompt_embeds") is not None)
        true_cfg = float(args["true_cfg_scale"]) > 1 and has_neg
        self.check_calls(calls, 2 if true_cfg else 1)
        c = calls[0]
        cond = {"encoder_hidden_states": c["encoder_hidden_states"], "pooled_projections": c["pooled_projections"]}
        if c.get("guidance") is not None:
            cond["guidance"] = c["guidance"]
        static = dict(txt_ids=c["txt_ids"], img_ids=c["img_ids"], joint_attention_kwargs=c.get("joint_attention_kwargs"))
        neg_txt = None
        scale = 1.0
        if true_cfg:
            n = calls[1]
            cond["negative_encoder_hidden_states"] = n["encoder_hidden_states"]
            cond["negative_pooled_projections"] = n["pooled_projections"]
            neg_txt = n["txt_ids"]
            scale = float(args["true_cfg_scale"])

        def make(model):
            return flux_denoiser(model, true_cfg_scale=scale, negative_txt_ids=neg_txt, **static)
        return make, cond


# ---------------------------------------------------------------------------------------------
class WanFamily(Family):
    name = "Wan"
    pipeline_class = "WanPipeline"
    transformer_class = "WanTransformer3DModel"
    block_stacks = ("blocks",)
    contract_keys = ("in_channels", "out_channels", "patch_size", "text_dim", "image_dim", "added_kv_proj_dim")
    transformer_args = frozenset({"hidden_states", "timestep", "encoder_hidden_states", "attention_kwargs",
                                  "return_dict"})
    refused_args = {"guidance_scale_2": "it belongs to Wan2.2's two-transformer (high/low noise) setup"}

    def check_pipeline(self, pipe) -> None:
        if pipe.transformer is None:
            raise RefusedError("the WanPipeline has no transformer")
        super().check_pipeline(pipe)
        if getattr(pipe, "transformer_2", None) is not None or pipe.config.get("boundary_ratio") is not None:
            raise RefusedError(
                "this WanPipeline has a second transformer (Wan2.2 A14B: high/low-noise experts); the Wan adapter "
                "supports one transformer (Wan2.1, Wan2.2 TI2V without expand_timesteps)"
            )
        if pipe.config.get("expand_timesteps"):
            raise RefusedError("expand_timesteps (per-token timesteps, Wan2.2 TI2V-5B) is not supported by the Wan adapter")

    def conditioning(self, pipe, args, calls, latents, num_train_timesteps):
        guided = bool(pipe.do_classifier_free_guidance)  # guidance_scale > 1, set by the call
        self.check_calls(calls, 2 if guided else 1)
        c = calls[0]
        cond = {"encoder_hidden_states": c["encoder_hidden_states"]}
        if guided:
            cond["negative_encoder_hidden_states"] = calls[1]["encoder_hidden_states"]
        scale = float(args["guidance_scale"]) if guided else 1.0
        attn = c.get("attention_kwargs")

        def make(model):
            return wan_denoiser(model, guidance_scale=scale, num_train_timesteps=num_train_timesteps,
                                attention_kwargs=attn)
        return make, cond


# ---------------------------------------------------------------------------------------------
class SD3Family(Family):
    name = "SD3"
    pipeline_class = "StableDiffusion3Pipeline"
    transformer_class = "SD3Transformer2DModel"
    block_stacks = ("transformer_blocks",)
    contract_keys = ("in_channels", "out_channels", "patch_size", "joint_attention_dim", "pooled_projection_dim",
                     "pos_embed_max_size")
    transformer_args = frozenset({"hidden_states", "timestep", "encoder_hidden_states", "pooled_projections",
                                  "joint_attention_kwargs", "return_dict"})
    refused_args = {
        "skip_guidance_layers": "skip-layer guidance runs a third, layer-skipping pass the draft cannot mirror",
        "ip_adapter_image": "IP-Adapter image embeddings are not forwarded to the draft",
        "ip_adapter_image_embeds": "IP-Adapter image embeddings are not forwarded to the draft",
    }

    def conditioning(self, pipe, args, calls, latents, num_train_timesteps):
        self.check_calls(calls, 1)
        c = calls[0]
        b = latents.shape[0]
        rows = c["hidden_states"].shape[0]
        guided = bool(pipe.do_classifier_free_guidance)  # guidance_scale > 1, set by the call
        if rows != (2 if guided else 1) * b:
            raise RefusedError(f"SD3 called its transformer with {rows} rows for {b} latents "
                               f"({'with' if guided else 'without'} CFG): an unsupported pipeline variant")
        ehs, pooled = c["encoder_hidden_states"], c["pooled_projections"]
        if guided:  # the pipeline's order: [negative; positive]
            cond = {"encoder_hidden_states": ehs[b:], "pooled_projections": pooled[b:],
                    "negative_encoder_hidden_states": ehs[:b], "negative_pooled_projections": pooled[:b]}
        else:
            cond = {"encoder_hidden_states": ehs, "pooled_projections": pooled}
        scale = float(args["guidance_scale"]) if guided else 1.0
        attn = c.get("joint_attention_kwargs")

        def make(model):
            return sd3_denoiser(model, guidance_scale=scale, num_train_timesteps=num_train_timesteps,
                                joint_attention_kwargs=attn)
        return make, cond



FAMILIES: tuple[Family, ...] = (FluxFamily(), WanFamily(), SD3Family())


def family_of(pipe) -> Family:
    for fam in FAMILIES:
        if fam.matches(pipe):
            return fam
    names = ", ".join(f.pipeline_class for f in FAMILIES)
    raise RefusedError(f"SDSV supports {names} (and their subclasses); got a {type(pipe).__name__}")
