"""Deprecated import path, kept for one release: the window policies live in :mod:`sdsv.policies`
(``PolicyRun`` is now :class:`sdsv.policies.PolicyState`)."""

from .policies import (WINDOW_KINDS, ErrorControlled, FixedInterval, PolicyState, WindowPolicy,  # noqa: F401
                       next_window_length)

PolicyRun = PolicyState

__all__ = ["WINDOW_KINDS", "ErrorControlled", "FixedInterval", "PolicyRun", "PolicyState", "WindowPolicy",
           "next_window_length"]
