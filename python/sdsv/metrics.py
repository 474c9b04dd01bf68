"""Reference-based image metrics (PSNR, SSIM) on images in [0, 1], [b, c, h, w], and the tail of
per-image values (percentiles, worst)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _check(a: torch.Tensor, b: torch.Tensor) -> None:
    if a.shape != b.shape or a.dim() != 4:
        raise ValueError(f"expected two [b, c, h, w] image batches of one shape, got {tuple(a.shape)} and {tuple(b.shape)}")


def psnr(a: torch.Tensor, b: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Per-image PSNR in dB, ``[b]``; identical images give +inf."""
    _check(a, b)
    mse = (a.double() - b.double()).pow(2).flatten(1).mean(1)
    return (10 * torch.log10(data_range**2 / mse)).float()


def _gaussian_window(size: int, sigma: float, channels: int, dtype) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    w = (g[:, None] * g[None, :]).to(dtype)
    return w.expand(channels, 1, size, size).contiguous()


def ssim(a: torch.Tensor, b: torch.Tensor, data_range: float = 1.0, window: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Per-image SSIM (Wang et al. 2004: Gaussian 11x11 window, sigma 1.5, K1=0.01, K2=0.03,
    averaged over the valid region and the channels), ``[b]``."""
    _check(a, b)
    if min(a.shape[-2:]) < window:
        raise ValueError(f"images of size {tuple(a.shape[-2:])} are smaller than the {window}x{window} SSIM window")
    c = a.shape[1]
    a, b = a.double(), b.double()
    w = _gaussian_window(window, sigma, c, a.dtype)
    mu_a, mu_b = F.conv2d(a, w, groups=c), F.conv2d(b, w, groups=c)
    saa = F.conv2d(a * a, w, groups=c) - mu_a**2
    sbb = F.conv2d(b * b, w, groups=c) - mu_b**2
    sab = F.conv2d(a * b, w, groups=c) - mu_a * mu_b
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    m = ((2 * mu_a * mu_b + c1) * (2 * sab + c2)) / ((mu_a**2 + mu_b**2 + c1) * (saa + sbb + c2))
    return m.flatten(1).mean(1).float()


def percentile(values, q: float) -> float:
    """The ``q``-th percentile (0..100) of per-image values, linearly interpolated between the two
    nearest ranks — numpy's default (``method="linear"``). The 5th percentile of PSNR is the
    quality that 95% of images reach; neighbours that are equal (both +inf: identical images)
    give that value rather than inf - inf."""
    v = sorted(float(x) for x in (values.flatten().tolist() if isinstance(values, torch.Tensor) else values))
    if not v:
        raise ValueError("percentile of no values")
    if not 0 <= q <= 100:
        raise ValueError(f"q must be in [0, 100], got {q}")
    pos = q / 100 * (len(v) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(v) - 1)
    if v[lo] == v[hi]:
        return v[lo]
    return v[lo] + (v[hi] - v[lo]) * (pos - lo)


def tail_summary(per_image) -> dict:
    """Mean, 5th and 1st percentile and worst of per-image values (PSNR in dB): the mean says how
    good a method is on average, the low percentiles how bad it gets on the images a user sees
    only now and then, which a mean over 1000 images hides."""
    v = [float(x) for x in (per_image.flatten().tolist() if isinstance(per_image, torch.Tensor) else per_image)]
    return {"mean": sum(v) / len(v), "p5": percentile(v, 5), "p1": percentile(v, 1), "worst": min(v)}
