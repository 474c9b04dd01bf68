"""The in-window probe: the self-draft computes the first deep block for real at each draft step
and a window ends where that block's forecast misses by more than ``probe_tol``. Invariants: an
impossible probe tolerance changes nothing; a probe that always fires makes every step a target
step; a sample's windows do not depend on its batch mates; bad combinations are refused."""

from __future__ import annotations

import math

import pytest
import torch

import sdsv_kernels
from sdsv import ErrorControlled, SelfDraft, StagePlan, flow_match_sigmas, sample
from sdsv.windows import ProbedUnverified

from toy_models import RowwiseSplit


class ProbedRowwiseSplit(RowwiseSplit):
    """RowwiseSplit whose deep part is two blocks, the first of them the probe (rows independent)."""

    def __init__(self, probe=None, rest=None):
        self.probe = probe or (lambda h, s: torch.tanh(h) * s - 0.1 * h)
        self.rest = rest or (lambda h, s: 0.3 * torch.sin(2 * h) * (1 - s))
        super().__init__(deep=lambda h, s: self._two(h, s)[0])

    def _two(self, h, s):
        h1 = h + self.probe(h, s)
        return h1 + self.rest(h1, s) - h, h1 - h

    def forward_with_probe_residual(self, x, sigma, labels=None):
        s = sigma.view(-1, *([1] * (x.dim() - 1))).to(x.dtype)
        r, r1 = self._two(x, s)
        return self._head(x, x + r, labels), torch.cat([r, r1], dim=-1)

    def forward_with_probe(self, x, sigma, bank, index, coeffs, labels=None):
        s = sigma.view(-1, *([1] * (x.dim() - 1))).to(x.dtype)
        both = sdsv_kernels.gather_combine(torch.cat([x, x], dim=-1), bank, index, coeffs)
        w = x.shape[-1]
        h_deep, h1_hat = both[..., :w], both[..., w:]
        h1 = x + self.probe(x, s)
        err = (h1 - h1_hat).flatten(1).pow(2).mean(1) / (h1_hat - x).flatten(1).pow(2).mean(1).clamp_min(1e-30)
        return self._head(x, h_deep, labels), err.sqrt()


def run(split, policy, noise):
    sig = flow_match_sigmas(policy.num_steps, shift=2.0, dtype=noise.dtype)
    return sample(None, None, noise, sig, policy, self_draft=SelfDraft(split))


def test_an_impossible_probe_tolerance_changes_nothing():
    noise = torch.randn(3, 8, dtype=torch.float64)
    plain = run(ProbedRowwiseSplit(), ErrorControlled(30, tol=0.2, k_max=6), noise)
    probed = run(ProbedRowwiseSplit(), ErrorControlled(30, tol=0.2, k_max=6, probe_tol=1e30), noise)
    assert torch.equal(plain.latents, probed.latents)
    assert [(w.start, w.k) for w in plain.stats.windows] == [(w.start, w.k) for w in probed.stats.windows]


def test_a_probe_that_always_fires_makes_every_step_a_target_step():
    noise = torch.randn(2, 8, dtype=torch.float64)
    ref = run(ProbedRowwiseSplit(), StagePlan.target_only(25), noise)
    r = run(ProbedRowwiseSplit(), ErrorControlled(25, tol=1.0, k_init=4, k_max=8, probe_tol=1e-30), noise)
    assert r.stats.windows and all(w.k == 0 for w in r.stats.windows)
    assert r.stats.target_evals == 2 * 25
    torch.testing.assert_close(r.latents, ref.latents, atol=1e-12, rtol=0)


def test_the_probe_ends_windows_early_and_lets_good_ones_run_long():
    noise = torch.randn(2, 8, dtype=torch.float64)
    loose = run(ProbedRowwiseSplit(), ErrorControlled(40, tol=1.0, k_max=8), noise)
    probed = run(ProbedRowwiseSplit(), ErrorControlled(40, tol=1.0, k_max=8, probe_tol=0.05), noise)
    ks = [w.k for w in probed.stats.windows]
    assert min(ks) < max(ks) and probed.stats.target_evals > loose.stats.target_evals
    ref = run(ProbedRowwiseSplit(), StagePlan.target_only(40), noise)
    err = lambda r: (r.latents - ref.latents).norm().item()  # noqa: E731
    assert err(probed) < err(loose)


def test_a_sample_does_not_depend_on_its_batch_mates():
    noise = torch.randn(3, 8, dtype=torch.float64)
    policy = ErrorControlled(30, tol=0.5, k_max=8, probe_tol=0.05)
    batched = run(ProbedRowwiseSplit(), policy, noise)
    for b in range(3):
        alone = run(ProbedRowwiseSplit(), policy, noise[b:b + 1])
        assert torch.equal(alone.latents, batched.latents[b:b + 1])
        assert [(w.start, w.k) for w in alone.stats.windows] == \
               [(w.start, w.k) for w in batched.stats.windows if w.sample == b]


def test_probing_needs_a_self_draft_whose_split_computes_the_probe():
    noise = torch.randn(1, 8, dtype=torch.float64)
    policy = ErrorControlled(10, probe_tol=0.1)
    with pytest.raises(TypeError, match="has no forward_with_probe"):
        run(RowwiseSplit(), policy, noise)
    with pytest.raises(TypeError, match="needs a self_draft"):
        sample(lambda x, s: x, lambda x, s: x, noise, flow_match_sigmas(10), policy)
    with pytest.raises(ValueError, match="probe_tol"):
        ErrorControlled(10, probe_tol=0)
    assert "probe<=0.1" in policy.describe() and policy.probes and not ErrorControlled(10).probes


def test_the_window_ends_at_the_level_whose_forecast_misses():
    cls = ProbedUnverified.with_tolerance(0.1)
    w = cls(sample=0, start=5, k=4)
    assert (w.levels, w.rolls, tuple(w.verify_rows)) == (5, 4, (4,))
    w.after_draft(0, 0.05)
    w.after_draft(1, 0.2)  # y_1's forecast misses: y_1 gets the target
    assert (w.k, w.levels, w.rolls, tuple(w.verify_rows)) == (1, 2, 1, (1,))
    nan = cls(sample=0, start=5, k=3)
    nan.after_draft(2, math.nan)
    assert nan.k == 2
    last = cls(sample=0, start=5, k=3)
    last.after_draft(3, 9.0)  # the closing state: nothing left to end
    assert last.k == 3 and cls.probe_tol == 0.1 and ProbedUnverified.probe_tol == math.inf


def test_a_probed_window_from_a_policy_that_does_not_probe_is_refused():
    from sdsv import PolicyState, WindowPolicy

    class NamesProbed(WindowPolicy):
        num_steps, name = 6, "names-probed"

        def start(self, batch):
            class State(PolicyState):
                def window(self, sample, step):
                    return ("target", 0) if step < 2 else ("probed", 1)
            return State()

        def describe(self):
            return self.name

    with pytest.raises(ValueError, match="names a 'probed' window but does not probe"):
        run(ProbedRowwiseSplit(), NamesProbed(), torch.randn(1, 8, dtype=torch.float64))
