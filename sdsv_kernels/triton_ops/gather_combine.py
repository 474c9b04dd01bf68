"""Gather + linear combination per row,
``out[r] = c[r,0] base[r] + sum_a c[r,a+1] bank[index[r,a]]`` (spec:
:func:`sdsv_kernels.reference.gather_combine`).

Program ``(r, split)`` reads its row's ``A`` slot indices and ``A + 1`` coefficients (scalars) and
streams its chunk of ``base[r]`` and of each gathered ``bank`` row once: the anchors are read in
place, never copied into a gathered ``[R, A, ...]`` tensor. The coefficients' dtype (fp32, or
fp64 for fp64 data) is the accumulation dtype.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._common import block_size, num_warps, row_view_ok, rows, split_rows
from ..reference import check_gather_combine_args


@triton.jit
def _gather_combine_kernel(
    base_ptr, bank_ptr, index_ptr, coeffs_ptr, out_ptr,
    S, A, D, CHUNK, stride_base, stride_bank, stride_out,
    BLOCK: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    split = tl.program_id(1).to(tl.int64)
    c_row = coeffs_ptr + row * (A + 1)
    i_row = index_ptr + row * A
    c0 = tl.load(c_row)
    start = split * CHUNK
    offs = tl.arange(0, BLOCK)
    for off in range(0, CHUNK, BLOCK):
        idx = start + off + offs
        m = idx < D
        # upcast right after the load (the interpreter mishandles bf16 math); fp64 stays fp64
        acc = c0 * tl.load(base_ptr + row * stride_base + idx, mask=m, other=0.0).to(c0.dtype)
        for a in range(0, A):
            j = tl.load(i_row + a)
            c = tl.load(c_row + 1 + a)
            # the index range is not checked on the host for GPU tensors (it would sync): an
            # out-of-range slot reads slot 0 instead (always there, see the launcher) and its
            # row comes out NaN, so a bad index is visible and never reads outside bank
            ok = (j >= 0) & (j < S)
            v = tl.load(bank_ptr + tl.where(ok, j, 0) * stride_bank + idx, mask=m, other=0.0).to(c0.dtype)
            acc = tl.where(ok, acc + c * v, float("nan"))
        tl.store(out_ptr + row * stride_out + idx, acc.to(out_ptr.dtype.element_ty), mask=m)


def gather_combine_forward(base, bank, index, coeffs, out=None) -> torch.Tensor:
    """Launcher. ``out`` (e.g. ``base`` itself, or a buffer row) is written in place when its
    rows are unit-stride inside, else through one temporary."""
    check_gather_combine_args(base, bank, index, coeffs, out)
    return _launch(base, bank, index, coeffs, out)


def _launch(base, bank, index, coeffs, out):
    """The launch itself, without the argument check (tests drive the in-kernel index guard)."""
    n_rows, n_terms = index.shape
    base2 = rows(base)
    numel = base2.shape[1]
    # with no terms no slot is read; with an empty bank (possible only unchecked, on a GPU)
    # every index is out of range and reads row 0 of base instead: either way base stands in
    bank2 = rows(bank) if n_terms and bank.shape[0] else base2
    idx = index.contiguous()
    cf = coeffs.contiguous()
    target = out if out is not None else torch.empty(base.shape, device=base.device, dtype=base.dtype)
    staging = not row_view_ok(target)
    o2 = torch.empty((n_rows, numel), device=base.device, dtype=base.dtype) if staging else target.view(n_rows, -1)
    if numel:
        block = block_size(numel)
        splits, chunk = split_rows(numel, n_rows, block, base.device)
        _gather_combine_kernel[(n_rows, splits)](
            base2, bank2, idx, cf, o2,
            bank.shape[0], n_terms, numel, chunk, base2.stride(0), bank2.stride(0), o2.stride(0),
            BLOCK=block, num_warps=num_warps(),
        )
    if staging:
        target.copy_(o2.view(target.shape))
    return target
