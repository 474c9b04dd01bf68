"""sdsv — speculative sampling with speculative verification for flow-matching diffusion models."""

from .acceptance import AcceptanceTest
from .guidance import ClassifierFreeGuidance
from .plan import Segment, StagePlan
from .result import SampleResult, SampleStats, WindowRecord
from .sampler import NonFiniteOutputError, sample
from .schedule import check_sigmas, flow_match_sigmas

__version__ = "0.1.0"

__all__ = [
    "AcceptanceTest", "ClassifierFreeGuidance", "NonFiniteOutputError", "SampleResult", "SampleStats",
    "Segment", "StagePlan", "WindowRecord", "check_sigmas", "flow_match_sigmas", "sample",
]
