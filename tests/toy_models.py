"""Small denoisers the sampler tests run on (imported by the tests, not a conftest)."""

import torch

from sdsv.tiny.model import TinyDiT, TinyDiTConfig


def random_dit(dim: int = 32, depth: int = 2, seed: int = 0) -> TinyDiT:
    """A small TinyDiT with random (non-zero-init) weights: a realistic batched denoiser."""
    g = torch.Generator().manual_seed(seed)
    m = TinyDiT(TinyDiTConfig(dim=dim, depth=depth, heads=2))
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.08)
    return m.eval().requires_grad_(False)


class RowwiseDenoiser:
    """Elementwise velocity: each row's output depends on that row alone, bit for bit.

    ``bias`` makes a different draft; ``bad_sigma`` makes it deviate only below a sigma.
    """

    def __init__(self, bias: float = 0.0, bad_below: float | None = None):
        self.bias, self.bad_below, self.calls = bias, bad_below, []

    def __call__(self, x, sigma, labels=None):
        self.calls.append(x.shape[0])
        s = sigma.view(-1, *([1] * (x.dim() - 1)))
        v = torch.tanh(x) * (0.5 + s) - 0.3 * x
        if labels is not None:
            v = v + 0.05 * labels[:, :1].view(-1, *([1] * (x.dim() - 1))).to(x.dtype)
        if self.bias:
            gate = 1.0 if self.bad_below is None else (s < self.bad_below).to(x.dtype)
            v = v + self.bias * gate
        return v


class RowwiseSplit:
    """A split model (``sdsv.forecast.SplitModel``) whose rows are independent, bit for bit.

    embed ``h = x``; deep residual ``r(h, sigma) = deep(h, sigma)``; head ``v = 0.5 h_out - 0.3 x``
    (+ 0.05 label). ``deep`` is a callable of (h, sigma[b, 1, ...]); the default is smooth in both.
    """

    def __init__(self, deep=None):
        self.deep = deep or (lambda h, s: torch.tanh(h) * (0.5 + s) - 0.2 * h)
        self.residual_calls, self.forecast_calls = [], []

    def _head(self, x, h_out, labels):
        v = 0.5 * h_out - 0.3 * x
        if labels is not None:
            v = v + 0.05 * labels[:, :1].view(-1, *([1] * (x.dim() - 1))).to(x.dtype)
        return v

    def forward_with_residual(self, x, sigma, labels=None):
        self.residual_calls.append(x.shape[0])
        s = sigma.view(-1, *([1] * (x.dim() - 1))).to(x.dtype)
        r = self.deep(x, s)
        return self._head(x, x + r, labels), r

    def forward_with_forecast(self, x, sigma, bank, index, coeffs, labels=None):
        import sdsv_kernels

        self.forecast_calls.append(x.shape[0])
        return self._head(x, sdsv_kernels.gather_combine(x, bank, index, coeffs), labels)
