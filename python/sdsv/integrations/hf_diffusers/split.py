"""A diffusers transformer as its own draft: the forecast self-draft on Flux, Wan2.1 and SD3.

The split (:class:`sdsv.forecast.SplitModel`) is made from the model's own structure, through
``ModelHook`` s in diffusers' own ``HookRegistry`` (:mod:`.registry`) — the mechanism diffusers'
FirstBlockCache uses to skip the same blocks — registered by ``sdsv.enable`` and removed by
``sdsv.disable`` (the same hook objects for every call, so a compiled model's graphs stay valid
from call to call); no diffusers code is copied:

* the **deep part** is the block stacks (Flux: ``transformer_blocks`` then
  ``single_transformer_blocks``; Wan: ``blocks``; SD3: ``transformer_blocks``) after the first
  ``head_blocks`` blocks; the **cheap part** is everything else: patch and text embeddings,
  timestep/guidance conditioning, rotary embeddings, the leading blocks, ``norm_out`` and
  ``proj_out``;
* a **target call** runs the whole model; the hook on the first deep block records its
  image-token input ``h_in`` and the one on ``norm_out`` records what reaches it, ``h_out``; the
  residual ``h_out - h_in`` of every row goes to the sampler's anchor bank;
* a **draft call** runs the model with every deep block's hook returning the block's inputs where
  its outputs go (the layout from diffusers' ``TransformerBlockRegistry``, as FirstBlockCache's
  skipped blocks), so ``norm_out`` receives ``h_in``; its hook replaces that by ``h_in + r̂``,
  the forecast (``sdsv_kernels.gather_combine``).

All three families end with ``norm_out(image tokens, ...)``: Flux's text stream and SD3's context
stream leave the model only through the image tokens, so forecasting the image tokens' residual
is the whole forecast. Guidance rows (cond and uncond of every state, in one forward call or in
two) are rows of the same calls, keyed per row by the bank. Outside the split's two calls the
hooks pass everything through.
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
    :func:`sdsv.enable` finds the layout once, each call brings its own conditioning).
    ``stacks``: the names of the block ``ModuleList`` s, in execution order. ``head_blocks``:
    leading blocks the draft computes (counted across the stacks); ``head_blocks`` = all blocks
    forecasts nothing (the draft is then the target: a diagnostic). Its hooks are registered by
    :meth:`attach` (``sdsv.enable``) until :meth:`detach` (``sdsv.disable``), for a ``with
    split.attached():`` block, or, when not attached, for each of its calls."""

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
        # the forecast part: every block after the first head_blocks, across the stacks, in order
        self._deep = [block for mods in lists for block in mods][head_blocks:]
        from .registry import block_metadata
        self._metadata = [block_metadata(block) for block in self._deep]  # refuses a block diffusers cannot skip
        self._state = self._hooks = None  # while attached: the hooks' CallState and the RegisteredHooks

    def with_denoiser(self, denoiser) -> "TransformerSplit":
        """This split (its block layout, found once, and its hooks if attached) run through one
        call's ``denoiser``."""
        bound = copy.copy(self)
        bound.denoiser = denoiser
        return bound

    def model_rows(self, x: torch.Tensor, **cond) -> int:
        """Rows of the transformer's call(s) for ``x``: doubled by classifier-free guidance
        (``negative_*`` conditioning), cond and uncond of every state, branch-major."""
        return x.shape[0] * (2 if any(k.startswith("negative_") for k in cond) else 1)

    # ---- the hooks: registered from sdsv.enable to sdsv.disable, or for one call ------------
    def attach(self) -> None:
        """Register the split's hooks in the modules' registries (attached already: nothing
        happens). They pass everything through outside the split's two calls."""
        if self._hooks is not None:
            return
        from .registry import BLOCK_HOOK, NORM_OUT_HOOK, CallState, DeepBlockHook, NormOutHook, RegisteredHooks, \
            invalidate_registry_caches

        state, hooks = CallState(), RegisteredHooks()
        try:
            for i, (block, meta) in enumerate(zip(self._deep, self._metadata)):
                hooks.register(block, DeepBlockHook(state, meta, first=i == 0), BLOCK_HOOK)
            hooks.register(self.transformer.norm_out, NormOutHook(state), NORM_OUT_HOOK)
        except BaseException:
            hooks.remove()
            raise
        self._state, self._hooks = state, hooks
        invalidate_registry_caches(self.transformer)

    def detach(self) -> None:
        """Remove the split's hooks, each module left exactly as it was (not attached: nothing happens)."""
        if self._hooks is None:
            return
        from .registry import invalidate_registry_caches

        hooks, self._hooks, self._state = self._hooks, None, None
        hooks.remove()
        invalidate_registry_caches(self.transformer)

    @contextlib.contextmanager
    def attached(self):
        """The hooks' :class:`~.registry.CallState` with the hooks registered for the ``with``
        block; hooks attached before are kept attached after it."""
        mine = self._hooks is None
        self.attach()
        try:
            yield self._state
        finally:
            if mine:
                self.detach()

    # ---- the two calls ----------------------------------------------------------------------
    def forward_with_residual(self, x: torch.Tensor, sigma: torch.Tensor, **cond):
        with self.attached() as state:
            state.begin("record")
            try:
                v = self.denoiser(x, sigma, **cond)
                ins, outs = state.ins, state.outs
            finally:
                state.end()
        h_out = torch.cat(outs) if len(outs) > 1 else outs[0]
        if not self._deep:  # nothing forecast: a zero residual
            return v, torch.zeros_like(h_out)
        h_in = torch.cat(ins) if len(ins) > 1 else ins[0]
        return v, (h_out.to(h_in.dtype) - h_in)

    def forward_with_forecast(self, x, sigma, bank, index, coeffs, **cond) -> torch.Tensor:
        row = [0]

        def forecast(h):
            n = h.shape[0]
            rows = slice(row[0], row[0] + n)
            row[0] += n
            out = sdsv_kernels.gather_combine(h.to(bank.dtype), bank, index[rows], coeffs[rows])
            return out.to(h.dtype)

        with self.attached() as state:
            state.begin("forecast", forecast)
            try:
                return self.denoiser(x, sigma, **cond)
            finally:
                state.end()
