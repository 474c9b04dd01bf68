"""Contract of ``sdsv.sample``: counts, invariants, per-sample independence, window rules."""

import pytest
import torch

import sdsv
from sdsv import AcceptanceTest, StagePlan, flow_match_sigmas, sample

from toy_models import RowwiseDenoiser, random_dit

EXACT = AcceptanceTest("rel_l2", 0.0)         # impossible for any draft that differs at all
LOOSE = AcceptanceTest("rel_l2", 1e-3)        # passes a draft identical to the target


def dit_fn(model):
    return lambda x, sigma, labels: model(x, sigma, labels)


@pytest.fixture(scope="module")
def dit():
    return random_dit()


def labels_for(b):
    return torch.tensor([[i % 8, i % 6] for i in range(b)])


@pytest.mark.parametrize("verify,calls,tevals,devals", [("endpoints", 8, 14, 48), ("full", 8, 50, 42)])
def test_counts_paper_default_identical_draft(dit, verify, calls, tevals, devals):
    f = dit_fn(dit)
    with torch.no_grad():
        r = sample(f, f, torch.randn(1, 3, 32, 32), flow_match_sigmas(50), StagePlan.paper_default(50),
                   verify=verify, accept=LOOSE, labels=labels_for(1))
    s = r.stats
    assert (s.target_calls, s.target_evals, s.draft_evals) == (calls, tevals, devals)
    assert s.acceptance_rate == 1.0 and all(w.accepted == w.k for w in s.windows)
    assert [w.start for w in s.windows] == [2, 6, 10, 20, 30, 40]
    assert [w.k for w in s.windows] == [3, 3, 9, 9, 9, 9]


@pytest.mark.parametrize("verify", ["endpoints", "full"])
@pytest.mark.parametrize("plan", ["paper_default", "fast", "slow", "minimal_warmup", "conservative_warmup"])
def test_identical_draft_accepts_all_and_matches_target_only(dit, verify, plan):
    f = dit_fn(dit)
    noise, sig, lab = torch.randn(2, 3, 32, 32), flow_match_sigmas(30, shift=3.0), labels_for(2)
    with torch.no_grad():
        ref = sample(f, None, noise, sig, StagePlan.target_only(30), labels=lab)
        r = sample(f, f, noise, sig, getattr(StagePlan, plan)(30), verify=verify, accept=LOOSE, labels=lab)
    assert r.stats.windows and all(w.accepted == w.k for w in r.stats.windows)
    torch.testing.assert_close(r.latents, ref.latents, atol=2e-5, rtol=1e-5)
    assert ref.stats.target_calls == 30 and r.stats.target_calls < 30


@pytest.mark.parametrize("verify", ["endpoints", "full"])
def test_impossible_threshold_reproduces_target_only_exactly(verify):
    target, draft = RowwiseDenoiser(), RowwiseDenoiser(bias=0.01)
    noise, sig, lab = torch.randn(3, 4, 5, 6), flow_match_sigmas(50), labels_for(3)
    ref = sample(target, None, noise, sig, StagePlan.target_only(50), labels=lab)
    r = sample(target, draft, noise, sig, StagePlan.paper_default(50), verify=verify, accept=EXACT, labels=lab)
    assert all(w.accepted == 0 for w in r.stats.windows)
    assert torch.equal(r.latents, ref.latents)
    # every rejected window still advanced one (target) step
    assert r.stats.target_calls == 50


def test_target_only_plan_is_plain_euler():
    target = RowwiseDenoiser()
    noise, sig = torch.randn(2, 3, 4, 4, dtype=torch.float64), flow_match_sigmas(12, shift=2.0, dtype=torch.float64)
    x = noise.clone()
    for i in range(12):
        x = x + (sig[i + 1] - sig[i]) * target(x, sig[i].expand(2))
    r = sample(target, None, noise, sig, StagePlan.target_only(12))
    torch.testing.assert_close(r.latents, x, atol=1e-12, rtol=0)


