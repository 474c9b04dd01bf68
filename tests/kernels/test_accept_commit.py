"""accept_commit on every native backend vs the reference and a plain-Python decision oracle.

Decisions (``accepted``) must match EXACTLY: every backend evaluates the metric in fp32 with
IEEE sqrt/div in the reference's operation order, so even tau == a row's value agrees. Next
states: conftest.OUT_TOL.
"""

from __future__ import annotations

import math

import pytest
import torch

import sdsv_kernels
from sdsv_kernels import reference

from .conftest import DTYPES, OUT_TOL

METRICS = reference.METRICS
# the interpreter evaluates masked-off lanes too (0/0 there is discarded by the mask)
pytestmark = pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
MODES = reference.VERIFY_MODES


def decision_oracle(stats, h, sigma, window_k, metric, tau, verify, numel):
    """Plain-Python rule of METHOD.md 3.2/3.3 on the reference's per-row metric values."""
    values = reference.metric_values(stats, h, sigma, numel, metric).tolist()
    finite = torch.isfinite(stats).all(1).tolist()
    ok = [f and (v >= tau if metric == "cosine" else v <= tau) for v, f in zip(values, finite)]
    out, start = [], 0
    for k in window_k.tolist():
        n = (2 if k > 0 else 1) if verify == "endpoints" else k + 1
        rows = ok[start : start + n]
        if verify == "endpoints":
            out.append(k if k > 0 and all(rows) else 0)
        else:
            a = 0
            while a < k and rows[a]:
                a += 1
            out.append(a)
        start += n
    return out


def _window(window_k, verify, shape, dtype, device, seed=0):
    n_rows = int(reference.rows_per_sample(window_k, verify).sum())
    g = torch.Generator().manual_seed(seed)
    y = torch.randn((n_rows, *shape), generator=g).to(device=device, dtype=dtype)
    t = torch.randn((n_rows, *shape), generator=g).to(device=device, dtype=dtype)
    h = (-torch.rand(n_rows, generator=g) * 0.1 - 0.01).to(device)
    sigma = torch.rand(n_rows, generator=g).to(device)
    return y, t, h, sigma


def _random_stats(n_rows, seed):
    """Statistics with a spread of metric values (so a median tau gives mixed decisions)."""
    g = torch.Generator().manual_seed(seed)
    tt = torch.rand(n_rows, generator=g) * 10 + 0.1
    dd = tt * (1 + 0.2 * torch.randn(n_rows, generator=g)).abs()
    cos = 1 - torch.rand(n_rows, generator=g) ** 2 * 0.2
    dot = cos * torch.sqrt(tt * dd)
    diff = (tt + dd - 2 * dot).clamp_min(0)
    nxt = torch.rand(n_rows, generator=g) * 50 + 1
    return torch.stack([dot, tt, dd, diff, nxt], 1).float()


WINDOWS = {
    "B1-k0": [0],
    "B1-k9": [9],
    "B3-mixed": [3, 0, 5],
    "B5-mixed": [1, 4, 0, 2, 9],
    "B7-k2": [2] * 7,
}


@pytest.mark.parametrize("windows", WINDOWS.values(), ids=WINDOWS.keys())
@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("verify", MODES)
def test_decisions_match_oracle_and_reference(backend, windows, metric, verify):
    _, dev = backend
    window_k = torch.tensor(windows)
    y, t, h, sigma = _window(window_k, verify, (3, 17), torch.float32, dev, seed=len(windows))
    stats = _random_stats(y.shape[0], seed=sum(windows) + 1)
    numel = y[0].numel()
    values = reference.metric_values(stats, h.cpu(), sigma.cpu(), numel, metric)
    for q in (0.2, 0.5, 0.8):
        tau = float(values.quantile(q))
        expect = decision_oracle(stats, h.cpu(), sigma.cpu(), window_k, metric, tau, verify, numel)
        x_ref, a_ref = reference.accept_commit(stats, y.cpu(), t.cpu(), h.cpu(), sigma.cpu(), window_k, metric, tau, verify)
        assert a_ref.tolist() == expect
        x, a = sdsv_kernels.accept_commit(stats.to(dev), y, t, h, sigma, window_k.to(dev), metric, tau, verify)
        assert a.dtype == torch.int64 and a.device.type == dev
        assert a.tolist() == expect, f"tau={tau}"
        torch.testing.assert_close(x.cpu(), x_ref, **OUT_TOL[torch.float32])


