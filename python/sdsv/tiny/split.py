"""TinyDiT as a split model for the forecast self-draft (:mod:`sdsv.forecast`).

Cheap parts: the patch/prompt embedding and conditioning (``TinyDiT.embed``), the first
``head_blocks`` and the last ``tail_blocks`` blocks, and the output layer (``TinyDiT.head``).
The blocks in between are the deep part the draft forecasts. Measured on the shipped target
(docs/method.md): computing one or two edge blocks made the draft slower without making
it better, so the default keeps none.
"""

from __future__ import annotations

import torch

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

    # ---- the in-window probe: the first deep block computed for real (sdsv.windows.ProbedUnverified)
    def forward_with_probe_residual(self, x, sigma, labels, guidance=None):
        """The full forward, and the deep residual with the first deep block's own residual
        beside it (last dimension: ``[r_deep, r_probe]``)."""
        h_in, cond, mod = self._enter(x, sigma, labels, guidance)
        h = self.deep[0](h_in, mod)
        h_probe = h
        for blk in self.deep[1:]:
            h = blk(h, mod)
        return self._leave(h, cond, mod), torch.cat([h - h_in, h_probe - h_in], dim=-1)

    def forward_with_probe(self, x, sigma, bank, index, coeffs, labels, guidance=None):
        """The draft's forward (the deep blocks forecast, as ``forward_with_forecast``), and per
        row the probe's relative error: the first deep block computed for real against its own
        forecast from the same anchors, ``rms(real - forecast) / rms(forecast residual)``."""
        h_in, cond, mod = self._enter(x, sigma, labels, guidance)
        both = sdsv_kernels.gather_combine(torch.cat([h_in, h_in], dim=-1), bank, index, coeffs)
        width = h_in.shape[-1]
        h_deep, h_probe_hat = both[..., :width], both[..., width:]
        h_probe = self.deep[0](h_in, mod)
        err = (h_probe - h_probe_hat).flatten(1).pow(2).mean(1)
        ref = (h_probe_hat - h_in).flatten(1).pow(2).mean(1)
        return self._leave(h_deep, cond, mod), (err / ref.clamp_min(1e-30)).sqrt()