def test_per_sample_independence_with_mixed_decisions(dit):
    """A sample's result and decisions do not depend on its batch mates."""
    target = dit_fn(dit)
    other = random_dit(seed=1)
    draft = lambda x, s, labels: 0.9 * target(x, s, labels) + 0.1 * other(x, s, labels)
    noise, sig, lab = torch.randn(3, 3, 32, 32), flow_match_sigmas(40), labels_for(3)
    acc = AcceptanceTest("x0_rms", 0.004)
    with torch.no_grad():
        batched = sample(target, draft, noise, sig, StagePlan.paper_default(40), accept=acc, labels=lab)
        alone = [sample(target, draft, noise[b : b + 1], sig, StagePlan.paper_default(40), accept=acc, labels=lab[b : b + 1])
                 for b in range(3)]
    decisions = {(w.sample, w.start, w.accepted) for w in batched.stats.windows}
    for b, r in enumerate(alone):
        torch.testing.assert_close(batched.latents[b : b + 1], r.latents, atol=1e-4, rtol=1e-4)
        assert {(b, w.start, w.accepted) for w in r.stats.windows} <= decisions
    accepted = [w.accepted for w in batched.stats.windows]
    assert 0 in accepted and any(a > 0 for a in accepted), "test needs both accepted and rejected windows"
    # one verification call per round serves all samples
    assert batched.stats.target_calls < sum(r.stats.target_calls for r in alone)


@pytest.mark.parametrize("verify", ["endpoints", "full"])
def test_window_rules(verify):
    """Windows never cross a stage boundary or the end; accepted counts follow the mode's rule."""
    target, draft = RowwiseDenoiser(), RowwiseDenoiser(bias=0.02, bad_below=0.4)
    plan = StagePlan(37, 3, 11, 4, 7)
    acc = AcceptanceTest("rel_l2", 0.01)
    r = sample(target, draft, torch.randn(2, 8), flow_match_sigmas(37), plan, verify=verify, accept=acc)
    bounds = [(s.start, s.end) for s in plan.segments() if s.kind == "speculate"]
    for w in r.stats.windows:
        assert any(lo <= w.start and w.start + w.k + 1 <= hi for lo, hi in bounds), w
        tested = w.metric if verify == "endpoints" else w.metric[: w.k]
        passes = [v <= acc.tau for v in tested]
        if verify == "endpoints":
            assert w.accepted == (w.k if all(passes) else 0)
        else:
            first_fail = next((j for j, p in enumerate(passes) if not p), w.k)
            assert w.accepted == first_fail
    assert any(w.accepted == 0 for w in r.stats.windows) and any(w.accepted > 0 for w in r.stats.windows)
    if verify == "full":
        assert any(0 < w.accepted < w.k for w in r.stats.windows), "full mode should accept partial prefixes"


def test_baseline_plans_counts():
    target, draft = RowwiseDenoiser(), RowwiseDenoiser(bias=0.1)
    noise, sig = torch.randn(1, 6), flow_match_sigmas(50)
    r = sample(target, draft, noise, sig, StagePlan.improved_draft(50))
    assert (r.stats.target_calls, r.stats.draft_evals) == (5, 45)
    r = sample(None, draft, noise, sig, StagePlan.draft_only(50))
    assert (r.stats.target_calls, r.stats.draft_evals) == (0, 50)


def test_progress_bar_runs(capsys):
    target = RowwiseDenoiser()
    sample(target, target, torch.randn(1, 4), flow_match_sigmas(10), StagePlan.paper_default(10), progress=True)
    assert "sdsv" in capsys.readouterr().err


def test_guidance_wrapper_one_forward():
    calls = []

    def model(x, sigma, labels):
        calls.append(x.shape[0])
        return x * labels[:, :1].float() + sigma[:, None]

    cfg = sdsv.ClassifierFreeGuidance(model, 4.0, {"labels": torch.tensor([0, 0])})
    x, s, lab = torch.randn(3, 5), torch.rand(3), torch.tensor([[2, 1], [3, 1], [1, 1]])
    v = cfg(x, s, labels=lab)
    c, u = model(x, s, lab), model(x, s, torch.zeros_like(lab))
    torch.testing.assert_close(v, u + 4.0 * (c - u))
    assert calls[0] == 6


def test_explicit_per_sample_conditioning():
    """A shared tensor whose length happens to equal the batch is left alone when named so."""
    seen = []

    def model(x, sigma, labels, shared):
        seen.append(shared.shape[0])
        return x * 0.1 + labels[:, :1].float()

    noise, lab, shared = torch.randn(2, 4), labels_for(2), torch.arange(2.0)
    sample(model, model, noise, flow_match_sigmas(10), StagePlan.paper_default(10), labels=lab, shared=shared,
           per_sample=["labels"])
    assert set(seen) == {2}
    seen.clear()  # the heuristic would have taken `shared` for per-sample and gathered it per row
    sample(model, model, noise, flow_match_sigmas(10), StagePlan.paper_default(10), labels=lab, shared=shared)
    assert max(seen) > 2
    with pytest.raises(ValueError, match="per-sample conditioning 'shared'"):
        sample(model, None, noise, flow_match_sigmas(3), StagePlan.target_only(3), labels=lab, shared=torch.ones(3),
               per_sample=["labels", "shared"])
