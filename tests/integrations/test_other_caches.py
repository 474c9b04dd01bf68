"""Another step cache on the transformer or the draft is found wherever it was attached
(diffusers' ``enable_cache``, its ``apply_*`` functions, cache-dit) and refused by name, at
``sdsv.enable`` and at every call; once removed, the enabled pipeline works again."""

import pytest
import torch

import sdsv
from sdsv.errors import RefusedError
from sdsv.integrations.hf_diffusers.other_caches import step_caches
from sdsv.integrations.hf_diffusers.random_pipelines import flux_kwargs, flux_pipe, flux_transformer

diffusers = pytest.importorskip("diffusers")
from diffusers import hooks as H  # noqa: E402


def _enable_cache(cfg):
    return lambda tr: tr.enable_cache(cfg), lambda tr: tr.disable_cache()


def _applied(apply, cfg, *hook_names):
    def remove(tr):
        registry = H.HookRegistry.check_if_exists_or_initialize(tr)
        for name in hook_names:
            registry.remove_hook(name, recurse=True)
    return lambda tr: apply(tr, cfg), remove


ATTACH = {
    "enable_cache FirstBlockCache": ("diffusers FirstBlockCache", *_enable_cache(H.FirstBlockCacheConfig(threshold=0.2))),
    "apply_first_block_cache": ("diffusers FirstBlockCache", *_applied(
        H.apply_first_block_cache, H.FirstBlockCacheConfig(threshold=0.2), "fbc_leader_block_hook", "fbc_block_hook")),
    "apply_taylorseer_cache": ("diffusers TaylorSeerCache", *_applied(
        H.apply_taylorseer_cache, H.TaylorSeerCacheConfig(), "taylorseer_cache")),
    "apply_mag_cache": ("diffusers MagCache", *_applied(
        H.apply_mag_cache, H.MagCacheConfig(mag_ratios=[1.0] * 6, num_inference_steps=6),
        "mag_cache_leader_block_hook", "mag_cache_block_hook")),
}


@pytest.mark.parametrize("route", list(ATTACH))
def test_a_diffusers_cache_is_refused_at_enable_however_it_was_attached(route):
    label, attach, remove = ATTACH[route]
    pipe = flux_pipe()
    attach(pipe.transformer)
    assert step_caches(pipe.transformer) == [label]
    with pytest.raises(RefusedError, match=f"pipe.transformer has another step cache attached: {label}"):
        sdsv.enable(pipe)
    remove(pipe.transformer)
    assert step_caches(pipe.transformer) == []
    sdsv.enable(pipe)
    pipe(**flux_kwargs(steps=4), output_type="latent")


def test_a_cache_attached_after_enable_is_refused_at_the_call_and_the_pipeline_recovers():
    pipe = flux_pipe()
    sdsv.enable(pipe)
    kw = dict(flux_kwargs(steps=6), output_type="latent")
    want = pipe(**kw, generator=torch.Generator().manual_seed(0)).images
    H.apply_taylorseer_cache(pipe.transformer, H.TaylorSeerCacheConfig())
    with pytest.raises(RefusedError, match="TaylorSeerCache"):
        pipe(**flux_kwargs(steps=6), output_type="latent")
    H.HookRegistry.check_if_exists_or_initialize(pipe.transformer).remove_hook("taylorseer_cache", recurse=True)
    torch.testing.assert_close(pipe(**kw, generator=torch.Generator().manual_seed(0)).images, want, rtol=0, atol=0)


def test_a_cache_on_the_draft_is_refused_at_enable_and_at_the_call():
    pipe, draft = flux_pipe(), flux_transformer(seed=1)
    draft.enable_cache(H.FirstBlockCacheConfig(threshold=0.2))
    with pytest.raises(RefusedError, match="the draft has another step cache attached: diffusers FirstBlockCache"):
        sdsv.enable(pipe, draft=draft)
    draft.disable_cache()
    sdsv.enable(pipe, draft=draft)
    draft.enable_cache(H.FirstBlockCacheConfig(threshold=0.2))
    with pytest.raises(RefusedError, match="the draft has another step cache attached"):
        pipe(**flux_kwargs(steps=4), output_type="latent")


def test_cache_dit_is_refused_by_name_and_sdsv_disable_leaves_it_alone():
    cache_dit = pytest.importorskip("cache_dit")
    pipe = flux_pipe()
    cache_dit.enable_cache(pipe, cache_config=cache_dit.DBCacheConfig(Fn_compute_blocks=1, Bn_compute_blocks=0))
    assert step_caches(pipe.transformer) == ["cache-dit"]
    with pytest.raises(RefusedError, match=r"cache-dit \(call cache_dit.disable_cache\(pipe\)\)"):
        sdsv.enable(pipe)
    cache_dit.disable_cache(pipe)
    assert step_caches(pipe.transformer) == []
    sdsv.enable(pipe)
    pipe(**flux_kwargs(steps=4), output_type="latent")
    sdsv.disable(pipe)


def test_sdsv_hooks_sit_in_diffusers_registries_beside_other_hooks_and_are_no_cache():
    """sdsv's hooks are ModelHooks in diffusers' HookRegistry, in the same chains as any other
    hook: a user's (non-cache) hook on the transformer sees every model call sdsv's sampler makes,
    one on a forecast block runs in target calls only (draft calls skip the block); sdsv's own
    hooks are never taken for a step cache; after the call only the user's hooks are left."""
    pipe = flux_pipe()
    seen = {"transformer": 0, "block": 0, "sdsv": set(), "caches": []}

    class Count(H.ModelHook):
        def __init__(self, key):
            super().__init__()
            self.key = key

        def pre_forward(self, module, *args, **kwargs):
            seen[self.key] += 1
            for m in pipe.transformer.modules():
                seen["sdsv"].update(n for n in getattr(m.__dict__.get("_diffusers_hook"), "hooks", {}) if
                                    n.startswith("sdsv_"))
            seen["caches"] += step_caches(pipe.transformer)
            return args, kwargs

    block = pipe.transformer.single_transformer_blocks[-1]
    for module, key in ((pipe.transformer, "transformer"), (block, "block")):
        H.HookRegistry.check_if_exists_or_initialize(module).register_hook(Count(key), "count")
    kw = dict(flux_kwargs(steps=6), output_type="latent")
    ref = pipe(**kw, generator=torch.Generator().manual_seed(0)).images
    assert seen["transformer"] == seen["block"] == 6
    seen.update(transformer=0, block=0)
    sdsv.enable(pipe, policy=sdsv.FixedInterval(6, every=2))
    out = pipe(**kw, generator=torch.Generator().manual_seed(0)).images
    st = pipe.sdsv_stats
    sdsv.disable(pipe)
    assert st.draft_calls > 0 and seen["transformer"] == st.target_calls + st.draft_calls
    assert seen["block"] == st.target_calls
    assert seen["sdsv"] == {"sdsv_forecast_block", "sdsv_norm_out"} and seen["caches"] == []
    for module in pipe.transformer.modules():
        assert list(getattr(module.__dict__.get("_diffusers_hook"), "hooks", {})) in ([], ["count"])
    assert out.shape == ref.shape and torch.isfinite(out).all()
    torch.testing.assert_close(pipe(**kw, generator=torch.Generator().manual_seed(0)).images, ref, rtol=0, atol=0)
