"""SDSV on tiny random-weight instances of the real diffusers Flux, Wan2.1 and SD3 pipelines."""

from __future__ import annotations

import inspect

import pytest
import torch

pytest.importorskip("diffusers")

import sdsv  # noqa: E402
from sdsv import AcceptanceTest, StagePlan  # noqa: E402
from sdsv.integrations.hf_diffusers import RefusedError  # noqa: E402
from tiny_pipelines import CASES  # noqa: E402

STEPS = 6
SPEC_PLAN = StagePlan(STEPS, 1, 3, 1, 2, name="test")  # 1 target step, K=1 windows, then K=2 windows
FAMILIES = ["flux", "wan", "sd3"]
SMALLER_DRAFT = {"flux": {"num_single_layers": 0}, "wan": {"num_layers": 1}, "sd3": {"num_layers": 1}}


@pytest.fixture(scope="module", params=FAMILIES)
def case(request):
    c = CASES[request.param]
    return c, c.build()


def _run(case, pipe, output_type="latent", **kw):
    c = case
    out = pipe(**kw, output_type=output_type, generator=torch.Generator().manual_seed(0))
    return getattr(out, c.output_field)


def _close(a, b, tol=1e-5):
    a, b = torch.as_tensor(a), torch.as_tensor(b)
    assert a.shape == b.shape
    err = (a.float() - b.float()).abs().max().item()
    scale = b.float().abs().max().item()
    assert err <= tol * max(1.0, scale), f"max abs error {err:.3g} (scale {scale:.3g})"


def _reference(pipe, c, output_type, **kw):
    assert not sdsv.integrations.hf_diffusers.is_enabled(pipe)
    return _run(c, pipe, output_type, **kw)


@pytest.mark.parametrize("batch,cfg", [pytest.param(1, False, id="B1-noCFG"), pytest.param(2, True, id="B2-CFG")])
def test_target_only_equals_pipeline(case, batch, cfg):
    c, pipe = case
    kw = c.kwargs(batch=batch, cfg=cfg, steps=STEPS)
    output_type = "latent" if cfg else "np"  # both output paths: raw latents and the decoded result
    ref = _reference(pipe, c, output_type, **kw)
    sdsv.enable(pipe, policy=StagePlan.target_only)
    try:
        out = _run(c, pipe, output_type, **kw)
        st = pipe.sdsv_stats
    finally:
        sdsv.disable(pipe)
    assert type(out) is type(ref)
    _close(out, ref)
    assert st.target_calls == STEPS and st.target_evals == STEPS * batch and st.draft_calls == 0


@pytest.mark.parametrize("verify", ["endpoints", "full"])
def test_draft_equal_to_target_accepts_every_window(case, verify):
    c, pipe = case
    kw = c.kwargs(batch=2, cfg=True, steps=STEPS)
    ref = _reference(pipe, c, "latent", **kw)
    sdsv.enable(pipe, draft=pipe.transformer, policy=SPEC_PLAN, verify=verify, accept=AcceptanceTest("x0_rms", 1e-4))
    try:
        out = _run(c, pipe, "latent", **kw)
        st = pipe.sdsv_stats
    finally:
        sdsv.disable(pipe)
    assert len(st.windows) > 0 and st.acceptance_rate == 1.0
    assert {w.sample for w in st.windows} == {0, 1}
    # fewer target calls than steps: the windows really ran
    assert st.target_calls < STEPS
    _close(out, ref, tol=1e-4)


