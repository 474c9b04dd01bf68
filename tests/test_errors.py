"""Bad input fails loudly, with a message that says what is wrong."""

import pytest
import torch

from sdsv import AcceptanceTest, NonFiniteOutputError, StagePlan, flow_match_sigmas, sample

from toy_models import RowwiseDenoiser

T = RowwiseDenoiser()


def run(**kw):
    args = dict(target=T, draft=T, noise=torch.randn(2, 4, 4), sigmas=flow_match_sigmas(10), policy=StagePlan.paper_default(10))
    args.update(kw)
    return sample(**args)


@pytest.mark.parametrize("sigmas,msg", [
    (torch.tensor([1.0, 0.5, 0.6, 0.0]), "strictly decreasing"),
    (torch.tensor([1.0, 0.5, 0.1]), "end in 0"),
    (torch.tensor([[1.0, 0.0]]), "1-D"),
    (torch.tensor([1.0, float("nan"), 0.0]), "NaN"),
])
def test_bad_sigmas(sigmas, msg):
    with pytest.raises(ValueError, match=msg):
        run(sigmas=sigmas, policy=StagePlan.target_only(sigmas.numel() - 1 if sigmas.dim() == 1 else 1))


def test_plan_longer_than_schedule():
    with pytest.raises(ValueError, match="longer than the schedule"):
        run(policy=StagePlan.paper_default(20))


def test_plan_shorter_than_schedule():
    with pytest.raises(ValueError, match="shorter than the schedule"):
        run(policy=StagePlan.paper_default(5))


@pytest.mark.parametrize("kw,msg", [
    (dict(k_warmup=0, k_main=9), "k_warmup"),
    (dict(k_warmup=3, k_main=0), "k_main"),
])
def test_k_below_one(kw, msg):
    with pytest.raises(ValueError, match=msg):
        StagePlan(50, 2, 10, **kw)


@pytest.mark.parametrize("bad", [
    dict(num_steps=0, stage0_steps=0, warmup_steps=0, k_warmup=1, k_main=1),
    dict(num_steps=10, stage0_steps=11, warmup_steps=11, k_warmup=1, k_main=1),
    dict(num_steps=10, stage0_steps=5, warmup_steps=3, k_warmup=1, k_main=1),
])
def test_inconsistent_plan(bad):
    with pytest.raises(ValueError):
        StagePlan(**bad)


@pytest.mark.parametrize("metric,tau", [("cosine", 1.5), ("cosine", -2.0), ("rel_l2", -0.1), ("x0_rms", float("nan")),
                                        ("state_rel_l2", -1.0)])
def test_tau_out_of_range(metric, tau):
    with pytest.raises(ValueError, match="outside the range"):
        AcceptanceTest(metric, tau)


def test_unknown_metric_and_mode():
    with pytest.raises(ValueError, match="unknown acceptance metric"):
        AcceptanceTest("psnr", 1.0)
    with pytest.raises(ValueError, match="verify"):
        run(verify="middle")


def test_output_shape_mismatch():
    with pytest.raises(ValueError, match="draft model returned shape"):
        run(draft=lambda x, s: x[:, :2])


def test_output_dtype_mismatch():
    with pytest.raises(TypeError, match="float64"):
        run(target=lambda x, s: x.double())


def test_output_device_mismatch():
    with pytest.raises(TypeError, match="meta"):
        run(target=lambda x, s: torch.empty_like(x, device="meta"))


def test_output_not_a_tensor():
    with pytest.raises(TypeError, match="expected a tensor"):
        run(draft=lambda x, s: x.tolist())


def test_missing_models():
    with pytest.raises(TypeError, match="uses the draft"):
        run(draft=None)
    with pytest.raises(TypeError, match="uses the target"):
        run(target=None, policy=StagePlan.improved_draft(10))


def test_bad_noise():
    with pytest.raises(ValueError, match="floating-point"):
        run(noise=torch.ones(2, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="NaN"):
        run(noise=torch.full((2, 4), float("nan")))


def nan_below(sigma_cut, fn=T):
    def f(x, s):
        v = fn(x, s)
        return torch.where((s < sigma_cut).view(-1, *([1] * (x.dim() - 1))), torch.full_like(v, float("nan")), v)
    return f


@pytest.mark.parametrize("verify", ["endpoints", "full"])
def test_non_finite_draft_is_named(verify):
    with pytest.raises(NonFiniteOutputError, match=r"draft model returned NaN/inf at step \d+"):
        run(draft=nan_below(0.5), verify=verify)


def test_non_finite_target_is_named():
    with pytest.raises(NonFiniteOutputError, match=r"target model returned NaN/inf at step 7 "):
        run(target=nan_below(0.35), policy=StagePlan.target_only(10))


def test_non_finite_draft_only_step_is_named():
    with pytest.raises(NonFiniteOutputError, match="draft model"):
        run(target=None, draft=nan_below(0.5), policy=StagePlan.draft_only(10))
