"""A diffusers transformer as its own draft: the forecast self-draft on Flux, Wan2.1 and SD3.

The split (:class:`sdsv.forecast.SplitModel`) is made from the model's own structure, through
PyTorch hooks that exist only while one of its calls runs — no diffusers code is copied:

* the **deep part** is the block stacks (Flux: ``transformer_blocks`` then
  ``single_transformer_blocks``; Wan: ``blocks``; SD3: ``transformer_blocks``) after the first
  ``head_blocks`` blocks; the **cheap part** is everything else: patch and text embeddings,
  timestep/guidance conditioning, rotary embeddings, the leading blocks, ``norm_out`` and
  ``proj_out``;
* a **target call** runs the whole model; a forward pre-hook on the first deep block records its
  image-token input ``h_in`` and one on ``norm_out`` records what reaches it, ``h_out``; the
  residual ``h_out - h_in`` of every row goes to the sampler's anchor bank;
* a **draft call** runs the model with the deep blocks taken out of their ``ModuleList`` s (the
  lists are swapped for the call and put back), so ``norm_out`` receives ``h_in``; its pre-hook
  replaces that by ``h_in + r̂``, the forecast (``sdsv_kernels.gather_combine``).

All three families end with ``norm_out(image tokens, ...)``: Flux's text stream and SD3's context
stream leave the model only through the image tokens, so forecasting the image tokens' residual
is the whole forecast. Guidance rows (cond and uncond of every state, in one forward call or in
two) are rows of the same calls, keyed per row by the bank. Measured cost of a draft call at
Flux.1-dev / Wan2.1-1.3B size on an H200: 0.9% / 0.3% of a target call
(``benchmarks/results/gpu-h200-2026-11-30``).
"""

from __future__ import annotations

import contextlib
import copy

import torch

import sdsv_kernels

from ...errors import RefusedError


class TransformerSplit:
    """``forward_with_residual`` / ``forward_with_forecast`` of a diffusers transformer, run
    through ``denoiser`` (a :class:`~.denoisers.TransformerDenoiser` of that transformer, which
    makes the model call(s) of one sampler call; None until :meth:`with_denoiser` gives one:
    :func:`sdsv.enable` finds the layout once, each call brings its own conditioning). ``stacks``: the names of the block
    ``ModuleList`` s, in execution order. ``head_blocks``: leading blocks the draft computes
    (counted across the stacks); ``head_blocks`` = all blocks forecasts nothing (the draft is
    then the target: a diagnostic)."""

    sdsv_pure = True  # diffusers' transformers do not write into their inputs

    def __init__(self, denoiser, transformer: torch.nn.Module, stacks: tuple[str, ...], head_blocks: int = 0):
        lists = []
        for name in stacks:
            mods = getattr(transformer, name, None)
            if not isinstance(mods, torch.nn.ModuleList):
                raise RefusedError(
                    f"{type(transformer).__name__} has no block list {name!r} (got {type(mods).__name__}): its block "
                    f"layout is not the one the self-draft expects ({', '.join(stacks)} then norm_out); "
                    "pass a draft transformer instead")
            lists.append(mods)
        if not isinstance(getattr(transformer, "norm_out", None), torch.nn.Module):
            raise RefusedError(f"{type(transformer).__name__} has no norm_out module: the self-draft forecasts the "
                               "hidden state that reaches it; pass a draft transformer instead")
        total = sum(len(m) for m in lists)
        if not 0 <= head_blocks <= total:
            raise ValueError(f"head_blocks must be in [0, {total}] (the model's blocks), got {head_blocks}")
        self.denoiser, self.transformer = denoiser, transformer
        self.stacks, self.head_blocks, self.total = stacks, head_blocks, total
        # the first deep block: the stack and the index where the forecast part starts
        self._first_deep = None
        left = head_blocks
        for name, mods in zip(stacks, lists):
            if left < len(mods):
                self._first_deep = mods[left]
                break
            left -= len(mods)

    def with_denoiser(self, denoiser) -> "TransformerSplit":
        """This split (its block layout, found once) run through one call's ``denoiser``."""
        bound = copy.copy(self)
        bound.denoiser = denoiser
        return bound

    def model_rows(self, x: torch.Tensor, **cond) -> int:
        """Rows of the transformer's call(s) for ``x``: doubled by classifier-free guidance
        (``negative_*`` conditioning), cond and uncond of every state, branch-major."""
        return x.shape[0] * (2 if any(k.startswith("negative_") for k in cond) else 1)

    # ---- the two calls ----------------------------------------------------------------------
    def forward_with_residual(self, x: torch.Tensor, sigma: torch.Tensor, **cond):
        ins, outs = [], []
        with self._hooks(record_in=ins, record_out=outs):
            v = self.denoiser(x, sigma, **cond)
        h_out = torch.cat(outs) if len(outs) > 1 else outs[0]
        if self._first_deep is None:  # nothing forecast: a zero residual
            return v, torch.zeros_like(h_out)
        h_in = torch.cat(ins) if len(ins) > 1 else ins[0]
        return v, (h_out.to(h_in.dtype) - h_in)

    def forward_with_forecast(self, x, sigma, bank, index, coeffs, **cond) -> torch.Tensor:
        state = {"row": 0}

        def forecast(h):
            n = h.shape[0]
            rows = slice(state["row"], state["row"] + n)
            state["row"] += n
            out = sdsv_kernels.gather_combine(h.to(bank.dtype), bank, index[rows], coeffs[rows])
            return out.to(h.dtype)

        with self._hooks(replace_out=forecast), self._without_deep_blocks():
            return self.denoiser(x, sigma, **cond)

    # ---- hooks (installed for one call, always removed) --------------------------------------
    @contextlib.contextmanager
    def _hooks(self, record_in=None, record_out=None, replace_out=None):
        handles = []

        def first_deep(module, args, kwargs):
            h = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
            record_in.append(h)

        def norm_out(module, args, kwargs):
            if "hidden_states" in kwargs:
                h = kwargs["hidden_states"]
                if record_out is not None:
                    record_out.append(h)
                    return None
                return args, {**kwargs, "hidden_states": replace_out(h)}
            if record_out is not None:
                record_out.append(args[0])
                return None
            return (replace_out(args[0]), *args[1:]), kwargs

        try:
            if record_in is not None and self._first_deep is not None:
                handles.append(self._first_deep.register_forward_pre_hook(first_deep, with_kwargs=True))
            handles.append(self.transformer.norm_out.register_forward_pre_hook(norm_out, with_kwargs=True))
            yield
        finally:
            for h in handles:
                h.remove()

    @contextlib.contextmanager
    def _without_deep_blocks(self):
        """Swap each block list for one holding only the leading blocks the draft computes."""
        saved = {name: self.transformer._modules[name] for name in self.stacks}
        left = self.head_blocks
        try:
            for name in self.stacks:
                mods = saved[name]
                keep = list(mods)[:max(0, left)]
                left -= len(mods)
                self.transformer._modules[name] = torch.nn.ModuleList(keep)
            yield
        finally:
            for name, mods in saved.items():
                self.transformer._modules[name] = mods