def test_disagreeing_draft_rejected_everywhere_gives_target_trajectory(case):
    """tau = 0 rejects every window: each then ends with the target step from its start, so the
    result is the target-only result although a different (random) draft proposed every window."""
    c, pipe = case
    kw = c.kwargs(batch=2, cfg=False, steps=STEPS)
    ref = _reference(pipe, c, "latent", **kw)
    other = c.transformer(seed=123, **SMALLER_DRAFT[c.name])  # pruned: fewer blocks, other weights
    sdsv.enable(pipe, draft=other, policy=SPEC_PLAN, accept=AcceptanceTest("x0_rms", 0.0))
    try:
        out = _run(c, pipe, "latent", **kw)
        st = pipe.sdsv_stats
    finally:
        sdsv.disable(pipe)
    assert len(st.windows) > 0 and st.accepted_steps == 0
    assert all(v > 0 for w in st.windows for v in w.metric[:1])
    _close(out, ref, tol=1e-4)


def test_draft_only_differs_from_target_with_another_draft(case):
    """The draft really is used: draft-only sampling with different weights changes the output."""
    c, pipe = case
    kw = c.kwargs(batch=1, cfg=False, steps=STEPS)
    ref = _reference(pipe, c, "latent", **kw)
    sdsv.enable(pipe, draft=c.transformer(seed=123), policy=StagePlan.draft_only)
    try:
        out = _run(c, pipe, "latent", **kw)
        st = pipe.sdsv_stats
    finally:
        sdsv.disable(pipe)
    assert st.target_calls == 0 and st.draft_calls == STEPS
    assert (out - ref).abs().max() > 1e-2


def test_disable_restores_the_pipeline_exactly(case):
    c, pipe = case
    kw = c.kwargs(batch=1, cfg=False, steps=STEPS)
    _run(c, pipe, "latent", **kw)  # a plain call first: it sets the pipeline's per-call attributes
    cls, attrs, config = type(pipe), dict(pipe.__dict__), dict(pipe.config)
    sig = inspect.signature(pipe.__call__)
    sdsv.enable(pipe, draft=pipe.transformer)
    assert inspect.signature(pipe.__call__) == sig
    assert type(pipe).__name__ == cls.__name__ and isinstance(pipe, cls)
    sdsv.disable(pipe)
    assert type(pipe) is cls and pipe.__dict__ == attrs  # enable + disable: nothing changed

    sdsv.enable(pipe, draft=pipe.transformer)
    _run(c, pipe, "latent", **kw)
    assert isinstance(pipe.sdsv_stats, sdsv.SampleStats)
    sdsv.disable(pipe)
    assert type(pipe) is cls and pipe.__dict__.keys() == attrs.keys()
    for name in pipe.components:  # the same module, scheduler and VAE objects, nothing hooked
        assert getattr(pipe, name) is attrs[name]
    assert pipe._progress_bar_config == attrs["_progress_bar_config"]
    assert dict(pipe.config) == config
    assert "forward" not in pipe.transformer.__dict__ and "step" not in pipe.scheduler.__dict__
    _close(_run(c, pipe, "latent", **kw), _run(c, pipe, "latent", **kw))


def test_the_pipeline_finishes_its_own_call(case, monkeypatch):
    """sdsv samples inside the pipeline's first scheduler step; the pipeline's loop then skips its
    remaining steps (no transformer call besides the sampler's) and the pipeline decodes the
    result itself, once, with its own VAE."""
    c, pipe = case
    kw = c.kwargs(batch=2, cfg=True, steps=STEPS)
    ref = _reference(pipe, c, "np", **kw)
    forwards, decodes = [], []
    real_forward, real_decode = type(pipe.transformer).forward, type(pipe.vae).decode
    monkeypatch.setattr(type(pipe.transformer), "forward", lambda self, *a, **k: forwards.append(1) or
                        real_forward(self, *a, **k))
    monkeypatch.setattr(type(pipe.vae), "decode", lambda self, *a, **k: decodes.append(1) or real_decode(self, *a, **k))
    sdsv.enable(pipe, policy=StagePlan.target_only)
    try:
        out = _run(c, pipe, "np", **kw)
        st = pipe.sdsv_stats
    finally:
        sdsv.disable(pipe)
    assert len(forwards) == st.target_calls == STEPS and len(decodes) == 1
    assert pipe.interrupt is False  # as after any call of the pipeline
    _close(out, ref)


