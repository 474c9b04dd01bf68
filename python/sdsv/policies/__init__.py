"""Window policies, one per file: what each sample's next window is, and what became of it.

* :class:`StagePlan` — the paper's multi-stage schedule (stateless; also the baselines:
  target-only, draft-only, Improved-Draft).
* :class:`FixedInterval` — the unverified forecast cache.
* :class:`ErrorControlled` — unverified windows sized (and rejected) by their closing error.
* :class:`WindowPolicy` / :class:`PolicyState` — what a policy of your own provides.
"""

from .base import (ERROR_METRICS, WINDOW_KINDS, PolicyState, StatelessState, WindowPolicy, next_window_length,
                   shortened)
from .error_controlled import ErrorControlled, ErrorControlledState
from .fixed_interval import FixedInterval
from .stage_plan import Segment, SegmentKind, StagePlan

__all__ = [
    "ERROR_METRICS", "WINDOW_KINDS", "ErrorControlled", "ErrorControlledState", "FixedInterval", "PolicyState",
    "Segment", "SegmentKind", "StagePlan", "StatelessState", "WindowPolicy", "next_window_length", "shortened",
]
