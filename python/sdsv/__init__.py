"""sdsv — speculative sampling with speculative verification for flow-matching diffusion models."""

from .acceptance import AcceptanceTest
from .calibrate import Calibration, CalibrationError, calibrate
from .guidance import ClassifierFreeGuidance
from .forecast import SelfDraft
from .errors import NonFiniteOutputError, RefusedError
from .intents import INTENTS, Intent
from .policies import (ErrorControlled, FixedInterval, PolicyState, Segment, StagePlan, WindowPolicy,
                       next_window_length)
from .result import SampleResult, SampleStats, WindowRecord
from .sampler import IgnoredOptionWarning, sample
from .schedule import check_sigmas, flow_match_sigmas

__version__ = "0.1.0"


def __getattr__(name):
    # enable/disable live with the diffusers integration; importing them lazily keeps
    # ``import sdsv`` free of diffusers (which is an optional dependency)
    if name in ("enable", "disable"):
        from .integrations import hf_diffusers

        return getattr(hf_diffusers, name)
    raise AttributeError(f"module 'sdsv' has no attribute {name!r}")


__all__ = [
    "AcceptanceTest", "Calibration", "CalibrationError", "ClassifierFreeGuidance", "ErrorControlled", "FixedInterval", "INTENTS", "IgnoredOptionWarning", "Intent", "NonFiniteOutputError",
    "PolicyState", "RefusedError", "SampleResult", "SampleStats", "Segment", "SelfDraft", "StagePlan", "WindowPolicy", "WindowRecord",
    "calibrate", "next_window_length", "check_sigmas", "disable", "enable", "flow_match_sigmas", "sample",
]
