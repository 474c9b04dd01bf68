"""Options the chosen window policy cannot use are said, not silently dropped."""

from __future__ import annotations

import warnings

import pytest
import torch

import sdsv
from sdsv import AcceptanceTest, ErrorControlled, FixedInterval, IgnoredOptionWarning, StagePlan, sample
from sdsv.schedule import flow_match_sigmas

from toy_models import RowwiseDenoiser

N = 10


def _sample(policy, **kw):
    return sample(RowwiseDenoiser(), RowwiseDenoiser(bias=0.05), torch.randn(2, 3, 4, generator=torch.Generator().manual_seed(0)),
                  flow_match_sigmas(N), policy, **kw)


@pytest.mark.parametrize("policy", [ErrorControlled(N), FixedInterval(N, every=3), StagePlan.target_only(N),
                                    StagePlan.draft_only(N)], ids=lambda p: p.name)
@pytest.mark.parametrize("given", [dict(accept=AcceptanceTest("x0_rms", 0.1)), dict(verify="full"),
                                   dict(verify="endpoints", accept=AcceptanceTest())], ids=lambda g: "+".join(g))
def test_verification_options_on_a_policy_without_verified_windows_warn(policy, given):
    with pytest.warns(IgnoredOptionWarning) as record:
        out = _sample(policy, **given)
    message = str(record[0].message)
    assert type(policy).__name__ in message and all(f"{name}=" in message for name in given)
    # and the result is what the policy gives without them
    torch.testing.assert_close(out.latents, _sample(policy).latents, rtol=0, atol=0)


def test_verified_windows_use_the_options_without_a_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        strict = _sample(StagePlan.paper_default(N), verify="full", accept=AcceptanceTest("rel_l2", 1e-12))
        loose = _sample(StagePlan.paper_default(N), verify="full", accept=AcceptanceTest("rel_l2", 10.0))
    assert strict.stats.accepted_steps == 0 and loose.stats.accepted_steps > 0


def test_tiny_pipeline_warns_too():
    pytest.importorskip("safetensors")
    from sdsv.tiny.pipeline import TinyPipeline

    pipe = TinyPipeline.from_pretrained(names=("target",))
    with pytest.warns(IgnoredOptionWarning, match="ErrorControlled"):
        pipe(["a red circle"], policy=ErrorControlled(8), draft="self", accept=AcceptanceTest("x0_rms", 0.1))


def test_enable_warns_at_once_for_a_policy_it_is_given():
    pytest.importorskip("diffusers")
    from sdsv.integrations.hf_diffusers.random_pipelines import flux_pipe

    pipe = flux_pipe()
    with pytest.warns(IgnoredOptionWarning, match="FixedInterval"):
        sdsv.enable(pipe, policy=FixedInterval(6, every=2), accept=AcceptanceTest("x0_rms", 0.1))
    sdsv.disable(pipe)