def test_return_dict_false_and_default_plan(case):
    c, pipe = case
    kw = c.kwargs(batch=1, cfg=False, steps=STEPS)
    sdsv.enable(pipe, draft=pipe.transformer)  # plan: StagePlan.paper_default(num_inference_steps)
    try:
        out = pipe(**kw, output_type="latent", return_dict=False, generator=torch.Generator().manual_seed(0))
        assert isinstance(out, tuple) and len(out) == 1
        assert pipe.sdsv_stats.target_calls + pipe.sdsv_stats.draft_calls > 0
    finally:
        sdsv.disable(pipe)


# ---- refusals -------------------------------------------------------------------------------
MISMATCH = {
    "flux": ({"joint_attention_dim": 24}, "joint_attention_dim: target 32, draft 24"),
    "wan": ({"in_channels": 8, "out_channels": 8}, "in_channels: target 16, draft 8"),
    "sd3": ({"pooled_projection_dim": 48}, "pooled_projection_dim: target 64, draft 48"),
}


def test_mismatched_draft_is_refused(case):
    c, pipe = case
    over, msg = MISMATCH[c.name]
    with pytest.raises(RefusedError, match=msg):
        sdsv.enable(pipe, draft=c.transformer(**over))
    assert type(pipe).__name__ == type(pipe).__name__ and not sdsv.integrations.hf_diffusers.is_enabled(pipe)


def test_draft_of_another_family_is_refused():
    pipe = CASES["flux"].build()
    with pytest.raises(RefusedError, match="draft is a WanTransformer3DModel.*needs a FluxTransformer2DModel"):
        sdsv.enable(pipe, draft=CASES["wan"].transformer())


def test_flux_guidance_embedding_mismatch_is_refused():
    pipe = CASES["flux"].build()
    with pytest.raises(RefusedError, match="guidance_embeds: target True, draft False"):
        sdsv.enable(pipe, draft=CASES["flux"].transformer(guidance_embeds=False))


def test_non_flow_matching_scheduler_is_refused(case):
    from diffusers import DDIMScheduler
    c, _ = case
    pipe = c.build()
    pipe.scheduler = DDIMScheduler()
    with pytest.raises(RefusedError, match="DDIMScheduler is not a flow-matching Euler scheduler"):
        sdsv.enable(pipe, draft=pipe.transformer)


def test_unipc_without_a_rule_refused_unless_converted_then_equals_euler_with_same_shift():
    """A UniPC configuration the sampler has no rule for (third order here) is refused unless
    converted; converted, SDSV samples with Euler on the same shifted schedule."""
    from diffusers import FlowMatchEulerDiscreteScheduler, UniPCMultistepScheduler
    c = CASES["wan"]
    pipe = c.build()
    kw = c.kwargs(batch=1, cfg=True, steps=STEPS)
    unipc = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0,
                                    solver_order=3)
    pipe.scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0)
    ref = _run(c, pipe, "latent", **kw)
    pipe.scheduler = unipc
    with pytest.raises(RefusedError, match="UniPCMultistepScheduler is a multistep solver.*configuration is not one "
                                           "of the sampler's step rules.*convert_scheduler=True"):
        sdsv.enable(pipe, draft=pipe.transformer)
    sdsv.enable(pipe, policy=StagePlan.target_only, convert_scheduler=True)
    try:
        out = _run(c, pipe, "latent", **kw)
    finally:
        sdsv.disable(pipe)
    assert pipe.scheduler is unipc  # converted for the call only
    _close(out, ref)


def test_stochastic_euler_is_refused():
    from diffusers import FlowMatchEulerDiscreteScheduler
    pipe = CASES["sd3"].build()
    pipe.scheduler = FlowMatchEulerDiscreteScheduler(stochastic_sampling=True)
    with pytest.raises(RefusedError, match="stochastic_sampling"):
        sdsv.enable(pipe)


