"""TinyDiT as a split model for the forecast self-draft (:mod:`sdsv.forecast`).

Cheap parts: the patch/prompt embedding and conditioning (``TinyDiT.embed``), the first
``head_blocks`` and the last ``tail_blocks`` blocks, and the output layer (``TinyDiT.head``).
The blocks in between are the deep part the draft forecasts. Measured on the shipped target
(docs/method.md): computing one or two edge blocks made the draft slower without making
it better, so the default keeps none.
"""

from __future__ import annotations

import sdsv_kernels

from .model import TinyDiT


class TinyDiTSplit:
    """``forward_with_residual`` / ``forward_with_forecast`` of a TinyDiT (see SplitModel)."""

    sdsv_pure = True  # never writes into its inputs

    def __init__(self, model: TinyDiT, head_blocks: int = 0, tail_blocks: int = 0):
        depth = len(model.blocks)
        if head_blocks < 0 or tail_blocks < 0 or head_blocks + tail_blocks >= depth:
            raise ValueError(f"head_blocks={head_blocks} + tail_blocks={tail_blocks} must leave at least one of "
                             f"the model's {depth} blocks to forecast")
        self.model = model
        self.head_blocks, self.tail_blocks = head_blocks, tail_blocks
        blocks = list(model.blocks)
        self.first, self.deep, self.last = blocks[:head_blocks], blocks[head_blocks:depth - tail_blocks], blocks[depth - tail_blocks:]

    def _enter(self, x, sigma, labels, guidance):
        h, cond, mod = self.model.embed(x, sigma, labels, guidance)
        for blk in self.first:
            h = blk(h, mod)
        return h, cond, mod

    def _leave(self, h, cond, mod):
        for blk in self.last:
            h = blk(h, mod)
        return self.model.head(h, cond)

    def forward_with_residual(self, x, sigma, labels, guidance=None):
        h_in, cond, mod = self._enter(x, sigma, labels, guidance)
        h = h_in
        for blk in self.deep:
            h = blk(h, mod)
        return self._leave(h, cond, mod), h - h_in

    def forward_with_forecast(self, x, sigma, bank, index, coeffs, labels, guidance=None):
        h, cond, mod = self._enter(x, sigma, labels, guidance)
        return self._leave(sdsv_kernels.gather_combine(h, bank, index, coeffs), cond, mod)

