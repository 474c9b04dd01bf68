"""Issue 33: every argument of the public entry points is checked where it enters — a value of the
wrong kind or out of range is a one-line TypeError/ValueError naming the argument, raised before
anything is sampled; values that obviously mean what they say (a range of seeds, numpy ints) work."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import sdsv
from sdsv import ErrorControlled, FixedInterval, StagePlan, calibrate, flow_match_sigmas, sample
from sdsv.calibrate import per_image_psnr
from sdsv.intents import intent_named
from sdsv.tiny.pipeline import TinyPipeline

from toy_models import RowwiseDenoiser

PROMPT = "a red circle"


@pytest.fixture(scope="module")
def pipe():
    return TinyPipeline.from_pretrained(names=("target",))


@pytest.fixture(scope="module")
def video():
    from sdsv.tiny.video.pipeline import TinyVideoPipeline
    return TinyVideoPipeline.from_pretrained(names=("target",))


@pytest.fixture
def no_sampling(monkeypatch):
    """A check that ran too late would sample first: make that fail loudly."""
    def refuse(*a, **k):
        raise AssertionError("sampled before the arguments were checked")
    monkeypatch.setattr("sdsv.tiny.pipeline.sample", refuse)


def one_line(e: pytest.ExceptionInfo) -> str:
    text = str(e.value)
    assert "\n" not in text, text
    return text


# ---- calibrate -----------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, exc, match", [
    (dict(policy=lambda tol, n: None), TypeError, r"policy\(0\.6, 20\) returned NoneType, expected a window policy"),
    (dict(policy=lambda tol, n: ErrorControlled(n + 2, tol=tol)), ValueError,
     r"policy\(0\.6, 20\) returned a policy of 22 steps, not num_steps=20"),
    (dict(policy=ErrorControlled(20)), TypeError, "policy must be a function .*ErrorControlled instance.*lambda tol, n"),
    (dict(policy="faithful"), TypeError, "policy must be a function"),
    (dict(num_steps=2.7), TypeError, "num_steps must be an int, got 2.7"),
    (dict(num_steps=True), TypeError, "num_steps must be an int, got True"),
    (dict(num_steps=0), ValueError, "num_steps must be >= 1, got 0"),
    (dict(num_steps=1), ValueError, "num_steps=1 leaves no policy of the ladder a step to speculate on"),
    (dict(num_steps=2), ValueError, "num_steps=2 leaves no policy"),
    (dict(tols="0.2"), TypeError, "tols must be a number or a list of numbers"),
    (dict(tols=[0.2, None]), TypeError, r"tols\[1\] must be a number"),
    (dict(tols=[0.2, 0.0]), ValueError, r"tols\[1\] must be > 0"),
    (dict(target_psnr=True), TypeError, "target_psnr must be a number"),
    (dict(target_psnr="30"), TypeError, "target_psnr must be a number"),
    (dict(percentile=None), TypeError, "percentile must be a number"),
    (dict(seed=None), TypeError, "seed must be an int"),
    (dict(seed=1.5), TypeError, "seed must be an int"),
    (dict(seed=torch.Generator()), TypeError, "seed must be an int"),
    (dict(seed=torch.tensor(3)), TypeError, "seed must be an int"),
    (dict(seed=2**64), ValueError, r"seed must be in \[0, 2\*\*64 - 1\]"),
    (dict(seed=2**64 - 1), ValueError, "seed must be <= 2\\*\\*64 - 2 for 2 images"),
    (dict(seed=-1), ValueError, "seed must be in"),
    (dict(seed=[1, 2, 3]), ValueError, "seed: 3 seeds for 2 images"),
    (dict(foo=1), TypeError, "TinyPipeline takes no argument foo"),
    (dict(solver="heun"), ValueError, "solver must be one of"),
    (dict(guidance="3"), TypeError, "guidance must be a number"),
    (dict(draft="lite"), TypeError, "calibrate sets draft= itself"),
], ids=lambda v: None)
def test_calibrate_refuses_bad_arguments_before_sampling(pipe, no_sampling, kwargs, exc, match):
    kwargs = {"num_steps": 20, "target_psnr": 30.0, **kwargs}
    with pytest.raises(exc, match=match) as e:
        calibrate(pipe, [PROMPT, "a blue ring"], **kwargs)
    one_line(e)


@pytest.mark.parametrize("prompts, exc, match", [
    (None, TypeError, "prompts must be a prompt .* or a list of them, got None"),
    (3, TypeError, "prompts must be a prompt .* got 3 \\(int\\)"),
    ([], ValueError, "calibrate needs at least one prompt"),
    ([PROMPT, 4], TypeError, r"prompts\[1\] must be a prompt"),
    ([{"prompt": PROMPT}], TypeError, r"prompts\[0\] must be a prompt \('a <colour> <shape>'\)"),
    (["a purple elephant"], ValueError, "the tiny models understand prompts of the form"),
])
def test_calibrate_checks_its_prompts(pipe, no_sampling, prompts, exc, match):
    with pytest.raises(exc, match=match):
        calibrate(pipe, prompts, 30.0, num_steps=20)


def test_calibrate_needs_a_pipeline(no_sampling):
    with pytest.raises(TypeError, match="pipe must be a pipeline .* got None"):
        calibrate(None, [PROMPT], 30.0)
    pytest.importorskip("diffusers")
    with pytest.raises(TypeError, match="pipe has no calibration_runs method and is not a pipeline sdsv.enable "
                                        "supports: SDSV supports .* got a object"):
        calibrate(object(), [PROMPT], 30.0, num_steps=8)


def test_calibrate_takes_one_tolerance_and_numpy_numbers(pipe):
    cal = calibrate(pipe, [PROMPT], -100.0, num_steps=np.int64(8), tols=0.3, seed=np.int64(4),
                    percentile=np.float32(50))
    assert cal.tol == 0.3 and len(cal.trials) == 1 and cal.policy.num_steps == 8
    assert cal.reference_evals == 8 and cal.images == 1


@pytest.mark.slow
def test_calibrate_a_video_pipeline(video):
    cal = calibrate(video, ["a red circle moving left"], -100.0, num_steps=6, tols=(0.3,), seed=2)
    assert cal.images == 1 and cal.reference_evals == 6 and cal.policy.num_steps == 6
    ref = video("a red circle moving left", policy=StagePlan.target_only(6), seed=2).frames
    out = video("a red circle moving left", policy=cal.policy, seed=2).frames
    assert cal.quantile == pytest.approx(per_image_psnr(out, ref).item(), abs=1e-4)


# ---- the tiny pipelines' calls -------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, exc, match", [
    (dict(seed=None), TypeError, "seed must be an int .*got None"),
    (dict(seed=torch.Generator()), TypeError, "seed must be an int .*Generator"),
    (dict(seed=1.5), TypeError, "seed must be an int .*got 1.5"),
    (dict(seed=2.0), TypeError, "seed must be an int .*got 2.0"),
    (dict(seed=torch.tensor(3)), TypeError, "seed must be an int .*Tensor"),
    (dict(seed=2**64), ValueError, r"seed must be in \[0, 2\*\*64 - 1\]"),
    (dict(seed=-3), ValueError, r"seed must be in \[0, 2\*\*64 - 1\], got -3"),
    (dict(seed=[0, 1.5]), TypeError, r"seed\[1\] must be an int"),
    (dict(seed=[0, 1, 2]), ValueError, "seed: 3 seeds for 2 images"),
    (dict(seed="0"), TypeError, "seed must be an int"),
    (dict(prompts=None), TypeError, "prompts must be a prompt .*got None"),
    (dict(prompts=7), TypeError, "prompts must be a prompt .*got 7"),
    (dict(prompts=[PROMPT, None]), TypeError, r"prompts\[1\] must be a prompt"),
    (dict(intent=["accurate"]), TypeError, r"intent must be a str \('faithful', 'accurate'\), got \['accurate'\]"),
    (dict(intent="fast"), ValueError, "intent must be one of 'faithful', 'accurate', got 'fast'"),
    (dict(num_steps=True), TypeError, "num_steps must be an int"),
    (dict(num_steps=0), ValueError, "num_steps must be >= 1"),
    (dict(policy="faithful"), TypeError, "policy must be a window policy"),
    (dict(draft=None), TypeError, "draft must be a str"),
    (dict(draft="svd"), ValueError, "draft must be one of 'self' \\(the models loaded\\), got 'svd'"),
    (dict(forecast_order=1.5), TypeError, "forecast_order must be an int"),
    (dict(forecast_order=3), ValueError, "forecast_order must be 0, 1 or 2"),
    (dict(solver=2), TypeError, "solver must be a str"),
    (dict(guidance="3"), TypeError, "guidance must be a number"),
    (dict(guidance=-1), ValueError, "guidance must be >= 0"),
    (dict(shift=None), TypeError, "shift must be a number"),
    (dict(verify="all"), ValueError, "verify must be one of"),
    (dict(accept=0.3), TypeError, "accept must be a sdsv.AcceptanceTest"),
    (dict(progress="yes"), TypeError, "progress must be True, False or a dict"),
], ids=lambda v: None)
def test_tiny_pipeline_refuses_bad_arguments_before_sampling(pipe, no_sampling, kwargs, exc, match):
    kwargs = {"prompts": [PROMPT, "a blue ring"], "num_steps": 6, **kwargs}
    with pytest.raises(exc, match=match) as e:
        pipe(**kwargs)
    one_line(e)


def test_tiny_pipeline_takes_seeds_as_ranges_numpy_ints_and_arrays(pipe):
    prompts = [PROMPT, "a blue ring"]
    ref = pipe(prompts, num_steps=4, seed=[5, 6]).images
    for seed in (5, np.int64(5), np.uint32(5), range(5, 7), (5, 6), [np.int64(5), np.int32(6)], np.array([5, 6])):
        assert torch.equal(pipe(prompts, num_steps=4, seed=seed).images, ref), seed


def test_video_pipeline_messages_name_its_motion_word(video, no_sampling):
    with pytest.raises(ValueError, match=r"no prompts given: .*'a <colour> <shape> <motion>'"):
        video([])
    with pytest.raises(TypeError, match=r"prompts must be a prompt \('a <colour> <shape> <motion>'\)"):
        video(None)
    with pytest.raises(ValueError, match="seed: 1 seeds for 2 clips"):
        video(["a red circle moving left", "a blue ring rotating"], seed=[1])


def test_video_pipeline_accurate_intent_is_its_unipc_with_fewer_steps_and_the_accurate_windows(video):
    """TinyVideoPipeline(..., intent="accurate"): the intent's solver (UniPC, the pipeline's own
    rule too), its share of the steps and the accurate windows with the line, not the faithful
    windows."""
    prompt = "a red circle moving left"
    out = video(prompt, num_steps=8, intent="accurate", seed=1)
    same = video(prompt, policy=ErrorControlled.accurate(8), solver="unipc", forecast_order=1, seed=1)
    faithful = video(prompt, num_steps=8, seed=1)
    assert torch.equal(out.frames, same.frames) and not torch.equal(out.frames, faithful.frames)
    assert type(video).intent_defaults("accurate") == ("unipc", 26)
    assert type(video).intent_defaults("faithful") == ("unipc", 50)


# ---- policies ------------------------------------------------------------------------------------

@pytest.mark.parametrize("make, exc, match", [
    (lambda: ErrorControlled.faithful("8"), TypeError, "num_steps must be an int, got '8'"),
    (lambda: ErrorControlled.accurate(8.0), TypeError, "num_steps must be an int, got 8.0"),
    (lambda: ErrorControlled.faithful(0), ValueError, "num_steps must be >= 1"),
    (lambda: StagePlan.paper_default("8"), TypeError, "num_steps must be an int"),
    (lambda: StagePlan.target_only(None), TypeError, "num_steps must be an int"),
    (lambda: StagePlan.improved_draft(10, 2.5), TypeError, "stage0_steps must be an int"),
    (lambda: StagePlan.minimal_warmup(10, k="9"), TypeError, "k must be an int"),
    (lambda: StagePlan(10, 2, 4, 1, 3, main=1), TypeError, "main must be a str"),
    (lambda: StagePlan(10, 2, 4, 1, 3, name=None), TypeError, "name must be a str"),
    (lambda: FixedInterval(10, name=5), TypeError, "name must be a str"),
    (lambda: FixedInterval(10, closing_error=1), TypeError, "closing_error must be True or False"),
    (lambda: ErrorControlled(10, error_metric=5), TypeError, "error_metric must be a str"),
    (lambda: ErrorControlled(10, error_metric="l2"), ValueError, "error_metric must be one of 'x0_rms', 'v_rms'"),
], ids=lambda v: None)
def test_policy_constructors_check_their_arguments(make, exc, match):
    with pytest.raises(exc, match=match):
        make()


def test_error_controlled_says_when_it_never_drafts(pipe):
    assert not ErrorControlled(3, warmup=2).uses_draft and not ErrorControlled.faithful(2).uses_draft
    assert ErrorControlled(4, warmup=2).uses_draft
    out = pipe(PROMPT, policy=ErrorControlled.faithful(2))
    assert out.stats.draft_evals == 0 and out.stats.target_evals == 2


def test_intent_named_checks_the_type():
    with pytest.raises(TypeError, match=r"intent must be a str \('faithful', 'accurate'\), got \['accurate'\]"):
        intent_named(["accurate"])
    assert intent_named("accurate").solver == "unipc"


# ---- sdsv.sample ---------------------------------------------------------------------------------

N = 4


def _sample(noise=None, sigmas=None, **kw):
    noise = torch.randn(2, 4) if noise is None else noise
    return sample(RowwiseDenoiser(), None, noise, flow_match_sigmas(N) if sigmas is None else sigmas,
                  StagePlan.target_only(N), **kw)


def test_a_per_sample_kwarg_with_the_wrong_batch_is_named():
    with pytest.raises(ValueError, match=r"the target model failed \(RuntimeError: .*\) on conditioning passed whole "
                                         r"to every call because its first dimension is not the batch \(2\): "
                                         r"'labels' \(3, 2\)\. .*per_sample=") as e:
        _sample(labels=torch.ones(3, 2))
    one_line(e)
    # named as per-sample: refused at once, as a per-sample kwarg of another batch
    with pytest.raises(ValueError, match="per-sample conditioning 'labels' must be a tensor with first dim 2"):
        _sample(labels=torch.ones(3, 2), per_sample=["labels"])
    # a shared tensor of another length that the model can use is passed whole, as before
    seen = []

    def model(x, sigma, table):
        seen.append(table.shape)
        return x * table.mean()

    sample(model, None, torch.randn(2, 4), flow_match_sigmas(N), StagePlan.target_only(N), table=torch.ones(5, 3))
    assert seen == [(5, 3)] * N


def test_an_out_of_memory_error_is_never_renamed():
    def oom(x, sigma, labels):
        raise torch.OutOfMemoryError("out of memory")

    with pytest.raises(torch.OutOfMemoryError):
        sample(oom, None, torch.randn(2, 4), flow_match_sigmas(N), StagePlan.target_only(N), labels=torch.ones(3, 2))


@pytest.mark.parametrize("per_sample, exc, match", [
    (5, TypeError, "per_sample must be None, a conditioning kwarg's name or a list of them, got 5"),
    ([1], TypeError, "per_sample must be None"),
    (["nope"], ValueError, r"per_sample names 'nope', not among this call's conditioning kwargs \['labels'\]"),
])
def test_per_sample_is_checked(per_sample, exc, match):
    with pytest.raises(exc, match=match):
        _sample(labels=torch.ones(2, 2), per_sample=per_sample)


def test_meta_tensors_and_nan_sigmas_are_named():
    with pytest.raises(ValueError, match="sigmas are on the meta device"):
        _sample(sigmas=flow_match_sigmas(N).to("meta"))
    with pytest.raises(ValueError, match="noise is on the meta device"):
        _sample(noise=torch.randn(2, 4, device="meta"))
    bad = flow_match_sigmas(N)
    bad[1] = float("nan")
    with pytest.raises(ValueError, match="sigmas contain NaN or inf"):
        _sample(sigmas=bad)
    with pytest.raises(ValueError, match="sigmas are on the meta device"):
        sdsv.check_sigmas(flow_match_sigmas(N).to("meta"))


def test_sample_checks_progress():
    with pytest.raises(TypeError, match="progress must be True, False or a dict of tqdm options, got 'yes'"):
        _sample(progress="yes")
    _sample(progress=None)
    _sample(progress={"disable": True})


# ---- the self-draft ------------------------------------------------------------------------------

def test_a_target_that_goes_past_the_self_draft_is_named():
    """sample(target, ..., self_draft=sd) with a target that is not sd.target (nor calls it): the
    forecast would have no anchors; said at the first target call, naming self_draft."""
    from sdsv import SelfDraft

    from toy_models import RowwiseSplit

    sd = SelfDraft(RowwiseSplit())
    policy = ErrorControlled(8, k_min=1, k_init=1)
    with pytest.raises(ValueError, match="self_draft: the target call went past the self-draft") as e:
        sample(RowwiseDenoiser(), None, torch.randn(2, 4), flow_match_sigmas(8), policy, self_draft=sd)
    one_line(e)
    ok = sample(None, None, torch.randn(2, 4), flow_match_sigmas(8), policy, self_draft=sd)  # its own target
    assert ok.stats.draft_evals > 0


@pytest.mark.parametrize("kwargs, exc, match", [
    (dict(order=1.5), TypeError, "order must be an int"),
    (dict(order=3), ValueError, r"order must be 0, 1 or 2 \(the forecast's order in sigma\)"),
    (dict(order=1, slots="3"), TypeError, "slots must be an int"),
])
def test_self_draft_checks_its_order(kwargs, exc, match):
    from sdsv import SelfDraft

    from toy_models import RowwiseSplit

    with pytest.raises(exc, match=match):
        SelfDraft(RowwiseSplit(), **kwargs)
