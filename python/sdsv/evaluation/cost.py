"""What a sampling run costs: model calls by batch size, and FLOPs counted for the tiny models.

FLOPs are counted with :class:`torch.utils.flop_counter.FlopCounterMode` once per
(model, guidance, batch size) on a copy of the model on the ``meta`` device — shapes only, no
arithmetic, so counting a batch of 640 rows is free — and then multiplied by how many calls of
that batch size a run made. On the meta device ``scaled_dot_product_attention`` decomposes into
the matmuls that the counter knows, so attention is counted too (the fused CPU attention kernel
is invisible to the counter).

The self-draft (``draft="self"``) is the target in two forms: its target calls are full forwards
(they also keep the deep blocks' residual, an element-wise subtraction) and are counted as
``"target"``; its draft calls run only the target's cheap parts plus the residual forecast and
are counted as ``"self"``, with FLOPs counted around an actual :class:`~sdsv.forecast.SelfDraft`
draft call on the meta copy (element-wise work — the forecast's combine, like every activation
and residual add — counts nothing, as everywhere in this table).
"""

from __future__ import annotations

import copy
from collections import Counter
from typing import Callable

import torch

from ..tiny.pipeline import DEFAULT_GUIDANCE, TinyPipeline

#: the name the self-draft's draft calls are counted under
SELF = "self"


class CountedDenoiser:
    """Pass-through wrapper that records the batch size of every call in ``calls[name]``."""

    def __init__(self, fn: Callable, name: str, calls: dict[str, Counter]):
        self.fn, self.name, self.calls = fn, name, calls

    def __call__(self, x, sigma, **cond):
        self.calls.setdefault(self.name, Counter())[x.shape[0]] += 1
        return self.fn(x, sigma, **cond)


class CountingPipeline(TinyPipeline):
    """A :class:`TinyPipeline` whose denoisers record their calls in ``self.calls``
    (``{model name: Counter(batch size -> calls)}``); ``reset_calls()`` starts a new tally."""

    def __init__(self, models):
        super().__init__(models)
        self.calls: dict[str, Counter] = {}

    def reset_calls(self) -> dict[str, Counter]:
        old, self.calls = self.calls, {}
        return old

    def denoiser(self, name: str, guidance: float = DEFAULT_GUIDANCE):
        return CountedDenoiser(super().denoiser(name, guidance), name, self.calls)

    def self_denoisers(self, self_draft, guidance: float = DEFAULT_GUIDANCE):
        target, draft = super().self_denoisers(self_draft, guidance)
        return CountedDenoiser(target, "target", self.calls), CountedDenoiser(draft, SELF, self.calls)


class FlopTable:
    """FLOPs of one denoiser call (guidance included: a CFG target runs 2b rows), counted once
    per (model, guidance, batch size) and remembered; model ``"self"`` is a self-draft draft call
    of the target."""

    def __init__(self, models: dict[str, torch.nn.Module], image_shape=(3, 32, 32)):
        self._meta = TinyPipeline({n: copy.deepcopy(m).to("meta") for n, m in models.items()})
        self.image_shape = tuple(image_shape)
        self._flops: dict[tuple[str, float, int], int] = {}

    def per_call(self, name: str, batch: int, guidance: float) -> int:
        key = (name, float(guidance), int(batch))
        if key not in self._flops:
            from torch.utils.flop_counter import FlopCounterMode

            x = torch.empty(batch, *self.image_shape, device="meta")
            sigma = torch.empty(batch, device="meta")
            labels = torch.zeros(batch, 2, dtype=torch.long, device="meta")
            if name == SELF:
                self._flops[key] = self._self_draft_call(x, sigma, labels, guidance)
            else:
                with FlopCounterMode(display=False) as counter:
                    self._meta.denoiser(name, guidance)(x, sigma, labels=labels)
                self._flops[key] = int(counter.get_total_flops())
        return self._flops[key]

    def _self_draft_call(self, x, sigma, labels, guidance: float) -> int:
        """FLOPs of one self-draft draft call: a target call records every row's anchor, the
        sampler's side commits it, then the counted draft call forecasts from it."""
        from torch.utils.flop_counter import FlopCounterMode

        self_draft = self._meta.self_draft()
        target, draft = self._meta.self_denoisers(self_draft, guidance)
        rows = list(range(x.shape[0]))
        with self_draft.session(x.shape[0]) as bank:
            bank.tag(rows, [1.0] * len(rows))
            target(x, sigma, labels=labels)
            bank.commit(rows)
            bank.tag(rows, [0.5] * len(rows))
            with FlopCounterMode(display=False) as counter:
                draft(x, sigma, labels=labels)
        return int(counter.get_total_flops())

    def total(self, calls: dict[str, Counter], guidance: float) -> dict[str, int]:
        """``{model name: FLOPs}`` of a tally of calls."""
        return {name: sum(n * self.per_call(name, b, guidance) for b, n in hist.items()) for name, hist in calls.items()}