def test_callback_and_skip_layer_guidance_are_refused():
    c = CASES["sd3"]
    pipe = c.build()
    sdsv.enable(pipe, policy=StagePlan.target_only)
    try:
        with pytest.raises(RefusedError, match="callback_on_step_end"):
            pipe(**c.kwargs(), callback_on_step_end=lambda p, i, t, kw: kw)
        with pytest.raises(RefusedError, match="skip_guidance_layers"):
            pipe(**c.kwargs(cfg=True), skip_guidance_layers=[0])
        assert "forward" not in pipe.transformer.__dict__  # nothing left hooked after a refusal
    finally:
        sdsv.disable(pipe)


def test_plan_with_wrong_step_count_is_refused():
    c = CASES["sd3"]
    pipe = c.build()
    sdsv.enable(pipe, draft=pipe.transformer, policy=StagePlan.paper_default(50))
    try:
        with pytest.raises(ValueError, match="has 50 steps but the pipeline runs 6"):
            pipe(**c.kwargs(steps=6))
        assert "forward" not in pipe.transformer.__dict__ and "step" not in pipe.scheduler.__dict__
    finally:
        sdsv.disable(pipe)


def test_progress_bar_follows_pipeline_config(capsys):
    c = CASES["sd3"]
    pipe = c.build()  # built with set_progress_bar_config(disable=True)
    sdsv.enable(pipe, draft=pipe.transformer, policy=SPEC_PLAN)
    try:
        pipe(**c.kwargs(steps=STEPS))
        assert "sdsv" not in capsys.readouterr().err
        pipe.set_progress_bar_config(desc="denoise", leave=True)
        pipe(**c.kwargs(steps=STEPS))
        err = capsys.readouterr().err
        assert "denoise" in err and "accept=100%" in err and f"{STEPS}/{STEPS}" in err
    finally:
        sdsv.disable(pipe)


def test_bf16_target_only_close_to_pipeline_same_dtype(case):
    """bf16: same output dtype as the pipeline; values within a few bf16 roundings (the scheduler
    multiplies dt * v in bf16, the sampler's Euler step is computed in fp32)."""
    c, _ = case
    pipe = c.build().to(torch.bfloat16)
    kw = {k: (v.to(torch.bfloat16) if torch.is_tensor(v) else v) for k, v in c.kwargs(batch=2, cfg=True).items()}
    ref = _run(c, pipe, "latent", **kw)
    sdsv.enable(pipe, policy=StagePlan.target_only)
    try:
        out = _run(c, pipe, "latent", **kw)
    finally:
        sdsv.disable(pipe)
    assert out.dtype == ref.dtype == torch.bfloat16
    _close(out, ref, tol=0.02)


def test_num_images_per_prompt_and_expanded_conditioning():
    """num_images_per_prompt multiplies the batch in the pipeline's preamble; rows of one sample
    reach the model as expand views of its conditioning (stride 0), not copies."""
    c = CASES["flux"]
    pipe = c.build()
    kw = c.kwargs(batch=1, cfg=False, steps=STEPS)
    ref = _run(c, pipe, "latent", num_images_per_prompt=2, **kw)
    seen = []
    real_forward = type(pipe.transformer).forward

    def spy(self, *a, **k):
        seen.append((k["hidden_states"].shape[0], k["encoder_hidden_states"].stride(0)))
        return real_forward(self, *a, **k)

    draft = c.transformer(seed=0)  # same weights as the target, another module: spied separately
    draft.forward = spy.__get__(draft)
    sdsv.enable(pipe, draft=draft, policy=SPEC_PLAN, accept=AcceptanceTest("x0_rms", 1e-4))
    try:
        out = _run(c, pipe, "latent", num_images_per_prompt=2, **kw)
        st = pipe.sdsv_stats
    finally:
        sdsv.disable(pipe)
    _close(out, ref, tol=1e-4)
    assert st.acceptance_rate == 1.0 and {w.sample for w in st.windows} == {0, 1}
    assert seen and all(rows == 2 for rows, _ in seen)  # the two images' rollouts share each draft call
    assert out.shape[0] == 2


