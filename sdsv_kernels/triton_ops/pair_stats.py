"""Fused pair statistics: ``[dot(t,d), |t|^2, |d|^2, |t-d|^2, |y+ht|^2]`` per row, one read of
each input, fp32 accumulation, no atomics (spec: :func:`sdsv_kernels.reference.pair_stats`).

Two stages: ``_pair_stats_kernel`` runs ``R x splits`` programs, each reducing one chunk of one
row into 5 fp32 partial sums; the partials ``[R, splits, 5]`` are then summed per row in a fixed
order. Same shape, same device -> same bits.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._common import block_size, num_warps, rows, split_rows


@triton.jit
def _pair_stats_kernel(
    t_ptr, d_ptr, y_ptr, h_ptr, part_ptr,
    D, CHUNK, stride_t, stride_d, stride_y, splits,
    BLOCK: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    split = tl.program_id(1).to(tl.int64)
    h = tl.load(h_ptr + row).to(tl.float32)
    start = split * CHUNK
    offs = tl.arange(0, BLOCK)
    acc_dot = tl.zeros([BLOCK], dtype=tl.float32)
    acc_tt = tl.zeros([BLOCK], dtype=tl.float32)
    acc_dd = tl.zeros([BLOCK], dtype=tl.float32)
    acc_diff = tl.zeros([BLOCK], dtype=tl.float32)
    acc_next = tl.zeros([BLOCK], dtype=tl.float32)
    for off in range(0, CHUNK, BLOCK):
        idx = start + off + offs
        m = idx < D
        # upcast right after the load: fp32 arithmetic only (the interpreter mishandles bf16 math)
        t = tl.load(t_ptr + row * stride_t + idx, mask=m, other=0.0).to(tl.float32)
        d = tl.load(d_ptr + row * stride_d + idx, mask=m, other=0.0).to(tl.float32)
        y = tl.load(y_ptr + row * stride_y + idx, mask=m, other=0.0).to(tl.float32)
        diff = t - d
        nxt = y + h * t
        acc_dot += t * d
        acc_tt += t * t
        acc_dd += d * d
        acc_diff += diff * diff
        acc_next += nxt * nxt
    base = part_ptr + (row * splits + split) * 5
    tl.store(base + 0, tl.sum(acc_dot, axis=0))
    tl.store(base + 1, tl.sum(acc_tt, axis=0))
    tl.store(base + 2, tl.sum(acc_dd, axis=0))
    tl.store(base + 3, tl.sum(acc_diff, axis=0))
    tl.store(base + 4, tl.sum(acc_next, axis=0))


def pair_stats_forward(t: torch.Tensor, d: torch.Tensor, y: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """Launcher: ``[R, 5]`` fp32 statistics of the ``R`` rows of ``t``, ``d``, ``y``."""
    n_rows = t.shape[0]
    t2, d2, y2 = rows(t), rows(d), rows(y)
    numel = t2.shape[1]
    if d2.shape != t2.shape or y2.shape != t2.shape:
        raise ValueError(f"pair_stats: t, d, y must have the same shape, got {tuple(t.shape)}, {tuple(d.shape)}, {tuple(y.shape)}")
    hf = h.reshape(-1).to(device=t.device, dtype=torch.float32).contiguous()
    if hf.numel() != n_rows:
        raise ValueError(f"pair_stats: h has {hf.numel()} values for {n_rows} rows")
    if n_rows == 0:
        return torch.zeros((0, 5), device=t.device, dtype=torch.float32)
    block = block_size(numel)
    splits, chunk = split_rows(numel, n_rows, block, t.device)
    part = torch.empty((n_rows, splits, 5), device=t.device, dtype=torch.float32)
    _pair_stats_kernel[(n_rows, splits)](
        t2, d2, y2, hf, part,
        numel, chunk, t2.stride(0), d2.stride(0), y2.stride(0), splits,
        BLOCK=block, num_warps=num_warps(),
    )
    # fixed-order reduction of the (few) partials of each row; a no-op view when splits == 1
    return part[:, 0, :] if splits == 1 else part.sum(dim=1)