@pytest.mark.parametrize("metric", METRICS)
def test_tau_equal_to_value_passes(backend, metric):
    """value == tau is a pass (>= for cosine, <= for distances) on every backend."""
    _, dev = backend
    window_k = torch.tensor([4, 4])
    y, t, h, sigma = _window(window_k, "full", (11,), torch.float32, dev, seed=9)
    stats = _random_stats(10, seed=4)
    values = reference.metric_values(stats, h.cpu(), sigma.cpu(), 11, metric)
    for row in range(10):
        tau = float(values[row])
        _, a_ref = reference.accept_commit(stats, y.cpu(), t.cpu(), h.cpu(), sigma.cpu(), window_k, metric, tau, "full")
        _, a = sdsv_kernels.accept_commit(stats.to(dev), y, t, h, sigma, window_k.to(dev), metric, tau, "full")
        assert a.tolist() == a_ref.tolist(), f"row {row}, tau={tau!r}"


@pytest.mark.parametrize("dtype", DTYPES.values(), ids=DTYPES.keys())
@pytest.mark.parametrize("verify", MODES)
def test_mixed_batch_from_real_latents(backend, dtype, verify):
    """Draft outputs with chosen errors per row, statistics from the backend's own pair_stats:
    the accepted counts are known by construction (x0_rms, tau between good and bad rows)."""
    _, dev = backend
    shape = (4, 9, 13)
    if verify == "full":
        # sample: (k, rows whose draft is bad) -> expected accepted
        plan = [(3, [], 3), (4, [2], 2), (2, [0], 0), (0, [], 0), (3, [3], 3), (5, [1, 4], 1)]
    else:
        plan = [(3, [], 3), (4, [0], 0), (2, [1], 0), (0, [], 0), (6, [], 6)]
    window_k = torch.tensor([k for k, _, _ in plan])
    n_rows = int(reference.rows_per_sample(window_k, verify).sum())
    g = torch.Generator().manual_seed(1)
    t = torch.randn((n_rows, *shape), generator=g)
    noise = torch.randn((n_rows, *shape), generator=g)
    scale = torch.full((n_rows,), 0.01)
    start = 0
    for k, bad, _ in plan:
        for j in bad:
            scale[start + j] = 1.0
        start += (2 if k > 0 else 1) if verify == "endpoints" else k + 1
    d = t + scale.view(-1, 1, 1, 1) * noise
    y = torch.randn((n_rows, *shape), generator=g)
    h = torch.full((n_rows,), -0.02)
    sigma = torch.full((n_rows,), 0.5)
    t, d, y = (a.to(device=dev, dtype=dtype) for a in (t, d, y))
    h, sigma = h.to(dev), sigma.to(dev)
    stats = sdsv_kernels.pair_stats(t, d, y, h)
    x, a = sdsv_kernels.accept_commit(stats, y, t, h, sigma, window_k.to(dev), "x0_rms", 0.1, verify)
    assert a.tolist() == [e for _, _, e in plan]
    x_ref, _ = reference.accept_commit(stats.cpu(), y.cpu(), t.cpu(), h.cpu(), sigma.cpu(), window_k, "x0_rms", 0.1, verify)
    torch.testing.assert_close(x.cpu().float(), x_ref.float(), **OUT_TOL[dtype])


