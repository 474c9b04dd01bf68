"""benchmarks/tail_study.py's a-priori error estimates (measured in docs/tail.md). The forecast
gap: zero where the deep residual is linear in sigma, the order-2 correction where it is
quadratic. The transfer rate: the residual's move per unit of its input's move between the last
two anchors, times the input's move since the last one."""

import importlib.util
import math
import sys
import types
from pathlib import Path

import pytest
import torch

from sdsv.forecast.anchors import AnchorBank
from sdsv.forecast.forecasts import NewtonForecast

_spec = importlib.util.spec_from_file_location("tail_study", Path(__file__).parents[1] / "benchmarks" / "tail_study.py")
tail_study = importlib.util.module_from_spec(_spec)
sys.modules.setdefault("tail_study", tail_study)  # its dataclasses look their module up by name
_spec.loader.exec_module(tail_study)

WIDTH = 4


def _bank_with(residual, sigmas, branches=1, h_in=lambda s, b: torch.zeros(1, WIDTH)):
    """Anchors at ``sigmas`` as the benchmark's split keeps them: ``[residual, h_in]``."""
    bank = AnchorBank(batch=1, forecast=NewtonForecast.of_order(1), slots=3)
    for s in sigmas:
        bank.tag([0], [s])
        bank.record(torch.cat([torch.cat([residual(s, b), h_in(s, b)], dim=-1) for b in range(branches)]))
        bank.commit([0])
    return bank


def _h(rows=1):
    """What the estimates read of the split: the draft call's own deep-block input."""
    return types.SimpleNamespace(last_h=torch.zeros(rows, WIDTH))


def test_the_gap_is_zero_on_a_linear_residual():
    bank = _bank_with(lambda s, b: torch.tensor([[1.0, 2.0, -1.0, 0.5]]) * (2 - s), [0.9, 0.8, 0.7])
    bank.tag([0], [0.5])
    assert tail_study.forecast_gaps(bank, 1, _h()) == [pytest.approx(0.0, abs=1e-6)]  # float32 anchors


def test_the_gap_is_the_second_order_term_on_a_quadratic_residual():
    c = torch.tensor([[1.0, -2.0, 3.0, 0.25]])
    f = lambda s, b: c * (1 + s + (b + 1) * s * s)  # noqa: E731 - the second branch curves twice as much
    bank = _bank_with(f, [0.9, 0.8, 0.7], branches=2)
    at = 0.5
    bank.tag([0], [at])
    gaps = tail_study.forecast_gaps(bank, 2, _h(2))
    for branch, gap in enumerate(gaps):
        k = branch + 1
        linear = 1 + at + k * (0.8 + 0.7) * at - k * 0.8 * 0.7  # the line through sigma 0.8 and 0.7
        want = abs(k * (at - 0.8) * (at - 0.7)) / abs(linear)
        assert gap == pytest.approx(want, rel=1e-5)
    assert gaps[1] > gaps[0]


def test_no_gap_before_three_anchors():
    bank = _bank_with(lambda s, b: torch.ones(1, WIDTH) * s, [0.9, 0.8])
    bank.tag([0], [0.6])
    assert tail_study.forecast_gaps(bank, 1, _h()) == [0.0]


def test_the_transfer_rate_of_a_residual_linear_in_its_input():
    direction = torch.tensor([[1.0, -1.0, 2.0, 0.5]])
    h_in = lambda s, b: direction * (1 + s)  # noqa: E731
    residual = lambda s, b: 3.0 * h_in(s, b) + 1.0  # noqa: E731 - moves 3x as far as its input
    bank = _bank_with(residual, [0.9, 0.8], h_in=h_in)
    bank.tag([0], [0.6])
    h_now = direction * 1.6
    want = 3.0 * float((h_now - direction * 1.8).pow(2).mean().sqrt()) / float(residual(0.8, 0).pow(2).mean().sqrt())
    assert tail_study.transfer_rates(bank, 1, types.SimpleNamespace(last_h=h_now)) == [pytest.approx(want, rel=1e-5)]
    # an input that has not moved since the last anchor: no change is predicted
    assert tail_study.transfer_rates(bank, 1, types.SimpleNamespace(last_h=direction * 1.8)) == [pytest.approx(0.0, abs=1e-6)]


def test_no_transfer_rate_before_two_anchors():
    bank = _bank_with(lambda s, b: torch.ones(1, WIDTH) * s, [0.9], h_in=lambda s, b: torch.ones(1, WIDTH))
    bank.tag([0], [0.6])
    assert tail_study.transfer_rates(bank, 1, _h()) == [0.0]


