"""benchmarks/tail_study.py's a-priori error estimates (measured in docs/tail.md). The forecast
gap: zero where the deep residual is linear in sigma, the order-2 correction where it is
quadratic. The transfer rate: the residual's move per unit of its input's move between the last
two anchors, times the input's move since the last one."""

import importlib.util
import types
from pathlib import Path

import pytest
import torch

from sdsv.forecast.anchors import AnchorBank

_spec = importlib.util.spec_from_file_location("tail_study", Path(__file__).parents[1] / "benchmarks" / "tail_study.py")
tail_study = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tail_study)

WIDTH = 4


def _bank_with(residual, sigmas, branches=1, h_in=lambda s, b: torch.zeros(1, WIDTH)):
    """Anchors at ``sigmas`` as the benchmark's split keeps them: ``[residual, h_in]``."""
    bank = AnchorBank(batch=1, order=1, slots=3)
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
    bank = AnchorBank(batch=x.shape[0], order=1, slots=3)
    for s in sigmas:
        bank.tag(list(range(x.shape[0])), [s] * x.shape[0])
        bank.record(forward(x * s, torch.full((x.shape[0],), s), labels)[1])
        bank.commit(list(range(x.shape[0])))
    bank.tag(list(range(x.shape[0])), [0.6] * x.shape[0])
    return bank


def test_the_probe_at_depth_0_is_the_samplers_probe_and_the_draft_is_unchanged():
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
        plain = _two_anchor_bank(split.forward_with_probe_residual, x, labels)
        want_v, want_err = split.forward_with_probe(x, sigma, *plain.forecast_args(2, "cpu"), labels)
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
