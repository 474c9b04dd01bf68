"""Find another step cache on a transformer, wherever it was attached.

diffusers' caches are hooks in a ``HookRegistry`` (``module._diffusers_hook``) on the transformer
or on its blocks and attention layers — ``enable_cache(config)`` and the ``apply_*`` functions
install the same hooks, so the registries are read rather than ``is_cache_enabled`` (which only
``enable_cache`` sets). cache-dit replaces the transformer's ``forward`` and marks the instance
``_is_cached``. Each reuses activations of the previous step and assumes one step per forward,
while an SDSV forward holds rows of several steps and samples: the two cannot share a model.
sdsv's own hooks sit in the same registries during a call (:mod:`.registry`); their names start
with ``sdsv_``, which matches none of the caches' prefixes below.
"""

from __future__ import annotations

# diffusers hook-name prefixes of the step caches -> the names users know them by
DIFFUSERS_CACHE_HOOKS = {
    "fbc_": "diffusers FirstBlockCache",
    "faster_cache": "diffusers FasterCache",
    "mag_cache": "diffusers MagCache",
    "pyramid_attention_broadcast": "diffusers PyramidAttentionBroadcast",
    "sea_cache": "diffusers SeaCache",
    "taylorseer_cache": "diffusers TaylorSeerCache",
}
HOW_TO_REMOVE = {
    "diffusers": "call .disable_cache() on it (or remove the hooks you applied)",
    "cache-dit": "call cache_dit.disable_cache(pipe)",
}


def step_caches(module) -> list[str]:
    """The names of the step caches attached to ``module`` or any of its submodules (empty if none)."""
    if module is None:
        return []
    module = getattr(module, "_orig_mod", module)  # behind a torch.compile wrapper
    found: list[str] = []
    if module.__dict__.get("_is_cached", False):  # the instance's mark, not a class attribute
        found.append("cache-dit")
    for sub in module.modules():
        registry = sub.__dict__.get("_diffusers_hook")
        for name in getattr(registry, "hooks", {}) or {}:
            for prefix, label in DIFFUSERS_CACHE_HOOKS.items():
                if name.startswith(prefix) and label not in found:
                    found.append(label)
    return found


def describe(found: list[str]) -> str:
    """``"diffusers MagCache (call .disable_cache() ...)"`` for a refusal message."""
    return "; ".join(f"{name} ({HOW_TO_REMOVE[name.split()[0]]})" for name in found)
