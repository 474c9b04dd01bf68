"""The unverified forecast cache: the target every ``every``-th step, the draft in between."""

from __future__ import annotations

from dataclasses import dataclass

from .._checks import as_bool, as_int
from .base import PolicyState, StatelessState, WindowPolicy, check_steps, shortened


@dataclass(frozen=True)
class FixedInterval(WindowPolicy):
    """Unverified cache (the TaylorSeer analogue): ``warmup`` target steps, then the target
    every ``every``-th step with the draft's forecast in between. No verification: the baseline
    users would pick, and a mode of its own."""

    num_steps: int
    every: int = 3
    warmup: int = 2
    name: str = "fixed_interval"
    closing_error: bool = False

    def __post_init__(self) -> None:
        check_steps(self)
        object.__setattr__(self, "every", as_int("every (1 = the target every step)", self.every, minimum=1))
        object.__setattr__(self, "closing_error", as_bool("closing_error", self.closing_error))

    def start(self, batch: int) -> PolicyState:
        return StatelessState(self.window_at)

    def window_at(self, step: int) -> tuple[str, int]:
        if step < self.warmup:
            return "target", 0
        return shortened("unverified", self.every - 1, step, self.num_steps)

    @property
    def uses_draft(self) -> bool:
        return self.every > 1 and self.warmup < self.num_steps - 1

    @property
    def verifies(self) -> bool:
        return False

    def describe(self) -> str:
        return f"{self.name}[0-{self.warmup}:target, then target every {self.every}]"
