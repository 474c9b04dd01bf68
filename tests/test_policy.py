"""Window policies: the fixed interval, the error controller, and how the sampler executes them."""

import math

import pytest
import torch

from sdsv import ErrorControlled, FixedInterval, StagePlan, flow_match_sigmas, next_window_length, sample
from sdsv.policies import PolicyState, WindowPolicy

from toy_models import RowwiseDenoiser


@pytest.mark.parametrize("k,error,want", [
    (4, 0.05, 4),            # error == tol: (k+1) * 0.9 = 4.5 -> round 4 -> k' = 4 - 1... see below
    (4, 0.0, 8),             # no error: grow 2x, capped by k_max
    (4, 10.0, 1),            # far too large: shrink by at most 2x -> round(2.5) - 1 = 1
    (2, float("nan"), 1),    # a broken draft: k_min
])
def test_next_window_length_table(k, error, want):
    got = next_window_length(k, error, tol=0.05, order=1, k_min=1, k_max=8)
    if error == 0.05:
        want = round((k + 1) * 0.9) - 1
    assert got == want


def test_next_window_length_is_monotone_in_the_error():
    ks = [next_window_length(3, e, 0.1, 1, 1, 10) for e in (0.001, 0.01, 0.05, 0.1, 0.2, 1.0)]
    assert ks == sorted(ks, reverse=True) and ks[0] > ks[-1]
    # a higher order shrinks less for the same excess error (error grows faster with the horizon)
    assert next_window_length(5, 0.4, 0.1, 2, 1, 10) >= next_window_length(5, 0.4, 0.1, 0, 1, 10)


def test_fixed_interval_windows_and_counts():
    p = FixedInterval(20, every=3, warmup=2)
    assert [p.window_at(s) for s in (0, 1, 2)] == [("target", 0), ("target", 0), ("unverified", 2)]
    assert p.window_at(18) == ("unverified", 1) and p.window_at(19) == ("target", 0)
    target = RowwiseDenoiser()
    draft = RowwiseDenoiser(bias=0.01)
    r = sample(target, draft, torch.randn(2, 5), flow_match_sigmas(20), p)
    # 2 warm-up steps, then 18 steps in windows of 3 = 6 windows, each closing with one target row
    assert r.stats.target_calls == 8 and r.stats.unverified_windows == 12
    assert r.stats.draft_evals == 12 * 2  # k = 2 draft rows a window; no closing draft call without a controller
    assert math.isnan(r.stats.acceptance_rate)  # nothing verified


def test_error_controlled_adapts_per_sample_and_rejects():
    target = RowwiseDenoiser()
    # one good sample, one whose draft goes wrong at low sigma (a per-sample bias through labels)
    draft = lambda x, s, labels: target(x, s, labels) + 0.3 * labels[:, :1].view(-1, 1).float() * (s.view(-1, 1) < 0.5)
    labels = torch.tensor([[0, 0], [1, 0]])
    plan = ErrorControlled(40, tol=0.02, k_max=6, reject_above=0.1)
    r = sample(target, draft, torch.randn(2, 6), flow_match_sigmas(40), plan, labels=labels)
    good = [w for w in r.stats.windows if w.sample == 0]
    bad = [w for w in r.stats.windows if w.sample == 1]
    assert max(w.k for w in good) == 6 and all(w.accepted == w.k for w in good)
    assert any(w.accepted == 0 for w in bad), "the biased sample must see rejected windows"
    for a, b in zip(bad, bad[1:]):  # a rejected window is redone from the same step, shorter
        if a.accepted == 0 and a.k > 1:
            assert b.start == a.start and b.k < a.k
        elif a.accepted == 0:  # k = 1 rejected: a plain target step, then windows again
            assert b.start == a.start + 1


def test_policies_check_their_arguments():
    with pytest.raises(ValueError, match="every"):
        FixedInterval(10, every=0)
    with pytest.raises(ValueError, match="warmup"):
        FixedInterval(10, warmup=11)
    with pytest.raises(ValueError, match="tol"):
        ErrorControlled(10, tol=0)
    with pytest.raises(ValueError, match="k_min"):
        ErrorControlled(10, k_min=3, k_init=2)
    with pytest.raises(ValueError, match="error_metric"):
        ErrorControlled(10, error_metric="cosine")
    with pytest.raises(TypeError, match="window policy"):
        sample(RowwiseDenoiser(), None, torch.randn(1, 3), flow_match_sigmas(3), "target_only")


def test_a_policy_giving_an_impossible_window_is_named():
    class Bad(WindowPolicy):
        num_steps = 5

        def start(self, batch):
            run = PolicyState()
            run.window = lambda b, step: ("unverified", 9)
            return run

    with pytest.raises(ValueError, match="window \\('unverified', 9\\)"):
        sample(RowwiseDenoiser(), RowwiseDenoiser(), torch.randn(1, 3), flow_match_sigmas(5), Bad())


def test_stage_plan_is_a_stateless_policy():
    p = StagePlan.paper_default(50)
    run = p.start(3)
    assert run.window(2, 0) == p.window_at(0) and run.window(0, 12) == p.window_at(12)
    assert run.observe(0, 12, "speculate", 9, 0, float("nan")) is True


def test_summary_names_unverified_windows():
    target = RowwiseDenoiser()
    r = sample(target, RowwiseDenoiser(bias=0.01), torch.randn(1, 4), flow_match_sigmas(12), FixedInterval(12, every=3))
    text = r.stats.summary()
    assert "unverified windows (0 rejected)" in text and "nan" not in text


def test_sample_needs_a_window_policy():
    target, noise, sig = RowwiseDenoiser(), torch.randn(2, 3), flow_match_sigmas(6)
    with pytest.raises(TypeError, match="window policy"):
        sample(target, None, noise, sig)


def test_a_new_window_kind_plugs_in_without_a_name():
    """A policy may name a Window class of its own; the loop runs it like the built-in kinds."""
    from sdsv.policies import StatelessState
    from sdsv.windows import TargetStep

    seen = []

    class CountedTargetStep(TargetStep):
        def commit(self, verdict, state, records):
            seen.append((self.sample, self.start))
            return super().commit(verdict, state, records)

    class EveryStepCounted(WindowPolicy):
        num_steps, name = 6, "counted"

        @property
        def uses_draft(self):
            return False

        def start(self, batch):
            return StatelessState(lambda step: (CountedTargetStep, 0))

    target, noise, sig = RowwiseDenoiser(), torch.randn(2, 3), flow_match_sigmas(6)
    r = sample(target, None, noise, sig, EveryStepCounted())
    assert torch.equal(r.latents, sample(target, None, noise, sig, StagePlan.target_only(6)).latents)
    assert sorted(seen) == [(b, s) for b in range(2) for s in range(6)]
