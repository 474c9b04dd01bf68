"""What a sampling run returns: the final latents and what it cost."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch


@dataclass
class WindowRecord:
    """One speculative window of one sample (plain target/draft steps are not windows)."""

    sample: int
    start: int          # step index of the window's first state
    k: int              # draft steps proposed
    accepted: int       # draft steps kept; the window advanced accepted + 1 steps
    metric: list[float]  # acceptance metric of each verified row (NaN where untested); for an
    #                      unverified window, its closing error (x0_rms of draft vs target at y_k)
    kind: str = "speculate"  # or "unverified" (accepted = k if kept, 0 if its policy rejected it)


@dataclass
class SampleStats:
    target_calls: int = 0   # forward calls of the target (one batched call = 1)
    target_evals: int = 0   # rows evaluated by the target, summed over calls
    draft_calls: int = 0
    draft_evals: int = 0
    target_s: float = 0.0   # wall time inside target calls
    draft_s: float = 0.0    # wall time inside draft calls
    sampler_s: float = 0.0  # everything else: ops, bookkeeping, checks
    windows: list[WindowRecord] = field(default_factory=list)

    @property
    def wall_s(self) -> float:
        return self.target_s + self.draft_s + self.sampler_s

    @property
    def verified_windows(self) -> list[WindowRecord]:
        return [w for w in self.windows if w.kind == "speculate"]

    @property
    def proposed_steps(self) -> int:
        """Draft steps proposed in verified windows."""
        return sum(w.k for w in self.verified_windows)

    @property
    def accepted_steps(self) -> int:
        return sum(w.accepted for w in self.verified_windows)

    @property
    def acceptance_rate(self) -> float:
        """Accepted / proposed draft steps over all verified windows (NaN if there were none)."""
        p = self.proposed_steps
        return self.accepted_steps / p if p else float("nan")

    @property
    def window_acceptance(self) -> float:
        """Fraction of verified windows whose every proposed step was kept."""
        ws = self.verified_windows
        return sum(w.accepted == w.k for w in ws) / len(ws) if ws else float("nan")

    @property
    def unverified_windows(self) -> int:
        return sum(w.kind == "unverified" for w in self.windows)

    @property
    def rejected_unverified(self) -> int:
        """Unverified windows their policy rejected on the closing error (and redid shorter)."""
        return sum(w.kind == "unverified" and w.accepted == 0 for w in self.windows)

    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(wall_s=self.wall_s, acceptance_rate=self.acceptance_rate, window_acceptance=self.window_acceptance,
                 rejected_unverified=self.rejected_unverified)
        return d

    def summary(self) -> str:
        verified, unverified = len(self.verified_windows), self.unverified_windows
        windows = []
        if verified or not unverified:
            windows.append(f"{verified} windows, acceptance {self.acceptance_rate:.0%}" if verified else "0 windows")
        if unverified:
            windows.append(f"{unverified} unverified windows ({self.rejected_unverified} rejected)")
        return (
            f"target {self.target_calls} calls/{self.target_evals} evals, draft {self.draft_evals} evals, "
            f"{', '.join(windows)}, "
            f"{self.wall_s:.3f}s (target {self.target_s:.3f}, draft {self.draft_s:.3f}, sampler {self.sampler_s:.3f})"
        )


@dataclass
class SampleResult:
    latents: torch.Tensor
    stats: SampleStats
