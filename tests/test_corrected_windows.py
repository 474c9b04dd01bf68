"""Corrected windows (``ErrorControlled(correct=True)``): once a window's closing target evaluation
is on record, the self-draft redoes the window's draft steps with the deep residual interpolated
through it, and the closing step is taken from the corrected state."""

import pytest
import torch

from sdsv import ErrorControlled, SelfDraft, StagePlan, flow_match_sigmas, sample
from sdsv.errors import NonFiniteOutputError
from sdsv.forecast import DAMPED, INTERPOLATION, LINE, AnchorBank, NewtonForecast
from sdsv.policies import PolicyState, WindowPolicy

from toy_models import RowwiseDenoiser, RowwiseSplit


def run(sd, policy, noise, solver="euler", **kw):
    return sample(None, None, noise, flow_match_sigmas(policy.num_steps, shift=2.0, dtype=noise.dtype), policy,
                  self_draft=sd, solver=solver, **kw)


def quadratic_in_sigma(h, s):
    return (0.3 - 0.7 * s + 0.9 * s * s).expand_as(h)


@pytest.mark.parametrize("predict", ["draft", "velocity"])
@pytest.mark.parametrize("solver", ["euler", "dpm++2m", "unipc"])
@pytest.mark.parametrize("forecast", [DAMPED, LINE])
def test_correction_is_exact_where_the_interpolation_is_and_the_forecast_is_not(solver, forecast, predict):
    """A deep residual quadratic in sigma and independent of the state: the parabola through three
    anchors is exact, the forecast is not (damped, or a line); corrected windows then give the
    target-only sample to rounding, uncorrected ones do not."""
    split = RowwiseSplit(deep=quadratic_in_sigma)
    noise = torch.randn(2, 7, dtype=torch.float64)
    ref = run(SelfDraft(split), StagePlan.target_only(30), noise, solver)
    plain = run(SelfDraft(split, forecast=forecast), ErrorControlled(30, tol=1.0, k_max=6), noise, solver)
    fixed = run(SelfDraft(split, forecast=forecast), ErrorControlled(30, tol=1.0, k_max=6, correct=True, predict=predict),
                noise, solver)
    assert fixed.stats.target_calls < 15
    assert (plain.latents - ref.latents).abs().max() > 1e-6
    torch.testing.assert_close(fixed.latents, ref.latents, atol=1e-12, rtol=0)


@pytest.mark.parametrize("predict, rows_per_window", [("draft", 2), ("velocity", 1)])
def test_a_corrected_window_costs_its_correction_and_no_more_target_calls(predict, rows_per_window):
    """Its correction is k + 1 draft rows; predicted by the draft, its k steps and closing error
    are k + 1 more (as an uncorrected window's); predicted by the velocity forecast, none."""
    split = RowwiseSplit()
    noise = torch.randn(1, 6, dtype=torch.float64)
    r = run(SelfDraft(split), ErrorControlled(40, tol=0.05, correct=True, predict=predict), noise)
    windows = r.stats.windows
    assert windows and all(w.accepted == w.k for w in windows)
    assert sum(split.forecast_calls) == sum(rows_per_window * (w.k + 1) for w in windows)
    assert sum(split.residual_calls) == r.stats.target_calls == 40 - sum(w.k for w in windows)


def test_correction_changes_the_sample_and_moves_it_toward_target_only():
    split = RowwiseSplit()
    noise = torch.randn(4, 8, dtype=torch.float64)
    ref = run(SelfDraft(split), StagePlan.target_only(40), noise).latents
    plain, fixed = (run(SelfDraft(split), ErrorControlled(40, tol=0.3, k_max=6, correct=c), noise).latents
                    for c in (False, True))
    assert (fixed - ref).norm() < 0.5 * (plain - ref).norm()


def test_a_corrected_sample_does_not_depend_on_batch_mates():
    split = RowwiseSplit()
    noise, lab = torch.randn(3, 4, 6), torch.tensor([[i % 8, i % 6] for i in range(3)])
    policy = ErrorControlled(40, tol=0.01, correct=True)
    batched = run(SelfDraft(split), policy, noise, labels=lab)
    for b in range(3):
        alone = run(SelfDraft(split), policy, noise[b:b + 1], labels=lab[b:b + 1])
        assert torch.equal(alone.latents, batched.latents[b:b + 1])
    assert len({w.k for w in batched.stats.windows}) > 1, "the controller should vary window lengths"


