"""The tiny Flux's parts, built from small configs in the real diffusers / transformers classes.

``FluxTransformer2DModel`` (double- and single-stream blocks, RoPE, FLUX.1-dev's guidance
embedding), ``AutoencoderKL`` (2x downsampling, 4 latent channels: a 32x32 image is 16x16x4
latents, 64 packed tokens of 16 channels), ``CLIPTextModel`` and ``T5EncoderModel`` (random
initialised and frozen: fixed features the transformer learns to read) with word-level
tokenizers over the prompts' vocabulary, and ``FlowMatchEulerDiscreteScheduler``.

Conventions any tool can read to call the pipeline at its trained size: the VAE config's
``sample_size`` is the image size (32), ``tokenizer_2.model_max_length`` the T5 text length
(8), ``tokenizer.model_max_length`` the CLIP one.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..data import COLORS, IMAGE_SIZE, SHAPES

PIPELINE_DIR = Path(__file__).resolve().parent / "pipeline"
TEXT_LEN = 8
TEXT_DIM = 64
SPECIAL_TOKENS = ("<pad>", "</s>", "<s>", "<unk>")  # ids 0..3; CLIP's pooled row is the first </s>
VOCABULARY = SPECIAL_TOKENS + ("a", "an") + tuple(COLORS) + SHAPES

TRANSFORMER = dict(patch_size=1, in_channels=16, num_layers=2, num_single_layers=10, attention_head_dim=32,
                   num_attention_heads=4, joint_attention_dim=TEXT_DIM, pooled_projection_dim=TEXT_DIM,
                   guidance_embeds=True, axes_dims_rope=(8, 12, 12))
VAE = dict(sample_size=IMAGE_SIZE, in_channels=3, out_channels=3, latent_channels=4,
           down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
           up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"), block_out_channels=(32, 64),
           layers_per_block=1, norm_num_groups=16, use_quant_conv=False, use_post_quant_conv=False,
           scaling_factor=1.0, shift_factor=0.0)  # the latent statistics are set by the VAE training stage
SCHEDULER = dict(num_train_timesteps=1000, shift=1.0, use_dynamic_shifting=False)


def build_tokenizer(with_bos: bool):
    """A word-level tokenizer (lower-cased, split on spaces); CLIP's adds ``<s>`` in front."""
    from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(VOCABULARY)}
    tok = Tokenizer(WordLevel(vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    single = "<s> $A </s>" if with_bos else "$A </s>"
    tok.post_processor = processors.TemplateProcessing(
        single=single, special_tokens=[(t, vocab[t]) for t in ("<s>", "</s>")])
    special = dict(pad_token="<pad>", eos_token="</s>", unk_token="<unk>", **({"bos_token": "<s>"} if with_bos else {}))
    return PreTrainedTokenizerFast(tokenizer_object=tok, model_max_length=TEXT_LEN, padding_side="right", **special)


def build_text_encoders(seed: int = 0):
    """``(clip, t5)``: tiny, random and frozen (their features are fixed functions of the words)."""
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    torch.manual_seed(seed)
    clip = CLIPTextModel(CLIPTextConfig(vocab_size=len(VOCABULARY), hidden_size=TEXT_DIM, intermediate_size=2 * TEXT_DIM,
                                        num_hidden_layers=2, num_attention_heads=2, max_position_embeddings=TEXT_LEN,
                                        pad_token_id=0, eos_token_id=1, bos_token_id=2, projection_dim=TEXT_DIM))
    t5 = T5EncoderModel(T5Config(vocab_size=len(VOCABULARY), d_model=TEXT_DIM, d_kv=16, d_ff=2 * TEXT_DIM, num_layers=2,
                                 num_heads=4, feed_forward_proj="gated-gelu", dropout_rate=0.0, pad_token_id=0,
                                 eos_token_id=1, decoder_start_token_id=0))
    return clip.eval().requires_grad_(False), t5.eval().requires_grad_(False)


def build_vae(seed: int = 0):
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(**VAE)


def build_transformer(seed: int = 0, **over):
    from diffusers import FluxTransformer2DModel

    torch.manual_seed(seed)
    return FluxTransformer2DModel(**{**TRANSFORMER, **over})


def build_pipeline(transformer, vae, seed: int = 0):
    """A ``FluxPipeline`` of these parts (fresh text encoders from ``seed``)."""
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline

    clip, t5 = build_text_encoders(seed)
    return FluxPipeline(scheduler=FlowMatchEulerDiscreteScheduler(**SCHEDULER), vae=vae.eval(), text_encoder=clip,
                        tokenizer=build_tokenizer(with_bos=True), text_encoder_2=t5,
                        tokenizer_2=build_tokenizer(with_bos=False), transformer=transformer.eval())


def model_index() -> dict:
    """The folder's ``model_index.json``: which class loads each part."""
    import diffusers

    return {"_class_name": "FluxPipeline", "_diffusers_version": diffusers.__version__,
            "feature_extractor": [None, None], "image_encoder": [None, None],
            "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
            "text_encoder": ["transformers", "CLIPTextModel"], "text_encoder_2": ["transformers", "T5EncoderModel"],
            "tokenizer": ["transformers", "PreTrainedTokenizerFast"],
            "tokenizer_2": ["transformers", "PreTrainedTokenizerFast"],
            "transformer": ["diffusers", "FluxTransformer2DModel"], "vae": ["diffusers", "AutoencoderKL"]}


def load_pipeline(folder: str | Path = PIPELINE_DIR, **kwargs):
    """``FluxPipeline.from_pretrained`` of the shipped folder (no network)."""
    from diffusers import FluxPipeline

    folder = Path(folder)
    if not (folder / "model_index.json").exists():
        raise FileNotFoundError(f"no tiny Flux pipeline at {folder}: train it with `python -m sdsv.tiny.flux.train`")
    return FluxPipeline.from_pretrained(str(folder), local_files_only=True, **kwargs)


def call_kwargs(steps: int = 50, guidance: float = 3.0) -> dict:
    """The arguments that call the pipeline at its trained size."""
    return dict(height=IMAGE_SIZE, width=IMAGE_SIZE, max_sequence_length=TEXT_LEN, num_inference_steps=steps,
                guidance_scale=guidance)