def _two_anchor_bank(forward, x, labels, sigmas=(0.9, 0.8)):
    bank = AnchorBank(batch=x.shape[0], forecast=NewtonForecast.of_order(1), slots=3)
    for s in sigmas:
        bank.tag(list(range(x.shape[0])), [s] * x.shape[0])
        bank.record(forward(x * s, torch.full((x.shape[0],), s), labels)[1])
        bank.commit(list(range(x.shape[0])))
    bank.tag(list(range(x.shape[0])), [0.6] * x.shape[0])
    return bank


class FirstBlockProbe:
    """The in-window probe as the sampler had it (its oracle here): the target keeps the deep
    residual and the first deep block's own residual, ``[r_deep, r_block0]``; at a draft step the
    first deep block runs for real on its exact input and is compared with its forecast,
    ``rms(real - forecast) / rms(forecast residual)``."""

    def __init__(self, split):
        self.split = split

    def forward_with_residual(self, x, sigma, labels):
        s = self.split
        h_in, cond, mod = s._enter(x, sigma, labels, None)
        h = h_probe = s.deep[0](h_in, mod)
        for blk in s.deep[1:]:
            h = blk(h, mod)
        return s._leave(h, cond, mod), torch.cat([h - h_in, h_probe - h_in], dim=-1)

    def error(self, x, sigma, bank, index, coeffs, labels):
        import sdsv_kernels

        h_in, _, mod = self.split._enter(x, sigma, labels, None)
        width = h_in.shape[-1]
        h_hat = sdsv_kernels.gather_combine(torch.cat([h_in, h_in], dim=-1), bank, index, coeffs)[..., width:]
        err = (self.split.deep[0](h_in, mod) - h_hat).flatten(1).pow(2).mean(1)
        return (err / (h_hat - h_in).flatten(1).pow(2).mean(1).clamp_min(1e-30)).sqrt()


def test_the_probe_at_depth_0_is_the_first_blocks_probe_and_the_draft_is_unchanged():
    from sdsv.tiny.model import TinyDiT, TinyDiTConfig
    from sdsv.tiny.split import TinyDiTSplit

    torch.manual_seed(0)
    model = TinyDiT(TinyDiTConfig(dim=32, depth=3, heads=2)).eval()
    with torch.no_grad():  # its zero-initialised gates would make every block the identity
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    split = TinyDiTSplit(model)
    x, labels, sigma = torch.randn(2, 3, 32, 32), torch.tensor([[0, 1], [2, 3]]), torch.full((2,), 0.6)
    with torch.inference_mode():
        plain = _two_anchor_bank(split.forward_with_residual, x, labels)
        want_v = split.forward_with_forecast(x, sigma, *plain.forecast_args(2, "cpu"), labels)
        oracle = FirstBlockProbe(split)
        both = _two_anchor_bank(oracle.forward_with_residual, x, labels)
        want_err = oracle.error(x, sigma, *both.forecast_args(2, "cpu"), labels)
        for depth in range(3):
            probe = tail_study.DepthProbeSplit(split, depth)
            bank = _two_anchor_bank(probe.forward_with_residual, x, labels)
            v = probe.forward_with_forecast(x, sigma, *bank.forecast_args(2, "cpu"), labels)
            torch.testing.assert_close(v, want_v, rtol=1e-5, atol=1e-6)
            if depth == 0:
                torch.testing.assert_close(probe.last_probe, want_err, rtol=1e-4, atol=1e-6)
            assert probe.last_probe.shape == (2,) and bool((probe.last_probe > 0).all())
        # every block computed from block 0 on: the draft is the target
        rest = tail_study.DepthProbeSplit(split, 0, finish="rest")
        bank = _two_anchor_bank(rest.forward_with_residual, x, labels)
        v = rest.forward_with_forecast(x, sigma, *bank.forecast_args(2, "cpu"), labels)
        torch.testing.assert_close(v, model(x, sigma, labels), rtol=1e-5, atol=1e-6)


