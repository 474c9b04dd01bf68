"""PSNR/SSIM, the procedural data and the prompt parser."""

import math

import pytest
import torch

from sdsv.metrics import psnr, ssim
from sdsv.tiny.data import COLOR_NAMES, SHAPES, make_batch, parse_prompt, prompt_of


def test_psnr_known_value():
    a = torch.zeros(1, 3, 16, 16)
    b = torch.full_like(a, 0.1)  # mse 0.01 -> 20 dB
    assert psnr(a, b).item() == pytest.approx(20.0, abs=1e-4)
    assert math.isinf(psnr(a, a).item())


def test_ssim_properties():
    g = torch.Generator().manual_seed(0)
    a = torch.rand(2, 3, 32, 32, generator=g)
    assert torch.allclose(ssim(a, a), torch.ones(2), atol=1e-6)
    noisy = (a + 0.1 * torch.randn(a.shape, generator=g)).clamp(0, 1)
    worse = (a + 0.3 * torch.randn(a.shape, generator=g)).clamp(0, 1)
    s1, s2 = ssim(a, noisy), ssim(a, worse)
    assert (s1 < 1).all() and (s2 < s1).all()
    torch.testing.assert_close(ssim(a, noisy), ssim(noisy, a))  # symmetric
    # a constant shift of the luminance only: SSIM stays high but below 1
    shifted = (a * 0.8 + 0.1)
    assert 0.5 < ssim(a, shifted).min() < 1


def test_metric_shape_errors():
    with pytest.raises(ValueError):
        psnr(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 9))
    with pytest.raises(ValueError, match="smaller than"):
        ssim(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 8))


def test_data_is_seeded_and_in_range():
    a, ca, sa = make_batch(16, torch.Generator().manual_seed(3))
    b, cb, sb = make_batch(16, torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and torch.equal(ca, cb) and torch.equal(sa, sb)
    assert a.shape == (16, 3, 32, 32) and a.min() >= -1 and a.max() <= 1
    c, _, _ = make_batch(16, torch.Generator().manual_seed(4))
    assert not torch.equal(a, c)


def test_prompts_round_trip():
    for c in range(len(COLOR_NAMES)):
        for s in range(len(SHAPES)):
            assert parse_prompt(prompt_of(c, s)) == (c, s)
    assert parse_prompt("An ORANGE diamond") == (COLOR_NAMES.index("orange"), SHAPES.index("diamond"))
    with pytest.raises(ValueError, match="a <color> <shape>"):
        parse_prompt("a photo of a cat")
