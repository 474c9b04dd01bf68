"""The tiny text-to-video model: procedural clips, a spatio-temporal DiT, its drafts and pipeline."""