def test_the_gated_grain_target_is_the_target_and_its_forecast_uses_the_new_sigmas_gates():
    """GatedOutputsSplit (the forecast at diffusers' TaylorSeer grain): the target call is the
    model's own forward; with the gates held at the anchors' it forecasts what the whole residual's
    line forecasts (the forecast is linear); at the draft's own sigma the gates, and so the
    velocity, differ."""
    from sdsv.tiny.model import TinyDiT, TinyDiTConfig
    from sdsv.tiny.split import TinyDiTSplit

    torch.manual_seed(0)
    model = TinyDiT(TinyDiTConfig(dim=32, depth=3, heads=2)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    split = TinyDiTSplit(model)
    gated = tail_study.GatedOutputsSplit(split)
    x, labels, sigma = torch.randn(2, 3, 32, 32), torch.tensor([[0, 1], [2, 3]]), torch.full((2,), 0.6)
    with torch.inference_mode():
        v, parts = gated.forward_with_residual(x, sigma, labels)
        torch.testing.assert_close(v, model(x, sigma, labels), rtol=0, atol=0)
        assert parts.shape == (2, 3, 2, 66, 32)
        plain = _two_anchor_bank(split.forward_with_residual, x, labels)
        whole = split.forward_with_forecast(x, sigma, *plain.forecast_args(2, "cpu"), labels)
        bank = _two_anchor_bank(gated.forward_with_residual, x, labels)
        exact = gated.forward_with_forecast(x, sigma, *bank.forecast_args(2, "cpu"), labels)
        model.ada.bias.mul_(0)  # gates that do not depend on sigma: both grains forecast alike
        model.ada.weight.mul_(0)
        plain = _two_anchor_bank(split.forward_with_residual, x, labels)
        bank = _two_anchor_bank(gated.forward_with_residual, x, labels)
        torch.testing.assert_close(gated.forward_with_forecast(x, sigma, *bank.forecast_args(2, "cpu"), labels),
                                   split.forward_with_forecast(x, sigma, *plain.forecast_args(2, "cpu"), labels),
                                   rtol=1e-5, atol=1e-6)
    assert (exact - whole).abs().max() > 1e-4

def test_the_output_forecast_records_the_velocity_and_drafts_it_without_the_model():
    """OutputSplit (TaylorSeer's lite mode): the target is the model and records its velocity; a
    draft runs nothing of the model and returns the line through the recorded velocities."""
    from sdsv.tiny.model import TinyDiT, TinyDiTConfig
    from sdsv.tiny.split import TinyDiTSplit

    torch.manual_seed(0)
    model = TinyDiT(TinyDiTConfig(dim=32, depth=3, heads=2)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    out = tail_study.OutputSplit(TinyDiTSplit(model))
    x, labels, sigma = torch.randn(2, 3, 32, 32), torch.tensor([[0, 1], [2, 3]]), torch.full((2,), 0.6)
    with torch.inference_mode():
        v, recorded = out.forward_with_residual(x, sigma, labels)
        torch.testing.assert_close(v, model(x, sigma, labels), rtol=0, atol=0)
        torch.testing.assert_close(recorded, v, rtol=0, atol=0)
        recorder = types.SimpleNamespace(forward_with_residual=lambda x, s, labels: (None, x * (1 + 2 * s.view(-1, 1, 1, 1))))
        bank = _two_anchor_bank(recorder.forward_with_residual, x, labels)  # anchors at sigma 0.9 and 0.8
        drafted = out.forward_with_forecast(x * 0.6, sigma, *bank.forecast_args(2, "cpu"), labels)
        elsewhere = out.forward_with_forecast(torch.randn_like(x), sigma, *bank.forecast_args(2, "cpu"), labels)
    torch.testing.assert_close(elsewhere, drafted, rtol=0, atol=0)  # the model is not run: its input does not matter
    a, b = x * 0.9 * 2.8, x * 0.8 * 2.6  # _two_anchor_bank records forward(x * s, s): x s (1 + 2 s)
    torch.testing.assert_close(drafted, a + (0.6 - 0.9) / (0.8 - 0.9) * (b - a), rtol=1e-5, atol=1e-5)

# ---- windows limited by an in-window estimate (the probe's mechanism, kept in the benchmark) ----
def _limited_run(policy, noise, estimate=lambda bank, rows, split: [1.0] * rows):
    from sdsv import flow_match_sigmas, sample
    from toy_models import RowwiseSplit

    sig = flow_match_sigmas(policy.num_steps, shift=2.0, dtype=noise.dtype)
    return sample(None, None, noise, sig, policy, self_draft=tail_study.AprioriDraft(RowwiseSplit(), estimate))


def _mid_schedule(bank, rows, split):
    """1 at the rows whose sigma lies in (0.4, 0.6), else 0."""
    return [1.0 if 0.4 < s < 0.6 else 0.0 for s in bank.rows_of(rows)[1]]


def test_an_impossible_limit_changes_nothing():
    from sdsv import ErrorControlled

    noise = torch.randn(3, 8, dtype=torch.float64)
    plain = _limited_run(ErrorControlled(30, tol=0.2, k_max=6), noise)
    limited = _limited_run(tail_study.limited(1e30, 30, tol=0.2, k_max=6), noise)
    assert torch.equal(plain.latents, limited.latents)
    assert [(w.start, w.k) for w in plain.stats.windows] == [(w.start, w.k) for w in limited.stats.windows]


def test_a_limit_that_always_fires_makes_every_step_a_target_step():
    from sdsv import StagePlan

    noise = torch.randn(2, 8, dtype=torch.float64)
    ref = _limited_run(StagePlan.target_only(25), noise)
    r = _limited_run(tail_study.limited(1e-30, 25, tol=1.0, k_init=4, k_max=8), noise)
    assert r.stats.windows and all(w.k == 0 for w in r.stats.windows)
    assert r.stats.target_evals == 2 * 25
    torch.testing.assert_close(r.latents, ref.latents, atol=1e-12, rtol=0)


def test_a_limited_window_ends_where_the_estimate_fires_and_a_sample_does_not_depend_on_its_batch_mates():
    from sdsv import ErrorControlled

    noise = torch.randn(3, 8, dtype=torch.float64)
    loose = _limited_run(ErrorControlled(40, tol=1.0, k_max=8), noise)
    policy = tail_study.limited(0.5, 40, tol=1.0, k_max=8)
    batched = _limited_run(policy, noise, _mid_schedule)
    ks = [w.k for w in batched.stats.windows]
    assert min(ks) < max(ks) and batched.stats.target_evals > loose.stats.target_evals
    for b in range(3):
        alone = _limited_run(policy, noise[b:b + 1], _mid_schedule)
        assert torch.equal(alone.latents, batched.latents[b:b + 1])
        assert [(w.start, w.k) for w in alone.stats.windows] == \
               [(w.start, w.k) for w in batched.stats.windows if w.sample == b]


def test_the_limited_window_ends_at_the_level_whose_estimate_exceeds_the_limit():
    cls = type("W", (tail_study.LimitedWindow,), {"limit": 0.1})
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
    assert last.k == 3
    policy = tail_study.limited(0.1, 10, tol=0.3, k_max=8)
    assert policy.describe() == "error_controlled[0-2:target, then tol=0.3, k in [2, 8], order 1, probe<=0.1]"


def test_forecasting_in_another_variable_changes_the_coefficients_and_is_undone():
    bank = _bank_with(lambda s, b: torch.ones(1, WIDTH) * s, [0.9, 0.6])
    bank.tag([0], [0.4])
    in_sigma = bank.forecast_args(1, "cpu")[2]
    assert in_sigma[0, 1:].tolist() == pytest.approx([-2 / 3, 5 / 3])  # the line through 0.9 and 0.6, at 0.4
    with tail_study.forecast_in(lambda s: s * s):
        in_square = bank.forecast_args(1, "cpu")[2]
    assert in_square[0, 1:].tolist() == pytest.approx([(0.16 - 0.36) / (0.81 - 0.36), (0.81 - 0.16) / (0.81 - 0.36)])
    assert torch.equal(bank.forecast_args(1, "cpu")[2], in_sigma)
    with tail_study.forecast_in(lambda s: s, scale=0.5):  # half-way between reuse and the line
        damped = bank.forecast_args(1, "cpu")[2]
    assert damped[0, 1:].tolist() == pytest.approx([-1 / 3, 4 / 3])


def _corrected_run(policy, noise):
    from sdsv import SelfDraft, flow_match_sigmas, sample
    from toy_models import RowwiseSplit

    return sample(None, None, noise, flow_match_sigmas(policy.num_steps, shift=2.0, dtype=noise.dtype), policy,
                  self_draft=SelfDraft(RowwiseSplit()))


def test_the_closing_state_patch_with_nothing_on_samples_as_the_library():
    """The lab patch redoes the library's correction itself: with nothing switched on it must give
    the library's samples, else its rows would measure the patch, not the closing state."""
    from sdsv import ErrorControlled

    noise = torch.randn(3, 6, dtype=torch.float64)
    policy = ErrorControlled(30, tol=0.05, correct=True)
    plain = _corrected_run(policy, noise)
    with tail_study.closing_state_patch():
        patched = _corrected_run(policy, noise)
    assert torch.equal(plain.latents, patched.latents)
    # the target again at every corrected closing state: one more target row per window, counted
    with tail_study.closing_state_patch(0.0):
        again = _corrected_run(policy, noise)
    assert again.stats.target_evals == plain.stats.target_evals + len(again.stats.windows)
    assert not torch.equal(again.latents, plain.latents)


def test_patched_restores_what_it_replaced():
    owner = types.SimpleNamespace(f=1)
    with pytest.raises(RuntimeError):
        with tail_study.patched(owner, "f", 2):
            assert owner.f == 2
            raise RuntimeError
    assert owner.f == 1


def test_step_capped_windows_follow_their_caps():
    p = tail_study.StepCapped(50, tol=0.45, k_max=8, correct=True, caps=((0, 4), (30, 8)))
    assert [p.cap(s) for s in (0, 29, 30, 49)] == [4, 4, 8, 8]
    state = p.start(1)
    state.k_next[0] = 8
    assert state.window(0, 10) == ("corrected", 4) and state.window(0, 35) == ("corrected", 8)
