"""Training-free drafts: the target forecasts its own deep blocks (METHOD.md section 8)."""

from .anchors import AnchorBank, lagrange_coefficients
from .self_draft import SelfDraft, SplitModel

__all__ = ["AnchorBank", "SelfDraft", "SplitModel", "lagrange_coefficients"]
