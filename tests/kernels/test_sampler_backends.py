"""sdsv.sample on the native backends gives the reference backend's trajectory: the same
accept/reject decisions and latents within the output-dtype tolerance (conftest.OUT_TOL,
accumulated over the steps: 10x for the whole run)."""

from __future__ import annotations

import pytest
import torch

import sdsv
import sdsv_kernels

from .conftest import DTYPES


def _models():
    def target(x, sigma):
        s = sigma.view(-1, *([1] * (x.dim() - 1))).to(x.dtype)
        return (0.8 * x - s * torch.tanh(x)).to(x.dtype)

    def draft(x, sigma):
        s = sigma.view(-1, *([1] * (x.dim() - 1))).to(x.dtype)
        # good at high noise, worse at low noise: mixed accept/reject over a run
        return (0.8 * x - s * torch.tanh(x) + 0.2 * (1 - s) * torch.sin(3 * x)).to(x.dtype)

    return target, draft


@pytest.mark.parametrize("verify", ["endpoints", "full"])
@pytest.mark.parametrize("dtype", [DTYPES["fp32"], DTYPES["bf16"]], ids=["fp32", "bf16"])
def test_sampler_matches_reference_backend(backend, verify, dtype):
    name, dev = backend
    target, draft = _models()
    noise = torch.randn((3, 4, 6, 7), generator=torch.Generator().manual_seed(0)).to(dev, dtype)
    sigmas = sdsv.flow_match_sigmas(20, shift=3.0).to(dev)
    plan = sdsv.StagePlan.paper_default(20)
    accept = sdsv.AcceptanceTest("x0_rms", 0.02)
    got = sdsv.sample(target, draft, noise, sigmas, plan, verify=verify, accept=accept)
    with sdsv_kernels.use_backend("reference"):
        ref = sdsv.sample(target, draft, noise, sigmas, plan, verify=verify, accept=accept)
    decisions = [(w.sample, w.start, w.k, w.accepted) for w in got.stats.windows]
    assert decisions == [(w.sample, w.start, w.k, w.accepted) for w in ref.stats.windows]
    accepted = [w.accepted for w in got.stats.windows]
    assert any(a > 0 for a in accepted) and any(a < w.k for a, w in zip(accepted, got.stats.windows)), accepted
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=0.1, atol=0.1)
    torch.testing.assert_close(got.latents.float().cpu(), ref.latents.float().cpu(), **tol)