def test_rejected_windows_are_not_corrected():
    """Every window rejected (a hard threshold no forecast meets): nothing to correct, so exactly
    the target-only sample, as without correction."""
    split = RowwiseSplit()
    noise = torch.randn(2, 6)
    ref = run(SelfDraft(split), StagePlan.target_only(25), noise)
    r = run(SelfDraft(split), ErrorControlled(25, tol=1e-9, reject_above=1e-12, k_init=3, correct=True), noise)
    assert r.stats.rejected_unverified == r.stats.unverified_windows > 0
    assert torch.equal(r.latents, ref.latents)


def test_the_line_keeps_enough_anchors_to_interpolate():
    """A self-draft with the line keeps two anchors per key; a corrected call's bank keeps three."""
    sd = SelfDraft(RowwiseSplit(), forecast=LINE)
    assert sd.slots == 2
    with sd.session(2, interpolates=True) as bank:
        assert bank.slots == INTERPOLATION.anchors == 3
    with sd.session(2) as bank:
        assert bank.slots == 2


def test_the_bank_reads_the_interpolation_only_inside_interpolating():
    bank = AnchorBank(1, DAMPED, 3)
    bank.tag([0], [0.8])
    bank.record(torch.ones(1, 2))
    bank.commit([0])
    for sigma in (0.6, 0.4):
        bank.tag([0], [sigma])
        bank.record(torch.full((1, 2), sigma))
        bank.commit([0])
    bank.tag([0], [0.5])
    _, _, forecast = bank.forecast_args(1, "cpu")
    with bank.interpolating():
        _, _, interpolated = bank.forecast_args(1, "cpu")
    _, _, after = bank.forecast_args(1, "cpu")
    want = [1.0] + NewtonForecast.of_order(2).coefficients([0.8, 0.6, 0.4], 0.5)
    torch.testing.assert_close(interpolated[0].double(), torch.tensor(want, dtype=torch.float64))
    assert torch.equal(after, forecast) and not torch.allclose(forecast, interpolated)
    with pytest.raises(KeyError):
        with bank.interpolating():
            raise KeyError("inside")
    assert bank.reading is DAMPED


def test_a_corrected_policy_needs_a_self_draft():
    policy = ErrorControlled(20, correct=True)
    sig = flow_match_sigmas(20)
    with pytest.raises(ValueError, match="self_draft"):
        sample(RowwiseDenoiser(), RowwiseDenoiser(bias=0.1), torch.randn(1, 4), sig, policy)
    # without it, the same draft samples (uncorrected)
    sample(RowwiseDenoiser(), RowwiseDenoiser(bias=0.1), torch.randn(1, 4), sig, ErrorControlled(20))


class Naming(WindowPolicy):
    """A custom policy naming window kinds by name (as a policy may): sample ``b`` gets
    ``windows[b % len(windows)]`` every time after a 2-step warm-up."""

    closing_error = True
    error_metric = "v_rms"

    def __init__(self, num_steps, *windows, corrects=True):
        self.num_steps, self.windows, self.corrects = num_steps, windows, corrects
        self.predicts_velocity = corrects

    def start(self, batch):
        outer = self

        class State(PolicyState):
            def window(self, sample, step):
                if step < 2 or step >= outer.num_steps - 4:
                    return "target", 0
                return outer.windows[sample % len(outer.windows)]

            def observe(self, *a):
                return True

        return State()


def test_a_custom_policy_naming_corrected_windows_needs_a_self_draft_and_to_declare_them():
    sig = flow_match_sigmas(20)
    with pytest.raises(ValueError, match="self-draft"):
        sample(RowwiseDenoiser(), RowwiseDenoiser(bias=0.1), torch.randn(1, 4), sig, Naming(20, ("corrected", 2)))
    with pytest.raises(ValueError, match="corrects = True"):
        run(SelfDraft(RowwiseSplit()), Naming(20, ("corrected", 2), corrects=False), torch.randn(1, 4))
    r = run(SelfDraft(RowwiseSplit()), Naming(20, ("corrected", 2)), torch.randn(1, 4))
    assert r.stats.target_calls < 20