def test_single_sample_rows_are_expand_views():
    c = CASES["wan"]
    pipe = c.build()
    kw = c.kwargs(batch=1, cfg=False, steps=STEPS)
    seen = []
    real_forward = type(pipe.transformer).forward

    def spy(self, *a, **k):
        seen.append((k["hidden_states"].shape[0], k["encoder_hidden_states"].stride(0)))
        return real_forward(self, *a, **k)

    pipe.transformer.forward = spy.__get__(pipe.transformer)
    sdsv.enable(pipe, draft=c.transformer(seed=0), policy=SPEC_PLAN, accept=AcceptanceTest("x0_rms", 1e-4))
    try:
        _run(c, pipe, "latent", **kw)
    finally:
        sdsv.disable(pipe)
        del pipe.transformer.forward
    multi = [stride for rows, stride in seen if rows > 1]
    assert multi and all(stride == 0 for stride in multi)  # verification rows [y_0, y_k]: expanded


def test_other_pipeline_classes_are_refused():
    from diffusers import FluxImg2ImgPipeline
    pipe = FluxImg2ImgPipeline(**CASES["flux"].build().components)
    with pytest.raises(RefusedError, match="SDSV supports FluxPipeline, WanPipeline, StableDiffusion3Pipeline.*"
                                           "got a FluxImg2ImgPipeline"):
        sdsv.enable(pipe)


def test_step_cache_is_refused():
    from diffusers import FirstBlockCacheConfig
    c = CASES["flux"]
    pipe = c.build()
    pipe.transformer.enable_cache(FirstBlockCacheConfig(threshold=0.2))
    with pytest.raises(RefusedError, match="pipe.transformer has another step cache attached: diffusers FirstBlockCache"):
        sdsv.enable(pipe)
    pipe.transformer.disable_cache()
    draft = c.transformer(seed=1)
    draft.enable_cache(FirstBlockCacheConfig(threshold=0.2))
    with pytest.raises(RefusedError, match="the draft has another step cache attached"):
        sdsv.enable(pipe, draft=draft)


@pytest.mark.parametrize("name", ["sd3", "flux"])
def test_batch_of_two_equals_two_single_runs_with_partial_acceptance(name):
    """Samples advance independently: with a draft that disagrees a little, the two samples of a
    batch reach different steps, their rows share forward calls at different sigmas, and each
    sample's result equals its run alone (same noise, same prompt)."""
    c = CASES[name]
    pipe = c.build()
    kw = c.kwargs(batch=2, cfg=True, steps=8)
    noise = _run(c, pipe, "latent", **{**kw, "num_inference_steps": 1}) * 0  # shape only
    noise = torch.randn(noise.shape, generator=torch.Generator().manual_seed(5))
    draft = c.transformer(seed=0)
    with torch.no_grad():  # the target's weights, slightly perturbed: a close but imperfect draft
        for p in draft.parameters():
            p.add_(0.05 * p.std().nan_to_num() * torch.randn(p.shape, generator=torch.Generator().manual_seed(9)))
    plan = StagePlan(8, 1, 3, 1, 3, name="test")

    def single(i, tau):
        one = {k: (v[i:i + 1] if torch.is_tensor(v) else v) for k, v in kw.items()}
        sdsv.enable(pipe, draft=draft, policy=plan, verify="full", accept=AcceptanceTest("x0_rms", tau))
        try:
            out = _run(c, pipe, "latent", latents=noise[i:i + 1], **one)
            return out, pipe.sdsv_stats
        finally:
            sdsv.disable(pipe)

    # pick tau in the widest gap of the observed metric values, far from every decision
    values = sorted(v for i in (0, 1) for w in single(i, 1e9)[1].windows for v in w.metric if v == v)
    gaps = [(b - a, (a * b) ** 0.5) for a, b in zip(values, values[1:]) if a > 0]
    tau = max(gaps)[1]
    (o0, s0), (o1, s1) = single(0, tau), single(1, tau)
    sdsv.enable(pipe, draft=draft, policy=plan, verify="full", accept=AcceptanceTest("x0_rms", tau))
    try:
        both = _run(c, pipe, "latent", latents=noise, **kw)
        st = pipe.sdsv_stats
    finally:
        sdsv.disable(pipe)
    assert 0 < st.acceptance_rate < 1  # some windows partly rejected
    for i, si in ((0, s0), (1, s1)):
        mine = [(w.start, w.k, w.accepted) for w in st.windows if w.sample == i]
        assert mine == [(w.start, w.k, w.accepted) for w in si.windows]
    assert [(w.start, w.accepted) for w in s0.windows] != [(w.start, w.accepted) for w in s1.windows]
    _close(both[0:1], o0, tol=1e-4)
    _close(both[1:2], o1, tol=1e-4)


