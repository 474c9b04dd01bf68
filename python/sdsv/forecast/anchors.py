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

Corrected windows (:class:`sdsv.windows.CorrectedWithError`) use two more things of the bank.
Their correction runs the draft inside :meth:`AnchorBank.interpolating`, where it reads the
polynomial through a key's newest anchors instead of the forecast: the closing anchor is then on
record, so the sigmas it redoes lie between the anchors it reads. Velocity-predicted ones
(:class:`sdsv.windows.VelocityPredicted`) take their first steps without a model:
:meth:`AnchorBank.predict_velocity` forecasts the sampler's velocity from the velocities at a
sample's anchors (kept beside the residuals when the sampler commits with ``velocities=``, one
latent per sample and slot).
"""

from __future__ import annotations

import contextlib
import functools
from typing import Iterator, Sequence

import torch

import sdsv_kernels

from .._rows import gather_rows, scatter_rows
from .forecasts import INTERPOLATION, NewtonForecast


class AnchorBank:
    """Anchors of every ``(sample, branch)`` of one sampling call; see the module docstring."""

    def __init__(self, batch: int, forecast: NewtonForecast, slots: int):
        if slots < forecast.anchors:
            raise ValueError(f"{forecast!r} reads {forecast.anchors} anchors, the bank keeps {slots} per key")
        self.batch, self.forecast, self.slots = batch, forecast, slots
        self.reading = forecast  # what the draft reads: the forecast, or INTERPOLATION (interpolating())
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
        self.velocities: torch.Tensor | None = None  # [batch * slots, *latent]: the sampler's velocity at each anchor

    # ---- the sampler's side -------------------------------------------------------------
    def tag(self, samples: Sequence[int], sigmas: Sequence[float]) -> None:
        """The sample and sigma of each row of the next model call (before guidance doubles it)."""
        self.tags, self.tag_sigmas = list(samples), list(sigmas)

    def commit(self, rows: Sequence[int], velocities: torch.Tensor | None = None) -> None:
        """Rows of the last target call that lie on the committed trajectory become anchors,
        in the order given (the newest last); a key's oldest anchor makes room. ``velocities``:
        the call's outputs (one row per sampler row), kept at the anchors for :meth:`predict_velocity`."""
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
        if velocities is not None:
            self._commit_velocities(rows, velocities)

    def _commit_velocities(self, rows: Sequence[int], velocities: torch.Tensor) -> None:
        """Each committed row's velocity, beside the anchor its sample's first branch just took
        (one (slot, sigma) record serves both)."""
        if self.velocities is None:
            self.velocities = velocities.new_zeros((self.batch * self.slots, *velocities.shape[1:]))
        dst: dict[int, int] = {}
        for v in rows:
            b, s = self.pending_tags[v], self.pending_sigmas[v]
            slot = next((slot for slot, sigma in self.anchors[(b, 0)] if sigma == s), None)
            if slot is not None:  # None: a later row of the same call took its place
                dst[self._velocity_slot(b, slot)] = v
        scatter_rows(self.velocities, list(dst), gather_rows(velocities, list(dst.values())))

    def _velocity_slot(self, sample: int, slot: int) -> int:
        return sample * self.slots + (slot - self._slot((sample, 0), 0))

    def replace_velocity(self, samples: Sequence[int], velocities: torch.Tensor) -> None:
        """The velocity at each sample's newest anchor, replaced (a corrected window's closing step)."""
        slots = [self._velocity_slot(b, self.anchors[(b, 0)][-1][0]) for b in samples]
        scatter_rows(self.velocities, slots, velocities)

    def predict_velocity(self, samples: Sequence[int], sigmas: Sequence[float], like: torch.Tensor) -> torch.Tensor:
        """The forecast of each row's velocity at its sigma from its sample's anchors' velocities,
        with the bank's forecast (rows of ``like``'s shape; nothing of the model runs)."""
        if self.velocities is None:
            raise RuntimeError("no velocities on record: the sampler commits them (commit(..., velocities=))")
        rows = [(self.anchors[(b, 0)][-self.forecast.anchors:], s, functools.partial(self._velocity_slot, b))
                for b, s in zip(samples, sigmas)]
        index, coeffs = self._combination(rows, self.forecast, 0.0, self.velocities.dtype, like.device)
        return sdsv_kernels.gather_combine(like, self.velocities, index, coeffs)

    @contextlib.contextmanager
    def interpolating(self) -> Iterator[None]:
        """Draft calls inside read :data:`~sdsv.forecast.forecasts.INTERPOLATION` (the parabola
        through a key's newest anchors, as many as the bank keeps up to three) instead of the forecast."""
        self.reading = INTERPOLATION
        try:
            yield
        finally:
            self.reading = self.forecast

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
        rows = []
        for m, (b, s) in enumerate(zip(samples, sigmas)):
            ring = self.anchors.get((b, m // len(self.tags)))
            if not ring:
                raise RuntimeError(f"the self-draft has no target evaluation of sample {b} on its committed "
                                   "trajectory yet: start the plan with at least one target step")
            rows.append((ring[-self.reading.anchors:], s, None))
        index, coeffs = self._combination(rows, self.reading, 1.0, self.bank.dtype, device)
        return self.bank, index, coeffs

    @staticmethod
    def _combination(rows, reading: NewtonForecast, own: float, dtype, device) -> tuple[torch.Tensor, torch.Tensor]:
        """``index [M, A]`` and ``coeffs [M, A+1]`` for :func:`sdsv_kernels.gather_combine`: per row
        ``(anchors, sigma, slot_of)``, ``own`` times the row's own value plus ``reading``'s weights at
        ``sigma`` on the anchors' slots (``slot_of``, if any, maps a bank slot to the tensor's row); rows with
        fewer anchors are padded with zero weights."""
        index, coeffs = [], []
        for use, s, slot_of in rows:
            index.append([slot if slot_of is None else slot_of(slot) for slot, _ in use])
            coeffs.append([own] + reading.coefficients([a for _, a in use], s))
        width = max(len(i) for i in index)
        for i, c in zip(index, coeffs):
            pad = width - len(i)
            i += [i[0]] * pad
            c += [0.0] * pad
        cdt = torch.promote_types(dtype, torch.float32)
        return (torch.tensor(index, dtype=torch.int64).to(device, non_blocking=True),
                torch.tensor(coeffs, dtype=cdt).to(device, non_blocking=True))

    def _slot(self, key: tuple[int, int], i: int) -> int:
        b, branch = key
        return (b * self.branches + branch) * self.slots + i

    @property
    def nbytes(self) -> int:
        """Memory held: the residuals' bank and, with a corrected window's call, the velocities'."""
        return sum(0 if t is None else t.numel() * t.element_size() for t in (self.bank, self.velocities))
