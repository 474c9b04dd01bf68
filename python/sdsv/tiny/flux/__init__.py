"""A tiny trained Flux in diffusers format: ``FluxPipeline.from_pretrained(PIPELINE_DIR)``.

The real classes (``FluxTransformer2DModel``, ``AutoencoderKL``, CLIP and T5 text encoders with
their tokenizers, ``FlowMatchEulerDiscreteScheduler``) at a size a CPU runs, trained by
``python -m sdsv.tiny.flux.train`` on the procedural "a <colour> <shape>" images; call it with
``**call_kwargs()`` (32x32 images, 8 text tokens).
"""

from .components import PIPELINE_DIR, call_kwargs, load_pipeline

__all__ = ["PIPELINE_DIR", "call_kwargs", "load_pipeline"]