def test_timestep_convention_self_check(monkeypatch):
    """If the adapter's sigma -> timestep rule ever disagreed with what the pipeline passes (a
    diffusers change), the call is refused instead of sampling with wrong timesteps."""
    from sdsv.integrations.hf_diffusers import TransformerDenoiser
    c = CASES["wan"]
    pipe = c.build()
    monkeypatch.setattr(TransformerDenoiser, "timestep", lambda self, sigma, x: sigma.float() * 999)
    sdsv.enable(pipe, policy=StagePlan.target_only)
    try:
        with pytest.raises(RefusedError, match="timestep convention differs"):
            pipe(**c.kwargs(steps=STEPS))
    finally:
        sdsv.disable(pipe)


def _wan_multistep(pipe, kind="dpm"):
    """The tiny Wan pipeline with a multistep flow scheduler: UniPC as the Wan2.1 checkpoints ship
    it, or DPM-Solver++(2M)."""
    from diffusers import DPMSolverMultistepScheduler, UniPCMultistepScheduler
    if kind == "unipc":
        pipe.scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0)
    else:
        pipe.scheduler = DPMSolverMultistepScheduler(algorithm_type="dpmsolver++", solver_order=2,
                                                     prediction_type="flow_prediction", use_flow_sigmas=True,
                                                     flow_shift=3.0)
    return pipe


@pytest.mark.parametrize("kind", ["unipc", "dpm"])
@pytest.mark.parametrize("cfg", [False, True], ids=["no-cfg", "cfg"])
def test_wan_with_its_multistep_solver_reproduces_the_pipeline_when_every_window_is_rejected(cfg, kind):
    """No convert_scheduler: the sampler runs the scheduler's own rule (UniPC, DPM-Solver++(2M)),
    the model sees the scheduler's integer timesteps; target-only and all-rejected windows give the
    pipeline's output."""
    c = CASES["wan"]
    pipe = _wan_multistep(c.build(), kind)
    kw = c.kwargs(batch=1, cfg=cfg, steps=STEPS)
    ref = _run(c, pipe, "latent", **kw)
    draft = c.transformer(seed=1, **SMALLER_DRAFT["wan"])
    for plan, accept in ((StagePlan.target_only, None), (SPEC_PLAN, AcceptanceTest("rel_l2", 0.0))):
        sdsv.enable(pipe, draft=draft, policy=plan, accept=accept)
        try:
            out = _run(c, pipe, "latent", **kw)
            stats = pipe.sdsv_stats
        finally:
            sdsv.disable(pipe)
        assert stats.target_calls == STEPS
        _close(out, ref)
    assert stats.windows and all(w.accepted == 0 for w in stats.windows)


