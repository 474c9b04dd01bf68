"""``torch.library`` custom ops ``sdsv::*``: one opaque node per op under ``torch.compile``,
with a fake (meta) implementation for tracing. The real implementation picks the backend at
*run* time (:func:`sdsv_kernels._backend.dispatch`), so ``use_backend`` / ``SDSV_BACKEND`` also
steer compiled code.

A custom op may not return an alias of an input, so the ``out=`` forms are separate ops that
mutate ``out`` (``accept_commit_out`` returns only the counts, ``rollout_step_out`` and
``gather_combine_out`` nothing).

Each op's implementation is also a plain function of this module, which the public wrappers call
directly outside ``torch.compile`` (:func:`sdsv_kernels._op`): right after a model forward the
dispatcher's trip through a custom op costs more than the small op itself, a sizeable share of the
sampler's own time when a round makes half a dozen op calls around a cheap draft
(docs/self_draft.md, the sampler's own work).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ._backend import dispatch
from .reference import check_gather_combine_args


def pair_stats(t: Tensor, d: Tensor, y: Tensor, h: Tensor) -> Tensor:
    return dispatch("pair_stats", t)(t, d, y, h).contiguous()


pair_stats_op = torch.library.custom_op("sdsv::pair_stats", mutates_args=())(pair_stats)


@pair_stats_op.register_fake
def _(t, d, y, h):
    return t.new_empty((t.shape[0], 5), dtype=torch.float32)


def accept_commit(
    stats: Tensor, y: Tensor, t: Tensor, h: Tensor, sigma: Tensor, window_k: Tensor, metric: str, tau: float, verify: str
) -> tuple[Tensor, Tensor]:
    x, a = dispatch("accept_commit", y)(stats, y, t, h, sigma, window_k, metric, tau, verify, None)
    return x.contiguous(), a


accept_commit_op = torch.library.custom_op("sdsv::accept_commit", mutates_args=())(accept_commit)


@accept_commit_op.register_fake
def _(stats, y, t, h, sigma, window_k, metric, tau, verify):
    b = window_k.shape[0]
    return y.new_empty((b, *y.shape[1:])), window_k.new_empty((b,), dtype=torch.int64)


def accept_commit_out(
    stats: Tensor, y: Tensor, t: Tensor, h: Tensor, sigma: Tensor, window_k: Tensor, metric: str, tau: float, verify: str,
    out: Tensor,
) -> Tensor:
    _, a = dispatch("accept_commit", y)(stats, y, t, h, sigma, window_k, metric, tau, verify, out)
    return a


accept_commit_out_op = torch.library.custom_op("sdsv::accept_commit_out", mutates_args=("out",))(accept_commit_out)


@accept_commit_out_op.register_fake
def _(stats, y, t, h, sigma, window_k, metric, tau, verify, out):
    return window_k.new_empty((window_k.shape[0],), dtype=torch.int64)


def rollout_step(x: Tensor, v: Tensor, h: Tensor) -> Tensor:
    return dispatch("rollout_step", x)(x, v, h, None).contiguous()


rollout_step_op = torch.library.custom_op("sdsv::rollout_step", mutates_args=())(rollout_step)


@rollout_step_op.register_fake
def _(x, v, h):
    return x.new_empty(x.shape)


def rollout_step_out(x: Tensor, v: Tensor, h: Tensor, out: Tensor) -> None:
    dispatch("rollout_step", x)(x, v, h, out)


rollout_step_out_op = torch.library.custom_op("sdsv::rollout_step_out", mutates_args=("out",))(rollout_step_out)


@rollout_step_out_op.register_fake
def _(x, v, h, out):
    return None


def gather_combine(base: Tensor, bank: Tensor, index: Tensor, coeffs: Tensor) -> Tensor:
    return dispatch("gather_combine", base)(base, bank, index, coeffs, None).contiguous()


gather_combine_op = torch.library.custom_op("sdsv::gather_combine", mutates_args=())(gather_combine)


@gather_combine_op.register_fake
def _(base, bank, index, coeffs):
    # the layout check at trace time too; it also stops a call that mixes meta tensors with real
    # ones, which the dispatcher routes here, from returning an uninitialised tensor
    check_gather_combine_args(base, bank, index, coeffs, check_range=False)
    return base.new_empty(base.shape)


def gather_combine_out(base: Tensor, bank: Tensor, index: Tensor, coeffs: Tensor, out: Tensor) -> None:
    dispatch("gather_combine", base)(base, bank, index, coeffs, out)


gather_combine_out_op = torch.library.custom_op("sdsv::gather_combine_out", mutates_args=("out",))(gather_combine_out)


@gather_combine_out_op.register_fake
def _(base, bank, index, coeffs, out):
    check_gather_combine_args(base, bank, index, coeffs, out, check_range=False)
    return None
