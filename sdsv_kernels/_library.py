"""``torch.library`` custom ops ``sdsv::*``: one opaque node per op under ``torch.compile``,
with a fake (meta) implementation for tracing. The real implementation picks the backend at
*run* time (:func:`sdsv_kernels._backend.dispatch`), so ``use_backend`` / ``SDSV_BACKEND`` also
steer compiled code.

A custom op may not return an alias of an input, so the ``out=`` forms are separate ops that
mutate ``out`` (``accept_commit_out`` returns only the counts, ``rollout_step_out`` and
``gather_combine_out`` nothing).
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from ._backend import dispatch
from .reference import check_gather_combine_args


@torch.library.custom_op("sdsv::pair_stats", mutates_args=())
def pair_stats_op(t: Tensor, d: Tensor, y: Tensor, h: Tensor) -> Tensor:
    return dispatch("pair_stats", t)(t, d, y, h).contiguous()


@pair_stats_op.register_fake
def _(t, d, y, h):
    return t.new_empty((t.shape[0], 5), dtype=torch.float32)


@torch.library.custom_op("sdsv::accept_commit", mutates_args=())
def accept_commit_op(
    stats: Tensor, y: Tensor, t: Tensor, h: Tensor, sigma: Tensor, window_k: Tensor, metric: str, tau: float, verify: str
) -> tuple[Tensor, Tensor]:
    x, a = dispatch("accept_commit", y)(stats, y, t, h, sigma, window_k, metric, tau, verify, None)
    return x.contiguous(), a


@accept_commit_op.register_fake
def _(stats, y, t, h, sigma, window_k, metric, tau, verify):
    b = window_k.shape[0]
    return y.new_empty((b, *y.shape[1:])), window_k.new_empty((b,), dtype=torch.int64)


@torch.library.custom_op("sdsv::accept_commit_out", mutates_args=("out",))
def accept_commit_out_op(
    stats: Tensor, y: Tensor, t: Tensor, h: Tensor, sigma: Tensor, window_k: Tensor, metric: str, tau: float, verify: str,
    out: Tensor,
) -> Tensor:
    _, a = dispatch("accept_commit", y)(stats, y, t, h, sigma, window_k, metric, tau, verify, out)
    return a


@accept_commit_out_op.register_fake
def _(stats, y, t, h, sigma, window_k, metric, tau, verify, out):
    return window_k.new_empty((window_k.shape[0],), dtype=torch.int64)


@torch.library.custom_op("sdsv::rollout_step", mutates_args=())
def rollout_step_op(x: Tensor, v: Tensor, h: Tensor, uncond: Optional[Tensor], scale: Optional[Tensor]) -> Tensor:
    return dispatch("rollout_step", x)(x, v, h, None, uncond, scale).contiguous()


@rollout_step_op.register_fake
def _(x, v, h, uncond, scale):
    return x.new_empty(x.shape)


@torch.library.custom_op("sdsv::rollout_step_out", mutates_args=("out",))
def rollout_step_out_op(
    x: Tensor, v: Tensor, h: Tensor, out: Tensor, uncond: Optional[Tensor], scale: Optional[Tensor]
) -> None:
    dispatch("rollout_step", x)(x, v, h, out, uncond, scale)


@rollout_step_out_op.register_fake
def _(x, v, h, out, uncond, scale):
    return None


@torch.library.custom_op("sdsv::gather_combine", mutates_args=())
def gather_combine_op(base: Tensor, bank: Tensor, index: Tensor, coeffs: Tensor) -> Tensor:
    return dispatch("gather_combine", base)(base, bank, index, coeffs, None).contiguous()


@gather_combine_op.register_fake
def _(base, bank, index, coeffs):
    # the layout check at trace time too; it also stops a call that mixes meta tensors with real
    # ones, which the dispatcher routes here, from returning an uninitialised tensor
    check_gather_combine_args(base, bank, index, coeffs, check_range=False)
    return base.new_empty(base.shape)


@torch.library.custom_op("sdsv::gather_combine_out", mutates_args=("out",))
def gather_combine_out_op(base: Tensor, bank: Tensor, index: Tensor, coeffs: Tensor, out: Tensor) -> None:
    dispatch("gather_combine", base)(base, bank, index, coeffs, out)


@gather_combine_out_op.register_fake
def _(base, bank, index, coeffs, out):
    check_gather_combine_args(base, bank, index, coeffs, out, check_range=False)
    return None
