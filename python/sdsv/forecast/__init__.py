"""Training-free drafts: the target forecasts its own deep blocks (docs/method.md)."""

from .anchors import AnchorBank, lagrange_coefficients
from .self_draft import SelfDraft, SplitModel

__all__ = ["AnchorBank", "SelfDraft", "SplitModel", "lagrange_coefficients"]