def test_corrected_and_uncorrected_windows_in_one_round_sample_as_each_alone():
    """Rows of a draft level that are predicted (corrected windows) beside rows that call the
    draft (unverified windows) in the same round."""
    split = RowwiseSplit()
    noise = torch.randn(2, 5, dtype=torch.float64)
    mixed = run(SelfDraft(split), Naming(24, ("corrected_velocity", 3), ("unverified", 3)), noise)
    corrected = run(SelfDraft(split), Naming(24, ("corrected_velocity", 3)), noise[:1])
    unverified = run(SelfDraft(split), Naming(24, ("unverified", 3)), noise[1:])
    assert torch.equal(mixed.latents, torch.cat([corrected.latents, unverified.latents]))
    assert not torch.equal(corrected.latents, run(SelfDraft(split), Naming(24, ("unverified", 3)), noise[:1]).latents)


def test_the_bank_predicts_velocities_from_its_anchors():
    bank = AnchorBank(2, LINE, 3)
    for sigma, v in ((0.9, 1.0), (0.7, 3.0)):
        bank.tag([0, 1], [sigma, sigma])
        bank.record(torch.zeros(2, 4))
        bank.commit([0, 1], velocities=torch.tensor([[v], [10 * v]]).expand(2, 3))
    got = bank.predict_velocity([1, 0], [0.6, 0.5], torch.zeros(2, 3))
    # the line through (0.9, v0) and (0.7, v1): at 0.6 for sample 1, at 0.5 for sample 0
    torch.testing.assert_close(got, torch.tensor([[40.0] * 3, [5.0] * 3]))
    bank.replace_velocity([0], torch.full((1, 3), 2.0))
    torch.testing.assert_close(bank.predict_velocity([0], [0.5], torch.zeros(1, 3)), torch.full((1, 3), 3.0))
    with pytest.raises(RuntimeError, match="no velocities"):
        AnchorBank(1, LINE, 2).predict_velocity([0], [0.5], torch.zeros(1, 3))


def test_correct_must_be_a_bool_and_is_described():
    with pytest.raises(TypeError, match="correct"):
        ErrorControlled(20, correct=1)
    with pytest.raises(ValueError, match="predict"):
        ErrorControlled(20, correct=True, predict="target")
    assert "velocity-predicted" in ErrorControlled(20, correct=True, predict="velocity").describe()
    assert "corrected" in ErrorControlled(20, correct=True).describe()
    assert "corrected" not in ErrorControlled(20).describe()
    assert ErrorControlled(20, correct=True).corrects and not ErrorControlled(20).corrects
    assert not ErrorControlled(2, correct=True).corrects  # no window at all: nothing to correct


def test_a_non_finite_correction_names_the_draft(monkeypatch):
    """A draft output that is finite while forecasting and NaN while interpolating."""
    assert ErrorControlled(20, correct=True).predict == "draft"

    class NaNWhileInterpolating(AnchorBank):
        def forecast_args(self, model_rows, device):
            bank, index, coeffs = super().forecast_args(model_rows, device)
            return bank, index, coeffs * float("nan") if self.reading is not self.forecast else coeffs

    monkeypatch.setattr("sdsv.forecast.self_draft.AnchorBank", NaNWhileInterpolating)
    with pytest.raises(NonFiniteOutputError, match="draft model returned NaN/inf at step 2"):
        run(SelfDraft(RowwiseSplit()), ErrorControlled(20, correct=True), torch.randn(1, 4))


def test_memory_stays_bounded_over_1000_corrected_windows(monkeypatch):
    sizes = []

    class Watch(AnchorBank):
        def commit(self, rows, velocities=None):
            super().commit(rows, velocities)
            sizes.append(self.nbytes)
            assert all(len(ring) <= self.slots for ring in self.anchors.values())

    monkeypatch.setattr("sdsv.forecast.self_draft.AnchorBank", Watch)
    r = run(SelfDraft(RowwiseSplit(), forecast=LINE),
            ErrorControlled(3003, tol=10.0, k_min=2, k_max=2, correct=True, predict="velocity"), torch.randn(2, 16))
    assert r.stats.unverified_windows >= 1000 * 2
    # batch x (branches x row + velocity row) x 3 slots (the interpolation's, though the line reads 2) x fp32
    assert set(sizes[1:]) == {2 * (1 * 16 + 16) * 3 * 4}


def test_only_velocity_predicted_windows_keep_velocities(monkeypatch):
    banks = []

    class Keep(AnchorBank):
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            banks.append(self)

    monkeypatch.setattr("sdsv.forecast.self_draft.AnchorBank", Keep)
    for predict in ("draft", "velocity"):
        run(SelfDraft(RowwiseSplit()), ErrorControlled(30, correct=True, predict=predict), torch.randn(1, 4))
    assert banks[0].velocities is None and banks[1].velocities is not None
