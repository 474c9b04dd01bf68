"""Issue 33: ``sdsv.calibrate`` on a diffusers pipeline checks its prompts, the call's arguments and
the pipeline's scheduler before the reference is sampled; a call that returns several images
counts each; an enabled pipeline's settings (``convert_scheduler`` included) are the candidates'."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("diffusers")

import sdsv  # noqa: E402
from sdsv.errors import RefusedError  # noqa: E402
from sdsv.integrations.hf_diffusers import enabled_config  # noqa: E402
from sdsv.integrations.hf_diffusers.random_pipelines import flux_kwargs, flux_pipe, wan_kwargs, wan_pipe  # noqa: E402

CALL = dict(height=16, width=16, guidance_scale=3.5)


def _refuse_sampling(pipe):
    """A check that ran too late would sample the reference first: make that fail loudly."""
    def refuse(*a, **k):
        raise AssertionError("sampled before the arguments were checked")
    pipe.transformer.forward = refuse


def _images(batch=1):
    kw = flux_kwargs(batch=batch)
    return {"prompt_embeds": kw["prompt_embeds"], "pooled_prompt_embeds": kw["pooled_prompt_embeds"]}


@pytest.mark.parametrize("extra, match", [
    ({"num_inference_steps": 4}, r"prompts\[0\] sets num_inference_steps, which calibrate sets itself"),
    ({"output_type": "pil"}, r"prompts\[0\] sets output_type"),
    ({"generator": torch.Generator()}, r"prompts\[0\] sets generator"),
    ({"height": 16}, r"prompts\[0\] and the call's arguments both give height"),
    ({"no_such_argument": 1}, r"FluxPipeline\(\.\.\.\) refuses prompts\[0\] with the call's arguments: .*no_such_argument"),
    ({3: "x"}, r"prompts\[0\] must be a dict of call arguments by name"),
], ids=["num_inference_steps", "output_type", "generator", "twice", "unknown", "non-str key"])
def test_prompt_dicts_may_not_set_what_calibrate_sets(extra, match):
    pipe = flux_pipe()
    _refuse_sampling(pipe)
    with pytest.raises(TypeError, match=match):
        sdsv.calibrate(pipe, [{**_images(), **extra}], 0.0, num_steps=4, **CALL)


def test_a_pipeline_calibrate_cannot_run_is_refused_before_sampling():
    pipe = flux_pipe()
    _refuse_sampling(pipe)
    for k in ("generator", "output_type", "num_inference_steps"):
        with pytest.raises(TypeError, match=f"calibrate sets {k}= itself"):
            sdsv.calibrate(pipe, [_images()], 0.0, num_steps=4, **{k: None}, **CALL)
    with pytest.raises(ValueError, match="num_steps=1 leaves no policy"):
        sdsv.calibrate(pipe, [_images()], 0.0, num_steps=1, **CALL)
    with pytest.raises(TypeError, match="policy must be a function"):
        sdsv.calibrate(pipe, [_images()], 0.0, num_steps=4, policy=sdsv.ErrorControlled(4), **CALL)


def test_a_call_of_two_images_counts_two():
    pipe = flux_pipe(num_layers=1, num_single_layers=4)
    two = _images(batch=2)
    cal = sdsv.calibrate(pipe, [two], -100.0, num_steps=8, tols=0.5, seed=3, **CALL)
    assert cal.images == 2 and cal.reference_evals == 8
    sdsv.enable(pipe, policy=cal.policy)
    pipe(**two, **CALL, num_inference_steps=8, output_type="pt", generator=torch.Generator().manual_seed(3))
    assert cal.target_evals == pytest.approx(pipe.sdsv_stats.target_evals / 2)  # per image, not per call
    sdsv.disable(pipe)


def _unipc_wan():
    from diffusers import UniPCMultistepScheduler
    pipe = wan_pipe()
    # a UniPC configuration the sampler has no rule for: sdsv.enable needs convert_scheduler=True
    pipe.scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0,
                                             solver_order=3)
    kw = wan_kwargs(steps=4)
    return pipe, {"prompt_embeds": kw.pop("prompt_embeds")}, {k: v for k, v in kw.items() if k != "num_inference_steps"}


def test_a_pipeline_enabled_with_convert_scheduler_calibrates_with_it():
    pipe, image, call = _unipc_wan()
    forward = pipe.transformer.forward
    _refuse_sampling(pipe)
    with pytest.raises(RefusedError, match="convert_scheduler=True.*calibrate samples with sdsv.enable's settings: "
                                           "enable the pipeline first"):
        sdsv.calibrate(pipe, [image], -100.0, num_steps=4, **call)
    pipe.transformer.forward = forward
    sdsv.enable(pipe, convert_scheduler=True)
    cal = sdsv.calibrate(pipe, [image], -100.0, num_steps=4, tols=0.5, **call)
    assert cal.images == 1 and cal.reference_evals == 4
    config = enabled_config(pipe)
    assert config.convert_scheduler is True and config.policy is not cal.policy  # the user's settings are back
    sdsv.disable(pipe)


def test_the_default_family_is_corrected_only_with_the_self_draft():
    pipe = flux_pipe(num_layers=1, num_single_layers=4)
    image = _images()
    own = sdsv.calibrate(pipe, [image], -100.0, num_steps=8, tols=0.5, seed=3, **CALL)
    assert own.policy.correct and own.policy.tol == 0.5  # the faithful windows at the tolerance tried
    assert own.policy.draft_last == 1  # the faithful default's last step is the self-draft's
    draft = flux_pipe(num_layers=1, num_single_layers=1).transformer  # same contract, fewer blocks
    sdsv.enable(pipe, draft=draft)
    cal = sdsv.calibrate(pipe, [image], -100.0, num_steps=8, tols=0.5, seed=3, **CALL)
    # corrected windows need the self-draft: a draft transformer gets the same windows uncorrected
    # and its last step stays the target's (a trained draft's last step alone was never measured)
    assert not cal.policy.correct and cal.policy.k_max == own.policy.k_max and cal.policy.draft_last == 0
    assert enabled_config(pipe).draft is draft
    sdsv.disable(pipe)
