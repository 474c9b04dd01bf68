"""``sdsv.enable(pipe)`` with no draft: the forecast self-draft on tiny random-weight Flux, Wan
and SD3 pipelines (the real diffusers classes)."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("diffusers")

import sdsv  # noqa: E402
from sdsv import AcceptanceTest, ErrorControlled, FixedInterval, StagePlan  # noqa: E402
from sdsv.forecast import DAMPED, NewtonForecast  # noqa: E402
from sdsv.integrations.hf_diffusers import RefusedError  # noqa: E402
from sdsv.integrations.hf_diffusers.families import family_of  # noqa: E402

from tiny_pipelines import CASES  # noqa: E402

STEPS = 8
SPEC_PLAN = StagePlan(STEPS, 2, 4, 1, 2, name="test")  # 2 target steps, K=1 windows, then K=2 windows
FAMILIES = ["flux", "wan", "sd3"]


@pytest.fixture(scope="module", params=FAMILIES)
def case(request):
    c = CASES[request.param]
    return c, c.build()


def _run(c, pipe, **kw):
    out = pipe(**kw, output_type="latent", generator=torch.Generator().manual_seed(0))
    return getattr(out, c.output_field)


def _enabled_run(c, pipe, kw, **enable):
    sdsv.enable(pipe, **enable)
    try:
        return _run(c, pipe, **kw), pipe.sdsv_stats
    finally:
        sdsv.disable(pipe)


def _blocks(pipe):
    fam = family_of(pipe)
    return sum(len(getattr(pipe.transformer, name)) for name in fam.block_stacks)


def _close(a, b, tol):
    err = (a.float() - b.float()).abs().max().item()
    scale = b.float().abs().max().item()
    assert err <= tol * max(1.0, scale), f"max abs error {err:.3g} (scale {scale:.3g})"


@pytest.mark.parametrize("batch,cfg", [(1, False), (2, True), (2, False)], ids=["B1", "B2-CFG", "B2"])
def test_enable_without_a_draft_forecasts_and_saves_target_calls(case, batch, cfg):
    c, pipe = case
    kw = c.kwargs(batch=batch, cfg=cfg, steps=STEPS)
    ref = _run(c, pipe, **kw)
    out, st = _enabled_run(c, pipe, kw)  # draft defaults to the self-draft, plan to ErrorControlled
    assert st.unverified_windows > 0 and st.draft_evals > 0
    assert st.target_calls < STEPS
    assert torch.isfinite(out).all() and out.shape == ref.shape
    rel = ((out.float() - ref.float()).norm() / ref.float().norm()).item()
    assert rel < 0.5  # random weights: the forecast is rough, but the sample is the pipeline's, not noise


@pytest.mark.parametrize("verify", ["endpoints", "full"])
def test_impossible_threshold_reproduces_the_pipeline(case, verify):
    c, pipe = case
    kw = c.kwargs(batch=2, cfg=True, steps=STEPS)
    ref = _run(c, pipe, **kw)
    out, st = _enabled_run(c, pipe, kw, draft="self", policy=SPEC_PLAN, verify=verify,
                           accept=AcceptanceTest("rel_l2", 0.0))
    assert st.windows and all(w.accepted == 0 for w in st.windows)
    assert st.target_calls == STEPS
    _close(out, ref, 1e-5)


def test_a_self_draft_that_forecasts_nothing_is_the_target(case):
    """head_blocks = every block: the draft computes the whole model, accepts every window and
    reproduces the pipeline's output."""
    c, pipe = case
    kw = c.kwargs(batch=2, cfg=True, steps=STEPS)
    ref = _run(c, pipe, **kw)
    out, st = _enabled_run(c, pipe, kw, policy=SPEC_PLAN, head_blocks=_blocks(pipe),
                           accept=AcceptanceTest("x0_rms", 1e-4))
    assert st.windows and st.acceptance_rate == 1.0 and st.target_calls < STEPS
    _close(out, ref, 1e-4)


@pytest.mark.parametrize("plan", [FixedInterval(STEPS, every=2), ErrorControlled(STEPS, tol=0.3, k_min=1, k_init=1),
                                  SPEC_PLAN], ids=["cache", "error-controlled", "sdsv"])
