"""sdsv's hooks, in diffusers' own ``HookRegistry`` (``diffusers.hooks``), added and removed as a unit.

Every hook sdsv puts on a model is a ``ModelHook`` registered in the module's registry, the
mechanism diffusers' own caches use, so it sits in the same chain as any other hook attached
there:

* :class:`FirstStepCapture` on the pipeline's transformer while the pipeline runs up to its first
  step (:mod:`.hook`): it records the transformer's calls instead of running them;
* :class:`DeepBlockHook` on each forecast block and :class:`NormOutHook` on ``norm_out`` from
  ``sdsv.enable`` to ``sdsv.disable`` with the self-draft (:mod:`.split`): the residual recorded
  in target calls, the blocks skipped and the forecast put in their place in draft calls,
  everything passed through otherwise.

Their names start with ``sdsv_``, none of the step caches' names (:mod:`.other_caches`), so sdsv
never takes its own hooks for another cache. :class:`RegisteredHooks` puts every module back
exactly as it was: diffusers' ``remove_hook`` leaves the forward it saw at registration (a bound
method) in the instance's ``__dict__`` and the registry on the module; both go when sdsv added
them. This module imports diffusers; the others import it only when a pipeline is used.
"""

from __future__ import annotations

import torch
from diffusers.hooks import HookRegistry, ModelHook
from diffusers.hooks._helpers import TransformerBlockRegistry

from ...errors import RefusedError

PREFIX = "sdsv_"
CAPTURE_HOOK = "sdsv_first_step_capture"
BLOCK_HOOK = "sdsv_forecast_block"
NORM_OUT_HOOK = "sdsv_norm_out"


# ---- the pipeline's first step ----------------------------------------------------------------
class FirstStepCapture(ModelHook):
    """On the pipeline's transformer until the first scheduler step: each call is recorded (its
    keyword arguments, dicts copied: pipelines mutate their attention kwargs between the cond and
    uncond calls) and answered with zeros instead of running the model."""

    def __init__(self):
        super().__init__()
        self.calls: list[dict] = []

    def new_forward(self, module, *args, **kwargs):
        if args:
            raise RefusedError("the pipeline called its transformer with positional arguments; the SDSV adapter "
                               "expects keyword arguments (an unsupported pipeline variant)")
        if not self.calls:
            check_input_dtypes(module, kwargs)
        self.calls.append({k: (dict(v) if isinstance(v, dict) else v) for k, v in kwargs.items()})
        return (torch.zeros_like(kwargs["hidden_states"]),)


def check_input_dtypes(module, kwargs) -> None:
    """The latents and text embeddings in the transformer's dtype, as running it would require: the
    recorded call is not run, so a mismatch the pipeline alone fails on (e.g. float32
    ``prompt_embeds`` on a float64 pipeline) is refused here instead of sampled in another dtype.
    Skipped under diffusers' layerwise casting (weights stored in another dtype than computed)."""
    dtype = getattr(module, "dtype", None)
    if not isinstance(dtype, torch.dtype) or any(
            "layerwise_casting" in getattr(m.__dict__.get("_diffusers_hook"), "hooks", {}) for m in module.modules()):
        return
    for name in ("hidden_states", "encoder_hidden_states", "pooled_projections"):
        v = kwargs.get(name)
        if isinstance(v, torch.Tensor) and v.is_floating_point() and v.dtype != dtype:
            raise TypeError(f"the pipeline passes {name} in {v.dtype} to a {dtype} transformer, which fails without "
                            f"sdsv too (the latents take prompt_embeds' dtype): pass the embeddings in {dtype}")


# ---- the self-draft's split -------------------------------------------------------------------
class CallState:
    """What the split's hooks do during the current model call: ``mode`` None (pass through),
    ``"record"`` (a target call: ``ins`` / ``outs`` collect h_in / h_out) or ``"forecast"`` (a
    draft call: the deep blocks are skipped, ``forecast(h)`` replaces what reaches ``norm_out``)."""

    def __init__(self):
        self.end()

    def begin(self, mode: str, forecast=None) -> None:
        self.mode, self.ins, self.outs, self.forecast = mode, [], [], forecast

    def end(self) -> None:
        self.mode, self.ins, self.outs, self.forecast = None, [], [], None


