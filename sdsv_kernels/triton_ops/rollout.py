"""Draft rollout step ``out = x + h * v``, written into a preallocated buffer row (spec:
:func:`sdsv_kernels.reference.rollout_step`)."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._common import block_size, num_warps, row_view_ok, rows, split_rows


@triton.jit
def _rollout_kernel(
    x_ptr, v_ptr, h_ptr, out_ptr,
    D, CHUNK, stride_x, stride_v, stride_out, h_step,
    BLOCK: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    split = tl.program_id(1).to(tl.int64)
    h = tl.load(h_ptr + row * h_step).to(tl.float32)
    start = split * CHUNK
    offs = tl.arange(0, BLOCK)
    for off in range(0, CHUNK, BLOCK):
        idx = start + off + offs
        m = idx < D
        x = tl.load(x_ptr + row * stride_x + idx, mask=m, other=0.0).to(tl.float32)
        v = tl.load(v_ptr + row * stride_v + idx, mask=m, other=0.0).to(tl.float32)
        tl.store(out_ptr + row * stride_out + idx, (x + h * v).to(out_ptr.dtype.element_ty), mask=m)


def rollout_step_forward(x, v, h, out=None) -> torch.Tensor:
    """Launcher. ``h``: one value or one per row. ``out`` (e.g. a window-buffer view)
    is written in place when its rows are unit-stride inside, else through one temporary."""
    n_rows = x.shape[0]
    x2, v2 = rows(x), rows(v)
    numel = x2.shape[1]
    hf = torch.as_tensor(h, device=x.device).reshape(-1).to(torch.float32).contiguous()
    if hf.numel() not in (1, n_rows):
        raise ValueError(f"rollout_step: h has {hf.numel()} values for {n_rows} rows")
    target = out if out is not None else torch.empty(x.shape, device=x.device, dtype=x.dtype)
    o2 = target.view(n_rows, numel) if row_view_ok(target) else None
    staging = o2 is None
    if staging:
        o2 = torch.empty((n_rows, numel), device=x.device, dtype=target.dtype)
    if n_rows and numel:
        block = block_size(numel)
        splits, chunk = split_rows(numel, n_rows, block, x.device)
        _rollout_kernel[(n_rows, splits)](
            x2, v2, hf, o2,
            numel, chunk, x2.stride(0), v2.stride(0), o2.stride(0), 1 if hf.numel() > 1 else 0,
            BLOCK=block, num_warps=num_warps(),
        )
    if staging:
        target.copy_(o2.view(target.shape))
    return target