def test_every_schedule_and_forecast_order_runs(plan):
    c = CASES["wan"]
    pipe = c.build()
    kw = c.kwargs(batch=1, cfg=True, steps=STEPS)
    for order in (0, 1, 2):
        out, st = _enabled_run(c, pipe, kw, policy=plan, forecast_order=order, head_blocks=1)
        assert torch.isfinite(out).all() and st.draft_evals > 0
        # the same forecast given as an object draws the same images
        again, _ = _enabled_run(c, pipe, kw, policy=plan, forecast=NewtonForecast.of_order(order), head_blocks=1)
        assert torch.equal(out, again)
    damped, st = _enabled_run(c, pipe, kw, policy=plan, forecast=DAMPED, head_blocks=1)
    assert torch.isfinite(damped).all() and st.draft_evals > 0 and not torch.equal(damped, out)


def test_disable_leaves_no_hook_no_swapped_block_and_no_cached_tensor():
    import gc
    import weakref

    c = CASES["flux"]
    pipe = c.build()
    tr = pipe.transformer
    lists = {name: tr._modules[name] for name in family_of(pipe).block_stacks}
    kw = c.kwargs(batch=1, cfg=False, steps=STEPS)
    captured = []
    from diffusers.hooks import HookRegistry
    from sdsv.integrations.hf_diffusers.registry import CAPTURE_HOOK
    orig = HookRegistry.register_hook

    def spy(self, hook, name):  # keep a weak reference to whatever the self-draft's hooks saw
        if name.startswith("sdsv_") and name != CAPTURE_HOOK:
            real = hook.pre_forward

            def pre_forward(module, *args, **kwargs):
                for x in (*args, *kwargs.values()):
                    if isinstance(x, torch.Tensor):
                        captured.append(weakref.ref(x))
                return real(module, *args, **kwargs)
            hook.pre_forward = pre_forward
        return orig(self, hook, name)

    HookRegistry.register_hook = spy
    try:
        _enabled_run(c, pipe, kw, policy=FixedInterval(STEPS, every=2))
    finally:
        HookRegistry.register_hook = orig
    assert type(pipe).__name__ == "FluxPipeline" and not sdsv.integrations.hf_diffusers.is_enabled(pipe)
    assert all(tr._modules[name] is mods for name, mods in lists.items())
    assert all(not m._forward_pre_hooks and not m._forward_hooks for m in tr.modules())
    # the hooks went through diffusers' registries: none left, no module's forward or registry left behind
    assert all("forward" not in m.__dict__ and not getattr(m.__dict__.get("_diffusers_hook"), "hooks", None)
               for m in tr.modules())
    gc.collect()
    assert captured and all(r() is None for r in captured), "a tensor the self-draft saw is still referenced"


def test_the_self_drafts_hooks_live_from_enable_to_disable():
    """The split's hooks are registered once, by enable (again with the same transformer: kept),
    and are the same objects in every call, so a compiled model's graphs stay valid from call to
    call; disable removes them, each module's forward and registry as before."""
    c = CASES["wan"]
    pipe = c.build()
    block, norm_out = pipe.transformer.blocks[-1], pipe.transformer.norm_out
    kw = c.kwargs(batch=1, cfg=False, steps=STEPS)
    sdsv.enable(pipe)
    hooked = block.forward, norm_out.forward
    assert all(f is not None for f in hooked) and "forward" in block.__dict__
    _run(c, pipe, **kw)
    sdsv.enable(pipe, policy=FixedInterval(STEPS, every=2))  # new settings, same split
    _run(c, pipe, **kw)
    assert (block.forward, norm_out.forward) == hooked and pipe.sdsv_stats.draft_evals > 0
    sdsv.disable(pipe)
    assert all("forward" not in m.__dict__ and "_diffusers_hook" not in m.__dict__ for m in (block, norm_out))


