"""Shared helpers of the Triton kernels: launch geometry and the row layout.

Every op treats a tensor ``[R, ...]`` as ``R`` rows of ``D`` elements. Kernels take a pointer,
a row stride and assume the elements of a row are contiguous; :func:`rows` returns such a 2-D
view and copies (once, documented) only when the latent dims themselves are not contiguous.
"""

from __future__ import annotations

import functools
import math
import os

import torch
import triton


def interpreting() -> bool:
    """True when Triton runs kernels on the CPU through its interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


# Elements one program touches per loop iteration. The interpreter executes one program at a
# time with numpy, so there a big block (few iterations, few programs) is what keeps tests fast.
BLOCK_GPU = 2048
BLOCK_INTERPRET = 8192


def block_size(numel: int) -> int:
    cap = BLOCK_INTERPRET if interpreting() else BLOCK_GPU
    return min(cap, triton.next_power_of_2(max(int(numel), 16)))


@functools.lru_cache(maxsize=None)
def _sm_count(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def split_rows(numel: int, n_rows: int, block: int, device: torch.device) -> tuple[int, int]:
    """``(splits, chunk)``: each of the ``n_rows`` rows is cut into ``splits`` chunks of
    ``chunk`` elements (a multiple of ``block``), so that a launch of ``n_rows x splits``
    programs fills the GPU even when ``R`` is 2. Chunk boundaries depend only on the shape and
    the device, never on timing, so the reduction order (and the result) is deterministic."""
    if interpreting() or device.type != "cuda":
        splits = 1
    else:
        want = 4 * _sm_count(device.index if device.index is not None else torch.cuda.current_device())
        splits = max(1, min(triton.cdiv(want, max(n_rows, 1)), triton.cdiv(numel, 8 * block)))
    chunk = triton.cdiv(triton.cdiv(numel, splits), block) * block
    return triton.cdiv(numel, chunk), chunk


def rows(x: torch.Tensor) -> torch.Tensor:
    """``x`` as ``[R, D]`` with unit stride inside a row (a view when possible, else one copy)."""
    x2 = x.reshape(x.shape[0], math.prod(x.shape[1:]))  # not -1: ambiguous for empty rows
    if x2.shape[1] > 1 and x2.stride(1) != 1:
        x2 = x2.contiguous()
    return x2


def row_view_ok(t: torch.Tensor) -> bool:
    """Whether ``t.view(R, D)`` exists with unit inner stride, so a kernel's writes reach ``t``
    (else the launcher writes a temporary and copies it into ``t``)."""
    try:
        v = t.view(t.shape[0], math.prod(t.shape[1:]))
    except RuntimeError:
        return False
    return v.shape[1] <= 1 or v.stride(1) == 1


def num_warps() -> int:
    return 1 if interpreting() else 8
