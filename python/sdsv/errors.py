"""The exceptions sdsv raises on purpose (importable without torch models or diffusers)."""

from __future__ import annotations


class NonFiniteOutputError(FloatingPointError):
    """A model returned NaN or inf; the message names the model, the step and the sample."""


class RefusedError(ValueError):
    """A pipeline, scheduler, draft or call argument SDSV cannot honour, refused before anything runs."""