def test_unknown_block_layout_and_step_caches_are_refused():
    from diffusers import FirstBlockCacheConfig
    c = CASES["sd3"]
    pipe = c.build()
    blocks = pipe.transformer.transformer_blocks
    pipe.transformer.transformer_blocks = torch.nn.Sequential(*blocks)
    try:
        with pytest.raises(RefusedError, match="no block list 'transformer_blocks'.*pass a draft transformer"):
            sdsv.enable(pipe)
    finally:
        pipe.transformer.transformer_blocks = blocks
    flux = CASES["flux"].build()
    flux.transformer.enable_cache(FirstBlockCacheConfig(threshold=0.2))
    try:
        with pytest.raises(RefusedError, match="step cache"):
            sdsv.enable(flux)
    finally:
        flux.transformer.disable_cache()
    with pytest.raises(ValueError, match="head_blocks must be in"):
        sdsv.enable(pipe, head_blocks=99)
    with pytest.raises(ValueError, match="draft must be a transformer or 'self'"):
        sdsv.enable(pipe, draft="lite")
    with pytest.raises(ValueError, match="forecast_order must be 0, 1 or 2"):
        sdsv.enable(pipe, forecast_order=3)
    with pytest.raises(ValueError, match="not both"):
        sdsv.enable(pipe, forecast_order=1, forecast=DAMPED)
    with pytest.raises(TypeError, match="NewtonForecast"):
        sdsv.enable(pipe, forecast=(0.85, 0.3))
    with pytest.raises(ValueError, match="a draft transformer has none"):
        sdsv.enable(pipe, draft=pipe.transformer, forecast=DAMPED)
    with pytest.raises(ValueError, match="needs draft='self'"):
        sdsv.enable(pipe, draft=pipe.transformer, policy=sdsv.ErrorControlled(8, correct=True))


def test_whole_model_compile_is_refused_unless_dynamo_guards_hooks():
    # nothing is compiled here: compile() only marks the module, the refusal comes before any call
    c = CASES["flux"]
    pipe = c.build()
    pipe.transformer.compile()
    with pytest.raises(RefusedError, match="compile_repeated_blocks"):
        sdsv.enable(pipe)
    sdsv.enable(pipe, draft=c.build().transformer)  # a draft transformer adds no hooks to the target
    sdsv.disable(pipe)
    wrapped = c.build()
    wrapped.transformer = torch.compile(wrapped.transformer)
    with pytest.raises(RefusedError, match="skip_nnmodule_hook_guards"):
        sdsv.enable(wrapped)
    from sdsv.integrations.hf_diffusers.hook import is_enabled
    with torch._dynamo.config.patch(skip_nnmodule_hook_guards=False):
        assert is_enabled(sdsv.enable(pipe))
    sdsv.disable(pipe)


def test_enable_checks_the_settings_and_splits_the_transformer_once(monkeypatch):
    """The options are checked at enable, not again at every call; the split is made at enable
    and reused by every call, and made again only for a transformer replaced since."""
    from sdsv import sampler
    from sdsv.integrations.hf_diffusers import hook, split

    counts = {"checks": 0, "splits": 0}
    real_check, real_init = sampler.check_options, split.TransformerSplit.__init__

    def check(*a, **k):
        counts["checks"] += 1
        return real_check(*a, **k)

    def init(self, *a, **k):
        counts["splits"] += 1
        real_init(self, *a, **k)

    monkeypatch.setattr(sampler, "check_options", check)
    monkeypatch.setattr(hook, "check_options", check)
    monkeypatch.setattr(split.TransformerSplit, "__init__", init)
    c = CASES["flux"]
    pipe = c.build()
    kw = c.kwargs(batch=1, cfg=False, steps=STEPS)
    sdsv.enable(pipe)
    try:
        first, second = _run(c, pipe, **kw), _run(c, pipe, **kw)
        assert torch.equal(first, second) and pipe.sdsv_stats.draft_evals > 0
        assert counts == {"checks": 1, "splits": 1}
        pipe.transformer = c.build().transformer  # another transformer: split again, at its first call
        _run(c, pipe, **kw)
        _run(c, pipe, **kw)
        assert counts == {"checks": 1, "splits": 2}
    finally:
        sdsv.disable(pipe)


