"""Deprecated import path, kept for one release: :class:`StagePlan` lives in
:mod:`sdsv.policies` (``sdsv.policies.stage_plan``)."""

from .policies import Segment, SegmentKind, StagePlan  # noqa: F401

__all__ = ["Segment", "SegmentKind", "StagePlan"]