@pytest.mark.parametrize("where", ["t", "d", "y"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("verify", MODES)
def test_non_finite_never_accepted(backend, where, bad, metric, verify):
    """A NaN/inf in any input of a tested row rejects that row (with tau that accepts anything
    finite); the other samples of the batch are unaffected."""
    _, dev = backend
    window_k = torch.tensor([3, 3])
    n_rows = int(reference.rows_per_sample(window_k, verify).sum())
    g = torch.Generator().manual_seed(2)
    t = torch.randn((n_rows, 2, 33), generator=g)
    d = t + 0.01 * torch.randn((n_rows, 2, 33), generator=g)
    y = torch.randn((n_rows, 2, 33), generator=g)
    broken = 1 if verify == "full" else 0  # a tested row of sample 0
    {"t": t, "d": d, "y": y}[where][broken, 1, 7] = bad
    t, d, y = t.to(dev), d.to(dev), y.to(dev)
    h = torch.full((n_rows,), -0.05, device=dev)
    sigma = torch.full((n_rows,), 0.5, device=dev)
    tau = -2.0 if metric == "cosine" else 1e30  # everything finite passes
    stats = sdsv_kernels.pair_stats(t, d, y, h)
    _, a = sdsv_kernels.accept_commit(stats, y, t, h, sigma, window_k.to(dev), metric, tau, verify)
    assert a.tolist() == [broken, 3]
    _, a_ref = reference.accept_commit(stats.cpu(), y.cpu(), t.cpu(), h.cpu(), sigma.cpu(), window_k, metric, tau, verify)
    assert a_ref.tolist() == [broken, 3]


@pytest.mark.parametrize("dtype", DTYPES.values(), ids=DTYPES.keys())
def test_out_buffer_and_strided_inputs(backend, dtype):
    """x_next into a preallocated buffer (a row slice, and a transposed view -> staging), with
    verification rows gathered as a strided view of a window buffer."""
    _, dev = backend
    window_k = torch.tensor([2, 1])
    y_buf, t_buf, h, sigma = _window(torch.tensor([2, 1, 2, 1]), "endpoints", (5, 23), dtype, dev, seed=6)
    y, t, h, sigma = y_buf[::2], t_buf[::2], h[::2], sigma[::2]  # 4 rows, row stride 2
    assert not y.is_contiguous()
    stats = reference.pair_stats(t.cpu(), t.cpu() * 0.999, y.cpu(), h.cpu())
    x_ref, a_ref = reference.accept_commit(stats, y.cpu(), t.cpu(), h.cpu(), sigma.cpu(), window_k, "cosine", 0.99, "endpoints")
    assert a_ref.tolist() == [2, 1]
    big = torch.zeros((4, 5, 23), device=dev, dtype=dtype)
    out = big[1:3]
    x, a = sdsv_kernels.accept_commit(stats.to(dev), y, t, h, sigma, window_k.to(dev), "cosine", 0.99, "endpoints", out=out)
    assert x.data_ptr() == out.data_ptr() and a.tolist() == [2, 1]
    torch.testing.assert_close(big[1:3].cpu().float(), x_ref.float(), **OUT_TOL[dtype])
    assert (big[0] == 0).all() and (big[3] == 0).all()
    tout = torch.zeros((2, 23, 5), device=dev, dtype=dtype)
    sdsv_kernels.accept_commit(stats.to(dev), y, t, h, sigma, window_k.to(dev), "cosine", 0.99, "endpoints", out=tout.transpose(1, 2))
    torch.testing.assert_close(tout.transpose(1, 2).cpu().float(), x_ref.float(), **OUT_TOL[dtype])


def test_commit_keeps_h_in_fp32():
    """Reference fix: the closing step uses h in fp32 (as rollout_step), not h rounded to bf16."""
    y = torch.zeros((1, 4), dtype=torch.bfloat16)
    t = torch.full((1, 4), 100.0, dtype=torch.bfloat16)
    h = torch.tensor([-0.0123])  # not representable in bf16 (-0.01231 vs -0.012329...)
    x, _ = reference.accept_commit(torch.ones(1, 5), y, t, h, torch.ones(1), torch.tensor([0]), "cosine", 0.0, "full")
    assert x.float()[0, 0].item() == pytest.approx(float(torch.tensor(-1.23).bfloat16()), abs=0)
    assert math.isclose(x.float()[0, 0].item(), -1.23, rel_tol=8e-3)