@pytest.mark.parametrize("cfg", [False, True], ids=["noCFG", "CFG"])
def test_the_draft_fed_the_exact_residual_is_the_target(case, cfg, monkeypatch):
    """The split's contract, per family: the draft with the target's own residual as its only
    anchor (coefficients 1, 1) gives the target's velocity; with a zero residual it differs."""
    from sdsv.integrations.hf_diffusers import hook
    c, pipe = case
    captured = {}
    real = hook.sample_checked

    def capture(target, draft, latents, sigmas, plan, **kw):
        captured.update(target=target, latents=latents, sigmas=sigmas,
                        cond={k: v for k, v in kw.items() if k not in ("verify", "accept", "solver", "self_draft",
                                                                    "progress")})
        return real(target, draft, latents, sigmas, plan, **kw)

    monkeypatch.setattr(hook, "sample_checked", capture)
    _enabled_run(c, pipe, c.kwargs(batch=2, cfg=cfg, steps=STEPS), policy=StagePlan.target_only)
    split = family_of(pipe).self_draft_split(pipe.transformer, captured["target"], head_blocks=0)
    x, sigma = captured["latents"], captured["sigmas"][2].expand(2)
    with torch.no_grad():
        v, residual = split.forward_with_residual(x, sigma, **captured["cond"])
        rows = split.model_rows(x, **captured["cond"])
        assert residual.shape[0] == rows == (4 if cfg else 2)
        index = torch.arange(rows)[:, None]
        coeffs = torch.ones(rows, 2)
        v_hat = split.forward_with_forecast(x, sigma, residual, index, coeffs, **captured["cond"])
        v_zero = split.forward_with_forecast(x, sigma, torch.zeros_like(residual), index, coeffs, **captured["cond"])
    torch.testing.assert_close(v_hat, v, atol=1e-5, rtol=1e-5)
    assert (v_zero - v).abs().max() > 1e-3
    assert all(not m._forward_pre_hooks for m in pipe.transformer.modules())


@pytest.mark.parametrize("steps", [1, 2, 3])
def test_default_plan_on_very_short_schedules(steps):
    """The default error-controlled plan keeps its 2 warm-up target steps: 1-2 steps run the
    target alone and equal the pipeline; 3 steps still work."""
    c = CASES["sd3"]
    pipe = c.build()
    kw = c.kwargs(batch=1, cfg=False, steps=steps)
    ref = _run(c, pipe, **kw)
    out, st = _enabled_run(c, pipe, kw)
    assert st.target_calls <= steps
    if steps <= 2:
        _close(out, ref, 1e-5)


def test_calibrate_a_diffusers_pipeline_and_put_its_settings_back():
    from sdsv.calibrate import per_image_psnr
    from sdsv.integrations.hf_diffusers import enabled_config
    from sdsv.integrations.hf_diffusers.random_pipelines import flux_kwargs, flux_pipe
    from sdsv.metrics import percentile

    pipe = flux_pipe(num_layers=1, num_single_layers=4)
    kw = flux_kwargs(batch=2, steps=10)
    images = [{"prompt_embeds": kw["prompt_embeds"][i:i + 1], "pooled_prompt_embeds": kw["pooled_prompt_embeds"][i:i + 1]}
              for i in range(2)]
    call = dict(height=16, width=16, guidance_scale=3.5)
    mine = FixedInterval(10, every=2)
    sdsv.enable(pipe, policy=mine)
    cal = sdsv.calibrate(pipe, images, 0.0, percentile=50, num_steps=10, tols=(0.5, 0.2), seed=3, **call)
    assert enabled_config(pipe).policy is mine  # the user's settings are back
    assert cal.reference_evals == 10 and cal.policy.num_steps == 10 and cal.quantile >= 0.0
    sdsv.disable(pipe)
    ref = torch.cat([pipe(**im, **call, num_inference_steps=10, output_type="pt",
                          generator=torch.Generator().manual_seed(3 + i))[0] for i, im in enumerate(images)])
    sdsv.enable(pipe, policy=cal.policy)
    out = torch.cat([pipe(**im, **call, num_inference_steps=10, output_type="pt",
                          generator=torch.Generator().manual_seed(3 + i))[0] for i, im in enumerate(images)])
    sdsv.disable(pipe)
    assert percentile(per_image_psnr(out, ref).tolist(), 50) == pytest.approx(cal.quantile, abs=1e-3)
    with pytest.raises(TypeError, match="calibrate sets num_inference_steps"):
        sdsv.calibrate(pipe, images, 30.0, num_inference_steps=10)
    default = sdsv.calibrate(pipe, images[:1], 0.0, tols=(0.5,), **call)
    assert default.reference_evals == 28  # FluxPipeline's own default num_inference_steps
