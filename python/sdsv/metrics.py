"""Reference-based image metrics (PSNR, SSIM) on images in [0, 1], [b, c, h, w], and the tail of
per-image values (percentiles, worst)."""

from __future__ import annotations

import torch


def _check(a: torch.Tensor, b: torch.Tensor) -> None:
    if a.shape != b.shape or a.dim() != 4:
        raise ValueError(f"expected two [b, c, h, w] image batches of one shape, got {tuple(a.shape)} and {tuple(b.shape)}")


def psnr(a: torch.Tensor, b: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Per-image PSNR in dB, ``[b]``; identical images give +inf."""
    _check(a, b)
    mse = (a.double() - b.double()).pow(2).flatten(1).mean(1)
    return (10 * torch.log10(data_range**2 / mse)).float()


def _gaussian_1d(size: int, sigma: float) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def _blur_matrix(n: int, g: torch.Tensor) -> torch.Tensor:
    """``[n - len(g) + 1, n]``: row ``i`` holds ``g`` at columns ``i .. i + len(g) - 1``, so that
    ``M @ x`` is the valid correlation of ``x`` with ``g`` along that axis."""
    k = len(g)
    m = torch.zeros(n - k + 1, n, dtype=g.dtype)
    for i in range(n - k + 1):
        m[i, i:i + k] = g
    return m


def ssim(a: torch.Tensor, b: torch.Tensor, data_range: float = 1.0, window: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Per-image SSIM (Wang et al. 2004: Gaussian 11x11 window, sigma 1.5, K1=0.01, K2=0.03,
    averaged over the valid region and the channels), ``[b]``. The window is separable, so each
    local mean is two matrix products in float64 (a float64 depthwise convolution takes the CPU's
    slow path: ~100x slower)."""
    _check(a, b)
    if min(a.shape[-2:]) < window:
        raise ValueError(f"images of size {tuple(a.shape[-2:])} are smaller than the {window}x{window} SSIM window")
    a, b = a.double(), b.double()
    g = _gaussian_1d(window, sigma)
    rows, cols = _blur_matrix(a.shape[-2], g), _blur_matrix(a.shape[-1], g).T

    def blur(x):
        return rows @ x @ cols

    mu_a, mu_b = blur(a), blur(b)
    saa = blur(a * a) - mu_a**2
    sbb = blur(b * b) - mu_b**2
    sab = blur(a * b) - mu_a * mu_b
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
