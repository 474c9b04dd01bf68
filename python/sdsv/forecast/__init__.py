"""Training-free drafts: the target forecasts its own deep blocks (docs/method.md)."""

from .anchors import AnchorBank
from .forecasts import DAMPED, DEFAULT_FORECAST, INTERPOLATION, LINE, NewtonForecast, lagrange_coefficients, resolve_forecast
from .self_draft import SelfDraft, SplitModel

__all__ = ["AnchorBank", "DAMPED", "DEFAULT_FORECAST", "INTERPOLATION", "LINE", "NewtonForecast", "SelfDraft", "SplitModel",
           "lagrange_coefficients", "resolve_forecast"]
