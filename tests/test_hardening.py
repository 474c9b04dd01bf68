"""The public API under adversarial input (issue: hardening): autograd, validation holes,
overflow in every step kind, the guidance wrapper's errors, defaults that must be speedups."""

import numpy as np
import pytest
import torch

from sdsv import (AcceptanceTest, ClassifierFreeGuidance, ErrorControlled, FixedInterval, NonFiniteOutputError,
                  StagePlan, flow_match_sigmas, sample)

from toy_models import RowwiseDenoiser

# these tests sweep one set of options over every policy, on purpose
pytestmark = pytest.mark.filterwarnings("ignore::sdsv.IgnoredOptionWarning")


class Linear(torch.nn.Module):
    """A model with parameters, called the way users call theirs (no torch.no_grad)."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor(0.5))

    def forward(self, x, sigma):
        return self.w * x - 0.3 * x * sigma.view(-1, *([1] * (x.dim() - 1)))


# ---- 1. autograd --------------------------------------------------------------------------------

@pytest.mark.parametrize("plan", [StagePlan.target_only(10), StagePlan.paper_default(10), FixedInterval(10, every=2)],
                         ids=["target-only", "sdsv", "cache"])
def test_no_autograd_graph_is_kept(plan):
    model = Linear()
    r = sample(model, model, torch.randn(2, 3, 4), flow_match_sigmas(10), plan, accept=AcceptanceTest("rel_l2", 1e-3))
    assert not r.latents.requires_grad and r.latents.grad_fn is None


def test_dpm_solver_baseline_keeps_no_graph_either():
    from multistep_oracle import sample_dpm_solver_2m
    r = sample_dpm_solver_2m(Linear(), torch.randn(2, 3), flow_match_sigmas(6))
    assert not r.latents.requires_grad


# ---- 3. validation holes ------------------------------------------------------------------------

@pytest.mark.parametrize("tau,exc,match", [(None, TypeError, "tau must be a number, got None"),
                                           (torch.tensor(0.1), TypeError, "tau must be a number"),
                                           (True, TypeError, "tau must be a number"),
                                           (float("nan"), ValueError, "outside the range")])
def test_acceptance_threshold_must_be_a_number(tau, exc, match):
    with pytest.raises(exc, match=match):
        AcceptanceTest("x0_rms", tau)
    assert AcceptanceTest("x0_rms", np.float32(0.25)).tau == 0.25


@pytest.mark.parametrize("kw,exc,match", [(dict(num_steps=10.5), TypeError, "num_steps must be an int"),
                                          (dict(num_steps=10, shift=float("nan")), ValueError, "shift must be finite"),
                                          (dict(num_steps=10, shift=None), TypeError, "shift must be a number"),
                                          (dict(num_steps=0), ValueError, "num_steps must be >= 1")])
def test_schedule_parameters(kw, exc, match):
    with pytest.raises(exc, match=match):
        flow_match_sigmas(**kw)
    assert flow_match_sigmas(np.int64(4)).shape == (5,)


@pytest.mark.parametrize("make,match", [
    (lambda: StagePlan(20.0, 2, 5, 1, 3), "num_steps must be an int"),
    (lambda: StagePlan(20, 2, 5, 1.5, 3), "k_warmup must be an int"),
    (lambda: ErrorControlled(20, k_max=3.5), "k_max must be an int"),
    (lambda: ErrorControlled(20, tol=None), "tol must be a number"),
], ids=["plan-steps", "plan-k", "ec-k", "ec-tol"])
def test_plans_take_ints_where_they_count(make, match):
    with pytest.raises(TypeError, match=match):
        make()
    with pytest.raises(ValueError, match="tol must be finite"):
        ErrorControlled(20, tol=float("nan"))


def test_one_per_sample_name_is_a_name_not_letters():
    target = RowwiseDenoiser()
    labels = torch.tensor([[1, 2], [3, 4]])
    a = sample(target, None, torch.randn(2, 4), flow_match_sigmas(5), StagePlan.target_only(5), labels=labels,
               per_sample="labels")
    b = sample(target, None, torch.randn(2, 4), flow_match_sigmas(5), StagePlan.target_only(5), labels=labels,
               per_sample=["labels"])
    assert a.latents.shape == b.latents.shape


# ---- 4. overflow is reported for every step kind ------------------------------------------------

@pytest.mark.parametrize("plan", [StagePlan.target_only(8), StagePlan.draft_only(8), StagePlan(8, 1, 3, 1, 2),
                                  FixedInterval(8, every=2), ErrorControlled(8, k_min=1, k_init=1)],
                         ids=["target", "draft", "speculate", "unverified", "error-controlled"])
@pytest.mark.parametrize("solver", ["euler", "dpm++2m"])
def test_overflow_in_a_step_is_an_error_not_a_result(plan, solver):
    """fp16 latents near its maximum and a large, finite velocity: the steps overflow to inf."""
    big = lambda x, sigma: torch.full_like(x, -6.0e4)  # noqa: E731 - finite in fp16
    noise = torch.full((1, 4), 6.0e4, dtype=torch.float16)
    with pytest.raises(NonFiniteOutputError):
        sample(big, big, noise, flow_match_sigmas(8), plan, accept=AcceptanceTest("rel_l2", 1e-3), solver=solver)


# ---- 5. the guidance wrapper says what is wrong -------------------------------------------------

def test_guidance_wrapper_errors():
    x, s = torch.randn(2, 3), torch.full((2,), 0.5)
    labels = torch.tensor([1, 2])
    tup = ClassifierFreeGuidance(lambda x, s, labels: (x, x), 2.0, {"labels": torch.tensor(0)})
    with pytest.raises(TypeError, match="returned tuple, expected a tensor of shape \\(4, 3\\)"):
        tup(x, s, labels=labels)
    short = ClassifierFreeGuidance(lambda x, s, labels: x[:2], 2.0, {"labels": torch.tensor(0)})
    with pytest.raises(ValueError, match="returned shape \\(2, 3\\) for 4 rows"):
        short(x, s, labels=labels)
    bad = ClassifierFreeGuidance(lambda x, s, labels: x, 2.0, {"labels": torch.zeros(5)})
    with pytest.raises(ValueError, match="uncond\\['labels'\\] of shape \\(5,\\) does not broadcast"):
        bad(x, s, labels=labels)
    with pytest.raises(ValueError, match="guidance needs the conditioning kwargs \\['labels'\\]"):
        tup(x, s)
    with pytest.raises(ValueError, match="guidance scale must be a finite number"):
        ClassifierFreeGuidance(lambda x, s: x, float("nan"), {})


def test_guidance_shared_kwarg_is_not_doubled():
    seen = {}

    def model(x, s, labels, table):
        seen["table"] = table.shape
        return x

    g = ClassifierFreeGuidance(model, 2.0, {"labels": torch.tensor(0)}, shared=["table"])
    g(torch.randn(2, 3), torch.full((2,), 0.5), labels=torch.tensor([1, 2]), table=torch.zeros(2, 7))
    assert seen["table"] == (2, 7)


# ---- 7. defaults ---------------------------------------------------------------------------------

def test_default_acceptance_test_is_the_swept_one():
    assert AcceptanceTest() == AcceptanceTest("x0_rms", 0.3)


@pytest.mark.slow
def test_tiny_pipeline_argument_errors_and_default_is_a_speedup():
    from sdsv.tiny.pipeline import TinyPipeline
    pipe = TinyPipeline.from_pretrained(names=["target", "svd"])
    with pytest.raises(ValueError, match="no prompts given"):
        pipe([])
    with pytest.raises(ValueError, match="num_steps=30 but the policy 'paper_default' has 50 steps"):
        pipe("a red circle", num_steps=30, policy=StagePlan.paper_default(50))
    # the defaults (the faithful self-draft's error-controlled windows) spend fewer target rows than target-only
    out = pipe(["a red circle", "a blue square"])
    assert out.stats.target_evals < 2 * 50 and {w.kind for w in out.stats.windows} == {"unverified"}
    # the paper's plan with the trained svd draft and the default test, too
    svd = pipe(["a red circle", "a blue square"], draft="svd")
    assert svd.stats.target_evals < 2 * 50 and svd.stats.acceptance_rate > 0.8


# ---- 2. models that write into their inputs -----------------------------------------------------

class InPlace:
    """Computes its output, then scribbles over its arguments."""

    def __init__(self, inner, pure=False):
        self.inner = inner
        if pure:
            self.sdsv_pure = True

    def __call__(self, x, sigma):
        v = self.inner(x, sigma)
        x.mul_(3.0)
        sigma.fill_(0.123)
        return v


@pytest.mark.parametrize("verify", ["endpoints", "full"])
@pytest.mark.parametrize("solver", ["euler", "dpm++2m"])
def test_models_writing_into_their_inputs_change_nothing(verify, solver):
    target, draft = RowwiseDenoiser(), RowwiseDenoiser(bias=0.01)
    noise, sig = torch.randn(2, 3, 4), flow_match_sigmas(20)
    plan = StagePlan.paper_default(20)
    exact = AcceptanceTest("rel_l2", 0.0)
    ref = sample(target, draft, noise, sig, plan, verify=verify, accept=exact, solver=solver)
    bad = sample(InPlace(target), InPlace(draft), noise, sig, plan, verify=verify, accept=exact, solver=solver)
    assert torch.equal(bad.latents, ref.latents)
    loose = AcceptanceTest("x0_rms", 0.3)
    ref = sample(target, draft, noise, sig, plan, verify=verify, accept=loose, solver=solver)
    bad = sample(InPlace(target), InPlace(draft), noise, sig, plan, verify=verify, accept=loose, solver=solver)
    assert [w.accepted for w in bad.stats.windows] == [w.accepted for w in ref.stats.windows]
    torch.testing.assert_close(bad.latents, ref.latents, atol=0, rtol=0)
    from multistep_oracle import sample_dpm_solver_2m
    torch.testing.assert_close(sample_dpm_solver_2m(InPlace(target), noise, sig).latents,
                               sample_dpm_solver_2m(target, noise, sig).latents, atol=0, rtol=0)


def test_a_model_that_declares_itself_pure_gets_the_buffers():
    """The opt-out is real: sdsv_pure = True skips the copies (so a lying model is on its own)."""
    target = RowwiseDenoiser()
    noise, sig = torch.randn(2, 4), flow_match_sigmas(10)
    ref = sample(target, None, noise, sig, StagePlan.target_only(10))
    liar = sample(InPlace(target, pure=True), None, noise, sig, StagePlan.target_only(10))
    assert not torch.equal(liar.latents, ref.latents)
