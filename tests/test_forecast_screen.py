"""benchmarks/forecast_screen.py's candidate forecasts (measured in docs/tail.md, "Forecasts"): each
is exact where its model of the residual holds, so the screen's ranking compares forecasts, not bugs."""

import importlib.util
from pathlib import Path

import pytest
import torch

_spec = importlib.util.spec_from_file_location("forecast_screen",
                                               Path(__file__).parents[1] / "benchmarks" / "forecast_screen.py")
screen = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(screen)

SIG = [0.9, 0.86, 0.82, 0.78, 0.74, 0.7]  # anchors, oldest first, uniform spacing
ROWS, TOKENS, DIM = 3, 66, 8  # the tiny target's 2 word + 8x8 image tokens


def residuals(f):
    g = torch.Generator().manual_seed(0)
    base = [torch.randn(ROWS, TOKENS, DIM, generator=g, dtype=torch.float64) for _ in range(3)]
    return lambda s: f(s, *base)


def test_the_polynomials_are_exact_on_their_own_degree():
    line = residuals(lambda s, a, b, c: a + s * b)
    quad = residuals(lambda s, a, b, c: a + s * b + s * s * c)
    A, Q = [line(s) for s in SIG], [quad(s) for s in SIG]
    torch.testing.assert_close(screen.poly(A, SIG, 0.67, 1), line(0.67))
    torch.testing.assert_close(screen.poly(Q, SIG, 0.67, 2), quad(0.67))
    assert (screen.poly(Q, SIG, 0.67, 1) - quad(0.67)).abs().max() > 1e-3  # and the line is not, on a parabola


def test_dmd_is_exact_on_a_sum_of_decaying_modes_even_between_snapshots():
    modes = residuals(lambda s, a, b, c: a * (0.5 ** (s / 0.04)) + b * (0.8 ** (s / 0.04)))
    A = [modes(s) for s in SIG]
    for at in (0.66, 0.68, 0.62):  # one spacing ahead, half of one, two
        torch.testing.assert_close(screen.dmd(A[-4:], SIG[-4:], at), modes(at).float(), rtol=1e-4, atol=1e-4)


def test_foca_is_exact_on_a_line_up_to_its_damping_horizon():
    line = residuals(lambda s, a, b, c: a + s * b)
    A = [line(s) for s in SIG]
    at = [0.69, 0.68, 0.67, 0.66]
    out = screen.foca(A, SIG, at, (line(0.71), 0.71))
    for s, p in zip(at[:3], out[:3]):
        torch.testing.assert_close(p, line(s))
    assert (out[3] - line(0.66)).abs().max() > 1e-3  # beyond 3 steps it damps toward the anchor, as cache-dit does


def test_the_frequency_split_adds_up_and_the_input_jacobian_finds_a_per_channel_response():
    line = residuals(lambda s, a, b, c: a + s * b)
    A = [line(s) for s in SIG]
    # low and high parts of the same forecast put back together: the forecast itself
    torch.testing.assert_close(screen.freq_split(A, SIG, 0.67, 1, "line", "line"), screen.poly(A, SIG, 0.67, 1))
    # a residual that responds to its input per channel (R = J h), inputs moving off their line
    g = torch.Generator().manual_seed(1)
    J = torch.randn(1, 1, DIM, generator=g, dtype=torch.float64)
    Hs = [torch.randn(ROWS, TOKENS, DIM, generator=g, dtype=torch.float64) for _ in SIG]
    h = torch.randn(ROWS, TOKENS, DIM, generator=g, dtype=torch.float64)
    torch.testing.assert_close(screen.jac_channel([J * x for x in Hs], Hs, SIG, 0.67, h, "reuse"), J * h)


@pytest.mark.parametrize("images", [3, 0])
def test_the_cli_refuses_an_odd_or_empty_image_count(images, capsys):
    with pytest.raises(SystemExit):
        screen.main(["screen", "--images", str(images), "--out", "/nonexistent"])
    assert "--images must be an even number" in capsys.readouterr().err
