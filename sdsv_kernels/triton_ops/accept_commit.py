"""Accept + commit, fused in ONE launch for the whole batch
(spec: :func:`sdsv_kernels.reference.accept_commit`).

Program ``(b, split)`` recomputes sample ``b``'s decision from the ``[R, 5]`` statistics (a few
dozen scalars: its rows' offset is an exclusive cumsum over ``window_k`` done in-kernel), then
writes its chunk of ``x_next[b] = y[r] + h[r] t[r]`` for the commit row ``r``; program
``(b, 0)`` also stores ``accepted[b]``. Nothing is read back to the host.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._common import block_size, num_warps, rows, split_rows
from ..reference import METRIC_IDS, check_accept_args

_EPS = 1e-20  # same guard as the reference


@triton.jit
def _clamp_min(x, lo):
    # torch.clamp_min semantics: NaN stays NaN (tl.maximum would drop it and could accept)
    return tl.where(x < lo, lo, x)


@triton.jit
def _accept_commit_kernel(
    stats_ptr, y_ptr, t_ptr, h_ptr, sigma_ptr, k_ptr, out_ptr, acc_ptr,
    B, D, CHUNK, stride_stats, stride_y, stride_t, stride_out, numel_f, tau, eps,
    METRIC: tl.constexpr, FULL: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK: tl.constexpr,
):
    b = tl.program_id(0).to(tl.int64)
    split = tl.program_id(1).to(tl.int64)
    # rows per sample and the first row of sample b (exclusive cumsum, in-kernel: no host sync)
    bi = tl.arange(0, BLOCK_B)
    kk = tl.load(k_ptr + bi, mask=bi < B, other=0).to(tl.int64)
    if FULL:
        cnt = kk + 1
    else:
        cnt = tl.where(kk > 0, 2, 1).to(tl.int64)
    cnt = tl.where(bi < B, cnt, 0)
    incl = tl.cumsum(cnt, axis=0)
    mine = bi == b
    start = tl.sum(tl.where(mine, incl - cnt, 0), axis=0)
    n = tl.sum(tl.where(mine, cnt, 0), axis=0)
    k = tl.sum(tl.where(mine, kk, 0), axis=0)

    # the metric of each of its rows, exactly as reference.metric_values (IEEE sqrt/div)
    j = tl.arange(0, BLOCK_R).to(tl.int64)
    rm = j < n
    r = start + j
    sp = stats_ptr + r * stride_stats
    dot = tl.load(sp + 0, mask=rm, other=0.0)
    tt = tl.load(sp + 1, mask=rm, other=0.0)
    dd = tl.load(sp + 2, mask=rm, other=0.0)
    df = tl.load(sp + 3, mask=rm, other=0.0)
    nx = tl.load(sp + 4, mask=rm, other=0.0)
    if METRIC == 0:
        val = tl.div_rn(dot, _clamp_min(tl.sqrt_rn(tt * dd), eps))
        passed = val >= tau
    elif METRIC == 1:
        val = tl.div_rn(tl.sqrt_rn(df), _clamp_min(tl.sqrt_rn(tt), eps))
        passed = val <= tau
    elif METRIC == 2:
        hr = tl.load(h_ptr + r, mask=rm, other=0.0)
        val = tl.div_rn(tl.abs(hr) * tl.sqrt_rn(df), _clamp_min(tl.sqrt_rn(nx), eps))
        passed = val <= tau
    else:
        sg = tl.load(sigma_ptr + r, mask=rm, other=0.0)
        val = sg * tl.sqrt_rn(tl.div_rn(df, numel_f))
        passed = val <= tau
    # all five statistics finite (|x| <= FLT_MAX is False for NaN and inf), as the reference
    fin = (tl.abs(dot) <= 3.4028234663852886e38) & (tl.abs(tt) <= 3.4028234663852886e38)
    fin = fin & (tl.abs(dd) <= 3.4028234663852886e38) & (tl.abs(df) <= 3.4028234663852886e38)
    fin = fin & (tl.abs(nx) <= 3.4028234663852886e38)
    passed = passed & fin
    # NaN compares False above, so a broken row never passes
    if FULL:
        failing = tl.where(rm & (j < k) & (passed == 0), j, k)
        a = tl.min(failing, axis=0)
        commit = a
    else:
        fails = tl.sum(tl.where(rm & (passed == 0), 1, 0), axis=0)
        ok = (fails == 0) & (k > 0)
        a = tl.where(ok, k, 0)
        commit = tl.where(ok, n - 1, 0)
    if split == 0:
        tl.store(acc_ptr + b, a)

    row = start + commit
    h = tl.load(h_ptr + row)
    base = split * CHUNK
    offs = tl.arange(0, BLOCK)
    for off in range(0, CHUNK, BLOCK):
        idx = base + off + offs
        m = idx < D
        y = tl.load(y_ptr + row * stride_y + idx, mask=m, other=0.0).to(tl.float32)
        t = tl.load(t_ptr + row * stride_t + idx, mask=m, other=0.0).to(tl.float32)
        tl.store(out_ptr + b * stride_out + idx, (y + h * t).to(out_ptr.dtype.element_ty), mask=m)


def accept_commit_forward(stats, y, t, h, sigma, window_k, metric, tau, verify, out=None):
    """Launcher: ``(x_next [B, ...], accepted [B] int64)``; ``x_next`` is ``out`` when given."""
    check_accept_args(metric, verify)
    dev = y.device
    y2, t2 = rows(y), rows(t)
    numel = y2.shape[1]
    kk = window_k.to(device=dev, dtype=torch.int64).reshape(-1).contiguous()
    n_samples = kk.numel()
    st = stats.to(device=dev, dtype=torch.float32)
    if st.dim() != 2 or st.shape[1] != 5 or st.stride(1) != 1:
        st = st.reshape(-1, 5).contiguous()
    hf = h.reshape(-1).to(device=dev, dtype=torch.float32).contiguous()
    sf = sigma.reshape(-1).to(device=dev, dtype=torch.float32).contiguous()
    n_rows = st.shape[0]
    target = out if out is not None else torch.empty((n_samples, *y.shape[1:]), device=dev, dtype=y.dtype)
    try:
        o2 = target.view(n_samples, -1)
        staging = o2.shape[1] > 1 and o2.stride(1) != 1
    except RuntimeError:
        staging = True
    if staging:
        o2 = torch.empty((n_samples, numel), device=dev, dtype=target.dtype)
    accepted = torch.empty(n_samples, device=dev, dtype=torch.int64)
    if n_samples:
        block = block_size(numel)
        splits, chunk = split_rows(numel, n_samples, block, dev)
        _accept_commit_kernel[(n_samples, splits)](
            st, y2, t2, hf, sf, kk, o2, accepted,
            n_samples, numel, chunk, st.stride(0), y2.stride(0), t2.stride(0), o2.stride(0),
            float(numel), float(tau), _EPS,
            METRIC=METRIC_IDS[metric], FULL=verify == "full",
            BLOCK_B=triton.next_power_of_2(n_samples), BLOCK_R=triton.next_power_of_2(max(n_rows, 1)),
            BLOCK=block, num_warps=num_warps(),
        )
    if staging:
        target.copy_(o2.view(target.shape))
    return target, accepted
