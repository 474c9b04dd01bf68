"""Which model takes which step: the paper's multi-stage schedule (docs/method.md)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from .._checks import as_int, as_str
from .base import PolicyState, StatelessState, WindowPolicy

SegmentKind = Literal["target", "speculate", "draft"]


@dataclass(frozen=True)
class Segment:
    """Steps ``[start, end)`` taken one way: by the ``target`` alone, by the ``draft`` alone,
    or by ``speculate`` windows proposing up to ``k`` draft steps each."""

    start: int
    end: int
    kind: SegmentKind
    k: int = 0


@dataclass(frozen=True)
class StagePlan(WindowPolicy):
    """Stage-0 (target only) for ``stage0_steps``, Stage-1 windows of ``k_warmup`` until step
    ``warmup_steps``, Stage-2 windows of ``k_main`` for the rest.

    ``main="draft"`` replaces Stage-1/2 by draft-only steps (the Improved-Draft and draft-only
    baselines). A window never crosses a stage boundary or the last step: it is shortened.
    """

    num_steps: int
    stage0_steps: int
    warmup_steps: int
    k_warmup: int
    k_main: int
    main: Literal["speculate", "draft"] = "speculate"
    name: str = "custom"

    def __post_init__(self) -> None:
        for name in ("num_steps", "stage0_steps", "warmup_steps", "k_warmup", "k_main"):
            object.__setattr__(self, name, as_int(name, getattr(self, name)))
        as_str("name", self.name)
        n = self.num_steps
        if n < 1:
            raise ValueError(f"num_steps must be a positive int, got {n!r}")
        if not 0 <= self.stage0_steps <= n:
            raise ValueError(f"stage0_steps={self.stage0_steps} must lie in [0, num_steps={n}]")
        if not self.stage0_steps <= self.warmup_steps <= n:
            raise ValueError(
                f"warmup_steps={self.warmup_steps} must lie in [stage0_steps={self.stage0_steps}, num_steps={n}]"
            )
        as_str("main", self.main, ("speculate", "draft"))
        if self.main == "speculate":
            if self.warmup_steps > self.stage0_steps and self.k_warmup < 1:
                raise ValueError(f"k_warmup must be >= 1 when Stage-1 has steps, got {self.k_warmup}")
            if n > self.warmup_steps and self.k_main < 1:
                raise ValueError(f"k_main must be >= 1 when Stage-2 has steps, got {self.k_main}")
        # asked once per sample and round: made once (not a field: equality and repr stay the fields')
        object.__setattr__(self, "_segments", tuple(self._make_segments()))

    # ---- the paper's configurations and baselines -------------------------------------
    @staticmethod
    def _warmup(num_steps: int, frac: float = 0.2) -> int:
        return int(math.ceil(frac * num_steps - 1e-9))

    @classmethod
    def paper_default(cls, num_steps: int = 50) -> "StagePlan":
        """Config (d): 2 target steps, K=3 until 20% of the steps, K=9 after (~2.1x in the paper)."""
        num_steps = as_int("num_steps", num_steps, minimum=1)
        w = max(cls._warmup(num_steps), min(2, num_steps))
        return cls(num_steps, min(2, num_steps), w, 3, 9, name="paper_default")

    @classmethod
    def fast(cls, num_steps: int = 50) -> "StagePlan":
        """SDSV-fast: 5 target steps, then K=3 until 20%, K=9 after."""
        num_steps = as_int("num_steps", num_steps, minimum=1)
        s0 = min(5, num_steps)
        return cls(num_steps, s0, max(cls._warmup(num_steps), s0), 3, 9, name="fast")

    @classmethod
    def slow(cls, num_steps: int = 50) -> "StagePlan":
        """SDSV-slow: like the default but shorter Stage-2 windows (K=5): more verification."""
        num_steps = as_int("num_steps", num_steps, minimum=1)
        s0 = min(2, num_steps)
        return cls(num_steps, s0, max(cls._warmup(num_steps), s0), 3, 5, name="slow")

    @classmethod
    def minimal_warmup(cls, num_steps: int = 50, k: int = 9) -> "StagePlan":
        """Figure 2 (a): 2 target steps, then Stage-2 windows straight away."""
        num_steps = as_int("num_steps", num_steps, minimum=1)
        k = as_int("k", k, minimum=0)
        s0 = min(2, num_steps)
        return cls(num_steps, s0, s0, 1, k, name="minimal_warmup")

    @classmethod
    def conservative_warmup(cls, num_steps: int = 50, k: int = 9) -> "StagePlan":
        """Figure 2 (c): 20% of the steps by the target, then Stage-2 windows."""
        num_steps = as_int("num_steps", num_steps, minimum=1)
        k = as_int("k", k, minimum=0)
        w = cls._warmup(num_steps)
        return cls(num_steps, w, w, 1, k, name="conservative_warmup")

    @classmethod
    def target_only(cls, num_steps: int = 50) -> "StagePlan":
        num_steps = as_int("num_steps", num_steps, minimum=1)
        return cls(num_steps, num_steps, num_steps, 0, 0, name="target_only")

    @classmethod
    def draft_only(cls, num_steps: int = 50) -> "StagePlan":
        num_steps = as_int("num_steps", num_steps, minimum=1)
        return cls(num_steps, 0, 0, 0, 0, main="draft", name="draft_only")

    @classmethod
    def improved_draft(cls, num_steps: int = 50, stage0_steps: int = 5) -> "StagePlan":
        """The seed's Improved-Draft baseline: target for ``stage0_steps``, draft for the rest."""
        num_steps = as_int("num_steps", num_steps, minimum=1)
        stage0_steps = as_int("stage0_steps", stage0_steps, minimum=0)
        s0 = min(stage0_steps, num_steps)
        return cls(num_steps, s0, s0, 0, 0, main="draft", name="improved_draft")

    # ---- queries -------------------------------------------------------------------
    def start(self, batch: int) -> PolicyState:
        return StatelessState(self.window_at)

    @property
    def uses_draft(self) -> bool:
        return any(s.kind != "target" for s in self.segments())

    @property
    def uses_target(self) -> bool:
        return any(s.kind != "draft" for s in self.segments())

    @property
    def verifies(self) -> bool:
        return any(s.kind == "speculate" for s in self.segments())

    def segments(self) -> list[Segment]:
        return list(self._segments)

    def segment_at(self, step: int) -> Segment:
        for seg in self._segments:
            if seg.start <= step < seg.end:
                return seg
        raise IndexError(f"step {step} is outside the plan's {self.num_steps} steps")

    def _make_segments(self) -> list[Segment]:
        n, s0, w = self.num_steps, self.stage0_steps, self.warmup_steps
        segs = [Segment(0, s0, "target")]
        if self.main == "draft":
            segs.append(Segment(s0, n, "draft"))
        else:
            segs += [Segment(s0, w, "speculate", self.k_warmup), Segment(w, n, "speculate", self.k_main)]
        return [s for s in segs if s.end > s.start]

    def window_at(self, step: int) -> tuple[str, int]:
        """What a sample at ``step`` does next: ``("target", 0)``, ``("draft", 0)`` or
        ``("speculate", k)`` with k shortened so the window (k draft steps + 1 target step)
        ends at or before its stage's end. A k shortened to 0 is a plain target step."""
        seg = self.segment_at(step)
        if seg.kind != "speculate":
            return seg.kind, 0
        k = min(seg.k, seg.end - step - 1)
        return ("speculate", k) if k > 0 else ("target", 0)

    def describe(self) -> str:
        parts = []
        for s in self.segments():
            what = {"target": "target", "draft": "draft", "speculate": f"K={s.k}"}[s.kind]
            parts.append(f"{s.start}-{s.end}:{what}")
        return f"{self.name}[" + ", ".join(parts) + "]"