@pytest.mark.parametrize("kind", ["unipc", "dpm"])
def test_wan_multistep_with_draft_equal_to_target_accepts_every_window(kind):
    c = CASES["wan"]
    pipe = _wan_multistep(c.build(), kind)
    kw = c.kwargs(batch=2, cfg=True, steps=STEPS)
    ref = _run(c, pipe, "latent", **kw)
    sdsv.enable(pipe, draft=pipe.transformer, policy=SPEC_PLAN, accept=AcceptanceTest("rel_l2", 1e-3))
    try:
        out = _run(c, pipe, "latent", **kw)
        stats = pipe.sdsv_stats
    finally:
        sdsv.disable(pipe)
    assert stats.windows and all(w.accepted == w.k for w in stats.windows) and stats.target_calls < STEPS
    _close(out, ref, tol=1e-4)


def test_dpm_solver_configurations_without_a_rule_are_refused():
    from diffusers import DPMSolverMultistepScheduler
    c = CASES["wan"]
    pipe = c.build()
    pipe.scheduler = DPMSolverMultistepScheduler(algorithm_type="dpmsolver++", solver_order=3,
                                                 prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0)
    with pytest.raises(RefusedError, match="this DPMSolverMultistepScheduler configuration is not one of the sampler"):
        sdsv.enable(pipe, draft=pipe.transformer)


def test_the_accurate_intent_steps_unipc_closer_to_the_exact_sample():
    """``intent="accurate"`` on a pipeline whose scheduler is Euler: the sampler steps
    UniPC over the same sigmas, so with the target alone at few steps it lands closer
    to a fine (8x the steps) solution than the pipeline's own Euler steps do. On Flux: the random
    Wan and SD3 transformers give velocity fields too rough for a second order to show below ~48
    steps (measured: at 6 / 12 / 24 / 48 steps Euler is closer on both until 48)."""
    c = CASES["flux"]
    pipe = c.build()
    fine = _run(c, pipe, "latent", **c.kwargs(batch=1, cfg=False, steps=8 * STEPS))
    euler = _run(c, pipe, "latent", **c.kwargs(batch=1, cfg=False, steps=STEPS))
    sdsv.enable(pipe, intent="accurate", policy=StagePlan.target_only)
    try:
        accurate = _run(c, pipe, "latent", **c.kwargs(batch=1, cfg=False, steps=STEPS))
    finally:
        sdsv.disable(pipe)
    err = lambda a: (torch.as_tensor(a).float() - torch.as_tensor(fine).float()).norm().item()  # noqa: E731
    assert err(accurate) < 0.8 * err(euler)


def test_the_accurate_intent_is_only_a_default_and_faithful_keeps_the_schedulers_rule():
    from sdsv import ErrorControlled
    c = CASES["wan"]
    pipe = _wan_multistep(c.build(), "unipc")  # the scheduler's own rule is the accurate intent's (UniPC) already
    kw = c.kwargs(batch=2, cfg=True, steps=STEPS)
    outs = {}
    # the accurate intent is its windows and the line forecast; no intent named is the faithful one's forecast
    for label, options in (("intent", dict(intent="accurate")), ("policy", dict(policy=ErrorControlled.accurate, forecast_order=1)),
                           ("damped", dict(policy=ErrorControlled.accurate))):
        sdsv.enable(pipe, **options)
        try:
            outs[label] = _run(c, pipe, "latent", **kw)
            stats = pipe.sdsv_stats
        finally:
            sdsv.disable(pipe)
    assert torch.equal(outs["intent"], outs["policy"]) and not torch.equal(outs["intent"], outs["damped"])
    assert stats.windows and max(w.k for w in stats.windows) <= 2
    with pytest.raises(ValueError, match="intent must be one of 'faithful', 'accurate', got 'exact'"):
        sdsv.enable(pipe, intent="exact")
    assert not sdsv.integrations.hf_diffusers.is_enabled(pipe)
