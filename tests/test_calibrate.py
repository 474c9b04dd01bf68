"""``sdsv.calibrate``: the policy it returns meets the target on its calibration images; an
unreachable target is an error naming the best figure reached; bad arguments fail early."""

from __future__ import annotations

import pytest
import torch

import sdsv
from sdsv import CalibrationError, FixedInterval, calibrate
from sdsv.calibrate import per_image_psnr
from sdsv.metrics import percentile
from sdsv.tiny.pipeline import TinyPipeline

PROMPTS = ["a red circle", "a blue square", "a green triangle"]
STEPS = 20  # the self-draft's windows need room: at 12 steps every tolerance stays near 21 dB


@pytest.fixture(scope="module")
def pipe():
    return TinyPipeline.from_pretrained(names=("target",))


def test_a_met_target_is_met_on_the_calibration_images(pipe):
    cal = calibrate(pipe, PROMPTS, 22.0, num_steps=STEPS, tols=(0.6, 0.3, 0.1), seed=5)
    assert cal.quantile >= 22.0 and cal.percentile == 5.0 and cal.images == len(PROMPTS)
    assert cal.policy.num_steps == STEPS and cal.policy.tol == cal.tol
    assert cal.trials[-1].tol == cal.tol and all(t.quantile < 22.0 for t in cal.trials[:-1])
    # rerun: the same images, the same figure, independently measured
    with torch.inference_mode():
        ref = pipe(PROMPTS, policy=sdsv.StagePlan.target_only(STEPS), draft="svd", seed=[5, 6, 7]).images
        out = pipe(PROMPTS, policy=cal.policy, draft="self", seed=[5, 6, 7])
    p = per_image_psnr(out.images, ref).tolist()
    assert percentile(p, 5.0) == pytest.approx(cal.quantile, abs=1e-4) and percentile(p, 5.0) >= 22.0
    assert out.stats.target_evals / len(PROMPTS) == pytest.approx(cal.target_evals)
    assert cal.reference_evals == STEPS and cal.evals_ratio > 1
    assert "tol" in str(cal) and f"{cal.tol:g}" in str(cal)


def test_the_loosest_tolerance_that_meets_the_target_wins(pipe):
    loose = calibrate(pipe, PROMPTS[:2], -100.0, num_steps=STEPS, tols=(0.1, 0.5), percentile=50)
    assert loose.tol == 0.5 and len(loose.trials) == 1  # any figure meets -100 dB: the fastest is tried first


def test_an_unreachable_target_names_the_best_figure(pipe):
    with pytest.raises(CalibrationError, match=r"best was \d+\.\d\d dB \(tol 0\.[13],"):
        calibrate(pipe, PROMPTS[:2], 500.0, num_steps=STEPS, tols=(0.3, 0.1))


def test_a_policy_family_of_your_own(pipe):
    cal = calibrate(pipe, PROMPTS[:2], 20.0, num_steps=STEPS, tols=(3, 2),
                    policy=lambda tol, n: FixedInterval(n, every=int(tol)))
    assert isinstance(cal.policy, FixedInterval) and cal.policy.every in (2, 3)


@pytest.mark.parametrize("kwargs, match", [
    (dict(target_psnr=float("nan")), "target_psnr"),
    (dict(target_psnr=30, percentile=101), "percentile"),
    (dict(target_psnr=30, tols=()), "tols"),
    (dict(target_psnr=30, tols=(0.3, -1)), "tols"),
    (dict(target_psnr=30, draft="lite"), "sets draft"),
])
def test_bad_arguments_fail_before_sampling(pipe, kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        calibrate(pipe, PROMPTS, num_steps=STEPS, **kwargs)
    with pytest.raises(ValueError, match="at least one prompt"):
        calibrate(pipe, [], 30.0)


def test_per_image_psnr_compares_each_image_with_its_own_reference():
    a = torch.zeros(2, 3, 4, 4)
    b = a.clone()
    b[1] += 0.1
    p = per_image_psnr(b, a)
    assert p[0] == float("inf") and p[1] == pytest.approx(20.0, abs=1e-4)
    with pytest.raises(ValueError, match="one shape"):
        per_image_psnr(a, a[:1])