def block_metadata(block):
    """diffusers' ``TransformerBlockRegistry`` entry for ``block``'s class (where its forward takes
    and returns the hidden states: what its caches use to skip a block), or a refusal."""
    try:
        return TransformerBlockRegistry.get(type(block))
    except ValueError:
        raise RefusedError(f"{type(block).__name__} is not in diffusers' TransformerBlockRegistry: the self-draft "
                           "cannot skip it (where its outputs go is unknown); pass a draft transformer instead"
                           ) from None


class DeepBlockHook(ModelHook):
    """On each forecast block: in a draft call the block is skipped and returns its inputs in its
    output layout (as FirstBlockCache's skipped blocks do); the first one records its
    image-token input in a target call."""

    def __init__(self, state: CallState, metadata, first: bool):
        super().__init__()
        self.state, self.metadata, self.first = state, metadata, first

    def new_forward(self, module, *args, **kwargs):
        state, meta = self.state, self.metadata
        if state.mode == "forecast":
            h = meta._get_parameter_from_args_kwargs(meta.hidden_states_argument_name, args, kwargs)
            if meta.return_encoder_hidden_states_index is None:
                return h
            out = [None, None]
            out[meta.return_hidden_states_index] = h
            out[meta.return_encoder_hidden_states_index] = meta._get_parameter_from_args_kwargs(
                meta.encoder_hidden_states_argument_name, args, kwargs)
            return tuple(out)
        if self.first and state.mode == "record":
            state.ins.append(meta._get_parameter_from_args_kwargs(meta.hidden_states_argument_name, args, kwargs))
        return self.fn_ref.original_forward(*args, **kwargs)


class NormOutHook(ModelHook):
    """On ``norm_out``: records the hidden state that reaches it (target call) or replaces it by
    the forecast (draft call)."""

    def __init__(self, state: CallState):
        super().__init__()
        self.state = state

    def pre_forward(self, module, *args, **kwargs):
        state = self.state
        if state.mode is None:
            return args, kwargs
        if "hidden_states" in kwargs:
            h = kwargs["hidden_states"]
            if state.mode == "record":
                state.outs.append(h)
                return args, kwargs
            return args, {**kwargs, "hidden_states": state.forecast(h)}
        if state.mode == "record":
            state.outs.append(args[0])
            return args, kwargs
        return (state.forecast(args[0]), *args[1:]), kwargs


# ---- registration -----------------------------------------------------------------------------
class RegisteredHooks:
    """Hooks sdsv registered, each ``(module, name)``; :meth:`remove` takes them out in reverse
    order and leaves each module's ``forward`` and ``_diffusers_hook`` as they were before."""

    def __init__(self):
        self._added: list[tuple] = []

    def register(self, module, hook: ModelHook, name: str) -> None:
        """Register ``hook`` as ``name`` in ``module``'s own registry (created if it has none). The
        registry is looked up in the instance itself: a ``torch.compile`` wrapper gets its own,
        not the one of the module it wraps."""
        assert name.startswith(PREFIX), name
        had_forward = "forward" in module.__dict__
        registry = module.__dict__.get("_diffusers_hook")
        created = registry is None
        if created:
            registry = HookRegistry(module)
            module.__dict__["_diffusers_hook"] = registry
        registry.register_hook(hook, name)
        self._added.append((module, registry, name, had_forward, created))

    def remove(self) -> None:
        """Remove every hook registered here (again: nothing happens)."""
        while self._added:
            module, registry, name, had_forward, created = self._added.pop()
            outermost = registry._hook_order[-1:] == [name]
            registry.remove_hook(name, recurse=False)
            if outermost and not had_forward:  # remove_hook leaves the class's bound forward in __dict__
                module.__dict__.pop("forward", None)
            if created and not registry.hooks and module.__dict__.get("_diffusers_hook") is registry:
                del module.__dict__["_diffusers_hook"]

    def __enter__(self) -> "RegisteredHooks":
        return self

    def __exit__(self, *exc) -> bool:
        self.remove()
        return False


def invalidate_registry_caches(module) -> None:
    """Drop the child-registry lists diffusers caches on ``module``'s registries (as its own
    ``enable_cache`` does after adding block hooks), so no cached list keeps a removed registry."""
    for sub in module.modules():
        registry = sub.__dict__.get("_diffusers_hook")
        if getattr(registry, "_child_registries_cache", None) is not None:
            registry._child_registries_cache = None
