"""Per-call memory of the self-draft: the deep blocks' residuals at the last few target
evaluations of each sample and guidance branch on the committed trajectory (the *anchors*),
and the coefficients a :class:`~sdsv.forecast.forecasts.NewtonForecast` gives them at a new
sigma (docs/method.md).

Rows are keyed by ``(sample, branch)``: a guidance wrapper runs the conditional and
unconditional rows in one call of twice the batch (branch-major: ``torch.cat([x, x])``), so
model row ``m`` of a call over sampler rows ``tags`` belongs to sample ``tags[m % R]``, branch
``m // R``. Every key owns ``slots`` rows of one preallocated bank (a ring): memory is fixed
when the first target call tells the residual's shape and the number of branches, and never
grows. A target call's residuals wait as *pending* until the sampler says which of its rows lie
on the committed trajectory; only those become anchors, so a rejected window's endpoint never
does. Bookkeeping (which slot holds which sigma) is on the host; residuals stay on the device.
"""

from __future__ import annotations

from typing import Sequence

import torch

from .._rows import gather_rows, scatter_rows
from .forecasts import NewtonForecast


class AnchorBank:
    """Anchors of every ``(sample, branch)`` of one sampling call; see the module docstring."""

    def __init__(self, batch: int, forecast: NewtonForecast, slots: int):
        if slots < forecast.anchors:
            raise ValueError(f"{forecast!r} reads {forecast.anchors} anchors, the bank keeps {slots} per key")
        self.batch, self.forecast, self.slots = batch, forecast, slots
        self.branches: int | None = None
        self.bank: torch.Tensor | None = None  # [batch * branches * slots, *residual]
        # per key: (slot, sigma) of its anchors, oldest first
        self.anchors: dict[tuple[int, int], list[tuple[int, float]]] = {}
        self.tags: list[int] = []        # sample of each sampler row of the coming call
        self.tag_sigmas: list[float] = []
        self.pending: torch.Tensor | None = None  # residuals of the last target call
        self.pending_tags: list[int] = []
        self.pending_sigmas: list[float] = []
        self.records = 0  # target calls recorded: the sampler checks that each target call records one

    # ---- the sampler's side -------------------------------------------------------------
    def tag(self, samples: Sequence[int], sigmas: Sequence[float]) -> None:
        """The sample and sigma of each row of the next model call (before guidance doubles it)."""
        self.tags, self.tag_sigmas = list(samples), list(sigmas)

    def commit(self, rows: Sequence[int]) -> None:
        """Rows of the last target call that lie on the committed trajectory become anchors,
        in the order given (the newest last); a key's oldest anchor makes room."""
        if not rows:
            return
        if self.pending is None:
            raise RuntimeError("commit without a recorded target call")
        r = len(self.pending_tags)
        dst: dict[int, int] = {}  # bank slot -> pending model row (a later row wins its slot)
        for v in rows:
            b, s = self.pending_tags[v], self.pending_sigmas[v]
            for branch in range(self.branches):
                key = (b, branch)
                ring = [a for a in self.anchors.get(key, []) if a[1] != s]
                if len(ring) < self.slots:
                    used = {slot for slot, _ in ring}
                    slot = next(self._slot(key, i) for i in range(self.slots) if self._slot(key, i) not in used)
                else:
                    slot = ring.pop(0)[0]
                ring.append((slot, s))
                self.anchors[key] = ring
                dst[slot] = v + branch * r
        # one strided copy in the common case (one sample: its branches' slots and rows are evenly spaced)
        scatter_rows(self.bank, list(dst), gather_rows(self.pending, list(dst.values())))

    # ---- the models' side ---------------------------------------------------------------
    def rows_of(self, model_rows: int) -> tuple[list[int], list[float], int]:
        """Sample and sigma of each model row of a call, and the number of branches."""
        r = len(self.tags)
        if r == 0 or model_rows % r:
            raise RuntimeError(
                f"the self-draft's model got {model_rows} rows for {r} sampler rows: a guidance wrapper must "
                "stack whole copies of the batch (torch.cat([x, x])); call it through sdsv.sample(..., self_draft=...)"
            )
        n = model_rows // r
        return self.tags * n, self.tag_sigmas * n, n

    def record(self, residual: torch.Tensor) -> None:
        """Keep a target call's deep-block residuals until the sampler commits some of them."""
        samples, sigmas, branches = self.rows_of(residual.shape[0])
        if self.bank is None:
            self.branches = branches
            self.bank = residual.new_zeros((self.batch * branches * self.slots, *residual.shape[1:]))
        elif branches != self.branches or residual.shape[1:] != self.bank.shape[1:]:
            raise RuntimeError(
                f"the self-draft's target call changed shape: {branches} branches of {tuple(residual.shape[1:])} "
                f"residuals, the first call had {self.branches} of {tuple(self.bank.shape[1:])}"
            )
        self.pending, self.pending_tags, self.pending_sigmas = residual, self.tags, self.tag_sigmas
        self.records += 1

    def forecast_args(self, model_rows: int, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(bank, index [M, A], coeffs [M, A+1])`` for :func:`sdsv_kernels.gather_combine`:
        each row's hidden state plus its key's residual forecast at the row's sigma."""
        samples, sigmas, branches = self.rows_of(model_rows)
        if self.bank is None or branches != self.branches:
            raise RuntimeError("the self-draft was called before any target evaluation of these rows: "
                               "start the plan with at least one target step (warm-up)")
        index, coeffs = [], []
        for m, (b, s) in enumerate(zip(samples, sigmas)):
            ring = self.anchors.get((b, m // len(self.tags)))
            if not ring:
                raise RuntimeError(f"the self-draft has no target evaluation of sample {b} on its committed "
                                   "trajectory yet: start the plan with at least one target step")
            use = ring[-self.forecast.anchors:]
            index.append([slot for slot, _ in use])
            coeffs.append([1.0] + self.forecast.coefficients([a for _, a in use], s))
        width = max(len(i) for i in index)
        if any(len(i) != width for i in index):  # keys with fewer anchors: pad with zero weights
            for i, c in zip(index, coeffs):
                pad = width - len(i)
                i += [i[0]] * pad
                c += [0.0] * pad
        cdt = torch.promote_types(self.bank.dtype, torch.float32)
        return (self.bank, torch.tensor(index, dtype=torch.int64).to(device, non_blocking=True),
                torch.tensor(coeffs, dtype=cdt).to(device, non_blocking=True))

    def _slot(self, key: tuple[int, int], i: int) -> int:
        b, branch = key
        return (b * self.branches + branch) * self.slots + i

    @property
    def nbytes(self) -> int:
        return 0 if self.bank is None else self.bank.numel() * self.bank.element_size()
