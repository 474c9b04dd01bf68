"""The acceptance test: does the draft agree with the target at this state? (docs/method.md)"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import sdsv_kernels

# metric -> (kind, lower bound of tau, upper bound of tau)
_RANGES = {
    "cosine": ("similarity", -1.0, 1.0),
    "rel_l2": ("distance", 0.0, math.inf),
    "state_rel_l2": ("distance", 0.0, math.inf),
    "x0_rms": ("distance", 0.0, math.inf),
}


@dataclass(frozen=True)
class AcceptanceTest:
    """Pass when ``metric >= tau`` (``cosine``) or ``metric <= tau`` (the distances).

    * ``cosine``       — cosine of target and draft velocities
    * ``rel_l2``       — ``|t - d| / |t|``
    * ``state_rel_l2`` — ``|h| |t - d| / |y + h t|``: the two next latents, relative to the target's
    * ``x0_rms``       — ``sigma * rms(t - d)``: RMS distance of the clean latents both models predict

    Velocity-space metrics are blunt on flow models (the velocity is mostly the noise, which both
    models predict well); ``x0_rms`` separates good and bad windows best (docs/demo.md: "Choosing the acceptance test").
    """

    metric: str = "x0_rms"
    # 0.3: the strictest threshold at which both trained drafts keep (nearly) every window
    # (benchmarks/results/tau_sweep.md, docs/demo.md "Choosing the acceptance test")
    tau: float = 0.3

    def __post_init__(self) -> None:
        if self.metric not in _RANGES:
            raise ValueError(f"unknown acceptance metric {self.metric!r}; choose from {sorted(_RANGES)}")
        kind, lo, hi = _RANGES[self.metric]
        if isinstance(self.tau, bool) or not isinstance(self.tau, numbers.Real):
            raise TypeError(f"tau must be a number, got {self.tau!r} ({type(self.tau).__name__})")
        tau = float(self.tau)
        if math.isnan(tau) or not lo <= tau <= hi:
            raise ValueError(f"tau={self.tau!r} is outside the range of {self.metric} ({kind}): [{lo}, {hi}]")
        object.__setattr__(self, "tau", tau)

    @property
    def higher_is_better(self) -> bool:
        return _RANGES[self.metric][0] == "similarity"

    def values(self, stats, h, sigma, numel: int):
        return sdsv_kernels.metric_values(stats, h, sigma, numel, self.metric)

    def passes(self, values):
        return sdsv_kernels.accept_mask(values, self.metric, self.tau)

    def __str__(self) -> str:
        return f"{self.metric}{'>=' if self.higher_is_better else '<='}{self.tau:g}"
