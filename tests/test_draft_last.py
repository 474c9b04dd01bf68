"""``ErrorControlled(draft_last=n)``: the last ``n`` steps are the draft's alone (its forecast, no
target evaluation closes them), and the windows end before them; the faithful default drafts its
last step."""

import pytest
import torch

from sdsv import ErrorControlled, SelfDraft, StagePlan, flow_match_sigmas, sample
from sdsv.forecast import NewtonForecast
from sdsv.policies.error_controlled import FAITHFUL_DRAFT_LAST

from toy_models import RowwiseSplit


def run(sd, policy, noise, **kw):
    return sample(None, None, noise, flow_match_sigmas(policy.num_steps, shift=2.0, dtype=noise.dtype), policy,
                  self_draft=sd, **kw)


def quadratic_in_sigma(h, s):
    return (0.3 - 0.7 * s + 0.9 * s * s).expand_as(h)


@pytest.mark.parametrize("draft_last", [1, 2, 3])
@pytest.mark.parametrize("correct", [False, True])
def test_the_last_steps_are_the_drafts_and_the_windows_end_before_them(draft_last, correct):
    split = RowwiseSplit()
    noise = torch.randn(2, 6, dtype=torch.float64)
    n = 30
    r = run(SelfDraft(split), ErrorControlled(n, tol=0.05, correct=correct, draft_last=draft_last), noise)
    windows = r.stats.windows
    assert windows and all(w.start + w.k <= n - draft_last - 1 for w in windows)
    assert max(w.start + w.k for w in windows) == n - draft_last - 1  # the last window closes just before them
    # every step before them is the target's or a window's; the last draft_last are one draft row each
    assert r.stats.target_evals == sum(split.residual_calls) == 2 * (n - draft_last) - sum(w.k for w in windows)
    per_window = 2 if correct else 1  # k steps + the closing error (+ the correction's k + 1)
    assert sum(split.forecast_calls) == sum(per_window * (w.k + 1) for w in windows) + 2 * draft_last


def test_with_a_forecast_exact_for_the_residual_the_drafted_last_steps_reproduce_target_only():
    """A deep residual quadratic in sigma: corrected windows interpolate it exactly and the parabola
    through three anchors extrapolates it exactly, so the last steps drafted with it change
    nothing; drafted with the line, they do."""
    split = RowwiseSplit(deep=quadratic_in_sigma)
    noise = torch.randn(3, 5, dtype=torch.float64)
    ref = run(SelfDraft(split), StagePlan.target_only(20), noise)
    policy = ErrorControlled(20, tol=1.0, k_max=6, correct=True, draft_last=3)
    exact = run(SelfDraft(split, forecast=NewtonForecast.of_order(2)), policy, noise)
    torch.testing.assert_close(exact.latents, ref.latents, atol=1e-12, rtol=0)
    line = run(SelfDraft(split, order=1), policy, noise)
    assert (line.latents - ref.latents).abs().max() > 1e-6


def test_a_sample_does_not_depend_on_batch_mates():
    split = RowwiseSplit()
    noise, lab = torch.randn(3, 4, 6), torch.tensor([[i % 8, i % 6] for i in range(3)])
    policy = ErrorControlled.faithful(40)
    batched = run(SelfDraft(split), policy, noise, labels=lab)
    for b in range(3):
        alone = run(SelfDraft(split), policy, noise[b:b + 1], labels=lab[b:b + 1])
        assert torch.equal(alone.latents, batched.latents[b:b + 1])


def test_the_faithful_default_drafts_its_last_step_when_it_has_one_to_spare():
    for n, (uses_draft, corrects, last) in {1: (False, False, 0), 2: (False, False, 0), 3: (True, False, 1),
                                            4: (True, False, 1), 5: (True, True, 1), 50: (True, True, FAITHFUL_DRAFT_LAST)}.items():
        p = ErrorControlled.faithful(n)
        assert (p.uses_draft, p.corrects, p.draft_last) == (uses_draft, corrects, last), n
    # three steps: two warm-up target steps, then the draft's; it samples like that
    split = RowwiseSplit()
    r = run(SelfDraft(split), ErrorControlled.faithful(3), torch.randn(1, 4, dtype=torch.float64))
    assert (r.stats.target_evals, split.forecast_calls, r.stats.windows) == (2, [1], [])
    assert "last 1 draft" in ErrorControlled.faithful(50).describe()


@pytest.mark.parametrize("kw, match", [
    (dict(draft_last=-1), "draft_last"),
    (dict(draft_last=1.5), "draft_last"),
    (dict(draft_last=True), "draft_last"),
    (dict(draft_last=9, warmup=2), r"warmup \(2\) \+ draft_last \(9\) must be <= num_steps"),
])
def test_bad_draft_last_is_refused(kw, match):
    with pytest.raises((TypeError, ValueError), match=match):
        ErrorControlled(10, **kw)


def test_a_policy_of_warm_up_and_drafted_steps_only_samples():
    split = RowwiseSplit()
    r = run(SelfDraft(split), ErrorControlled(6, warmup=2, draft_last=4), torch.randn(2, 3, dtype=torch.float64))
    assert r.stats.target_evals == 2 * 2 and sum(split.forecast_calls) == 4 * 2 and not r.stats.windows
