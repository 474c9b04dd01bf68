"""benchmarks/tail_study.py's forecast gap (the a-priori error estimate measured in docs/tail.md):
zero where the deep residual is linear in sigma, the order-2 correction where it is quadratic."""

import importlib.util
from pathlib import Path

import pytest
import torch

from sdsv.forecast.anchors import AnchorBank

_spec = importlib.util.spec_from_file_location("tail_study", Path(__file__).parents[1] / "benchmarks" / "tail_study.py")
tail_study = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tail_study)


def _bank_with(f, sigmas, branches=1):
    bank = AnchorBank(batch=1, order=1, slots=3)
    for s in sigmas:
        bank.tag([0], [s])
        bank.record(torch.cat([f(s, b) for b in range(branches)]))
        bank.commit([0])
    return bank


def test_the_gap_is_zero_on_a_linear_residual():
    bank = _bank_with(lambda s, b: torch.tensor([[1.0, 2.0, -1.0, 0.5]]) * (2 - s), [0.9, 0.8, 0.7])
    bank.tag([0], [0.5])
    assert tail_study.forecast_gaps(bank, 1) == [pytest.approx(0.0, abs=1e-6)]  # float32 anchors


def test_the_gap_is_the_second_order_term_on_a_quadratic_residual():
    c = torch.tensor([[1.0, -2.0, 3.0, 0.25]])
    f = lambda s, b: c * (1 + s + (b + 1) * s * s)  # noqa: E731 - the second branch curves twice as much
    bank = _bank_with(f, [0.9, 0.8, 0.7], branches=2)
    at = 0.5
    bank.tag([0], [at])
    gaps = tail_study.forecast_gaps(bank, 2)
    for branch, gap in enumerate(gaps):
        k = branch + 1
        linear = 1 + at + k * (0.8 + 0.7) * at - k * 0.8 * 0.7  # the line through sigma 0.8 and 0.7
        want = abs(k * (at - 0.8) * (at - 0.7)) / abs(linear)
        assert gap == pytest.approx(want, rel=1e-5)
    assert gaps[1] > gaps[0]


def test_no_estimate_before_three_anchors():
    bank = _bank_with(lambda s, b: torch.ones(1, 4) * s, [0.9, 0.8])
    bank.tag([0], [0.6])
    assert tail_study.forecast_gaps(bank, 1) == [0.0]
