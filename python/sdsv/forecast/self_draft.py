"""The forecast self-draft: the target drafts for itself, no training (docs/method.md).

A model that can be *split* — cheap parts (input embedding, conditioning, optionally a few
blocks, the output layer) around expensive deep blocks — gives two denoisers:

* ``SelfDraft.target``: the full forward; it also returns the deep blocks' residual
  ``r = h_out - h_in`` of every row, which the per-call :class:`~sdsv.forecast.anchors.AnchorBank`
  keeps until the sampler says whether the row is on the committed trajectory.
* ``SelfDraft.draft``: only the cheap parts, with the deep blocks replaced by the residual
  forecast from the sample's anchors at the row's own sigma (a
  :class:`~sdsv.forecast.forecasts.NewtonForecast`: the damped ``DAMPED`` by default, or a
  polynomial in sigma of order 0, 1 (the line) or 2).

Both run inside ``sdsv.sample(..., self_draft=sd)``, which opens a fresh bank per call (held in
a :class:`contextvars.ContextVar`, so two calls — two threads, two pipelines, or a nested call —
never share anchors) and drops it at the end.
"""

from __future__ import annotations

import contextlib
import contextvars
import itertools
from typing import Iterator, Protocol

import torch

from .._checks import as_int
from .anchors import AnchorBank
from .forecasts import INTERPOLATION, NewtonForecast, resolve_forecast

_ids = itertools.count()


class SplitModel(Protocol):
    """What a model provides to be its own draft.

    ``forward_with_residual(x, sigma, **cond) -> (v, residual)``: the full forward, plus the
    deep blocks' ``h_out - h_in`` (``[rows, ...]``, any fixed shape).
    ``forward_with_forecast(x, sigma, bank, index, coeffs, **cond) -> v``: the cheap parts only;
    the hidden state entering the deep blocks, ``h``, is replaced by
    ``sdsv_kernels.gather_combine(h, bank, index, coeffs)`` where the deep blocks' output would be.
    Optional ``model_rows(x, **cond) -> int``: the rows its model call(s) run for ``x`` when the
    model stacks guidance branches itself (branch-major, whole copies of ``x``); default ``len(x)``.
    """

    def forward_with_residual(self, x: torch.Tensor, sigma: torch.Tensor, **cond): ...

    def forward_with_forecast(self, x, sigma, bank, index, coeffs, **cond) -> torch.Tensor: ...


class SelfDraft:
    """A training-free draft made of ``model`` itself; see the module docstring.

    ``forecast``: a :class:`~sdsv.forecast.forecasts.NewtonForecast` (default
    :data:`~sdsv.forecast.forecasts.DEFAULT_FORECAST`, the damped forecast); or ``order`` as a
    shorthand for the polynomial in sigma: 0 reuses the last anchor's residual, 1 extrapolates linearly from the
    last two, 2 quadratically from the last three (with fewer anchors a sample's forecast uses
    what it has). ``slots``: anchors kept per sample and guidance branch (default: as many as the
    forecast reads).
    """

    def __init__(self, model: SplitModel, order: int | None = None, slots: int | None = None, *,
                 forecast: NewtonForecast | None = None):
        for name in ("forward_with_residual", "forward_with_forecast"):
            if not callable(getattr(model, name, None)):
                raise TypeError(f"a self-draft needs a split model with {name}(); got {type(model).__name__}")
        self.model = model
        self.forecast = forecast = resolve_forecast(forecast, order)
        self.slots = forecast.anchors if slots is None else as_int("slots", slots)
        if self.slots < forecast.anchors:
            raise ValueError(f"{forecast!r} reads {forecast.anchors} anchors: slots must be >= {forecast.anchors}, "
                             f"got {self.slots}")
        self._active: contextvars.ContextVar[AnchorBank | None] = contextvars.ContextVar(
            f"sdsv_self_draft_{next(_ids)}", default=None)

    @property
    def sdsv_pure(self) -> bool:
        """As pure as the split model says it is (``sdsv_pure = True``: never writes into its inputs)."""
        return bool(getattr(self.model, "sdsv_pure", False))

    @contextlib.contextmanager
    def session(self, batch: int, interpolates: bool = False) -> Iterator[AnchorBank]:
        """A fresh anchor bank for one sampling call of ``batch`` samples (the sampler opens it);
        ``interpolates``: the call's windows are corrected (:mod:`sdsv.windows`), so the bank keeps
        at least the anchors :data:`~sdsv.forecast.forecasts.INTERPOLATION` reads."""
        slots = max(self.slots, INTERPOLATION.anchors) if interpolates else self.slots
        bank = AnchorBank(batch, self.forecast, slots)
        token = self._active.set(bank)
        try:
            yield bank
        finally:
            self._active.reset(token)

    def _bank(self, which: str) -> AnchorBank:
        bank = self._active.get()
        if bank is None:
            raise RuntimeError(f"SelfDraft.{which} runs inside sdsv.sample(..., self_draft=<this SelfDraft>), "
                               "which keeps the anchors of each call")
        return bank

    def target(self, x: torch.Tensor, sigma: torch.Tensor, **cond) -> torch.Tensor:
        bank = self._bank("target")
        v, residual = self.model.forward_with_residual(x, sigma, **cond)
        bank.record(residual)
        return v

    def draft(self, x: torch.Tensor, sigma: torch.Tensor, **cond) -> torch.Tensor:
        bank = self._bank("draft")
        # a model that makes its guidance rows itself (diffusers' denoisers) says how many it runs
        rows = self.model.model_rows(x, **cond) if hasattr(self.model, "model_rows") else x.shape[0]
        store, index, coeffs = bank.forecast_args(rows, x.device)
        return self.model.forward_with_forecast(x, sigma, store, index, coeffs, **cond)

    def __repr__(self) -> str:
        return f"SelfDraft({type(self.model).__name__}, forecast={self.forecast!r}, slots={self.slots})"
