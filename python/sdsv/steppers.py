"""Step rules as the sampler applies them: one object per call, made by :func:`stepper_for`.

A stepper owns how a round's states are laid out and how a step is applied to them:

* :class:`EulerStepper` — Euler with the fused ops: a draft step is ``rollout_step``, and a
  window's closing target step is the ``x_next`` of the round's ``accept_commit`` (the op that
  decides the windows also takes their closing steps).
* :class:`MatrixStepper` — any rule of :mod:`sdsv.solvers` with multistep history: each sample
  carries its history rows; a round buffer holds ``[states | draft outputs | history rows]`` and
  every step applies the rule's matrix rows with one ``gather_combine`` each, so a window's
  rollout steps its own history and a rejected window's history is dropped with it.

The sampler calls ``open_round`` (the round's state and draft-output buffers, filled with the
samples' committed states), ``roll`` (draft steps inside the buffer), ``close`` (the windows'
closing target steps into the committed latents) and ``draft_steps`` (unverified draft steps).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

import sdsv_kernels

from ._rows import gather_rows, rows_view, scatter_rows
from .solvers import Euler, Solver, check_matrices


@dataclass
class Closing:
    """A window's closing target step: from round-buffer ``state_row`` with the target's output at
    verification row ``t_row``, at schedule ``step``, into ``sample``; ``window`` is its index among
    the round's verified windows (the row of the fused op's ``x_next``)."""

    window: int
    sample: int
    state_row: int
    t_row: int
    step: int


class Stepper:
    """See the module docstring. ``fused``: its closing steps come from the fused decision op."""

    fused = False

    def open_round(self, x: torch.Tensor, active: Sequence[int], offsets: Sequence[int], total: int):
        """``(states, drafted)``: ``total`` state rows (window ``i``'s from ``offsets[i]``, its first
        the sample's committed state) and as many zeroed draft-output rows."""
        raise NotImplementedError

    def roll(self, states, y_src, d_src, src_rows: Sequence[int], steps: Sequence[int]) -> None:
        """Draft steps inside the round: state ``r + 1`` from state ``r`` (``y_src``) with ``d_src``."""
        raise NotImplementedError

    def close(self, x: torch.Tensor, t: torch.Tensor, closings: Sequence[Closing], n_windows: int, x_next) -> None:
        """The closing target steps into ``x``; ``x_next``: the fused op's result (fused steppers)."""
        raise NotImplementedError

    def draft_steps(self, x, states, drafted, rows: Sequence[int], steps: Sequence[int], samples: Sequence[int]) -> None:
        """One draft step of each of ``samples`` from round-buffer ``rows``, into ``x``."""
        raise NotImplementedError


class EulerStepper(Stepper):
    fused = True

    def __init__(self, h: torch.Tensor):
        self.h = h  # the schedule's step sizes, on the latents' device

    def open_round(self, x, active, offsets, total):
        states = x.new_empty((total, *x.shape[1:]))
        drafted = torch.zeros_like(states)
        scatter_rows(states, offsets, gather_rows(x, active))
        return states, drafted

    def roll(self, states, y_src, d_src, src_rows, steps):
        h = gather_rows(self.h, steps)
        dst_rows = [r + 1 for r in src_rows]
        dst = rows_view(states, dst_rows)
        if dst is not None:
            sdsv_kernels.rollout_step(y_src, d_src, h, out=dst)
        else:
            scatter_rows(states, dst_rows, sdsv_kernels.rollout_step(y_src, d_src, h))

    def close(self, x, t, closings, n_windows, x_next):
        if len(closings) == n_windows:
            scatter_rows(x, [c.sample for c in closings], x_next)
        elif closings:
            kept = torch.tensor([c.window for c in closings], device=x.device)
            scatter_rows(x, [c.sample for c in closings], x_next.index_select(0, kept))

    def draft_steps(self, x, states, drafted, rows, steps, samples):
        h = gather_rows(self.h, steps)
        scatter_rows(x, samples, sdsv_kernels.rollout_step(gather_rows(states, rows), gather_rows(drafted, rows), h))


class MatrixStepper(Stepper):
    def __init__(self, solver: Solver, sigmas: Sequence[float], like: torch.Tensor, dtype: torch.dtype):
        self.m = solver.history
        mats = solver.step_matrices(sigmas)
        check_matrices(solver, mats, len(sigmas) - 1)
        table = torch.tensor(mats, dtype=dtype, device=like.device)  # [steps, m + 1, m + 2]
        self.mat_rows = [table[:, o].contiguous() for o in range(self.m + 1)]
        self.hist = like.new_zeros((self.m, *like.shape))  # zeros: the first step's weight on it is 0
        self.dev = like.device

    def open_round(self, x, active, offsets, total):
        self.total = total
        self.buf = x.new_empty(((2 + self.m) * total, *x.shape[1:]))
        states, drafted = self.buf[:total], self.buf[total: 2 * total]
        drafted.zero_()
        for h in range(self.m):
            scatter_rows(self._hist_rows(h), offsets, gather_rows(self.hist[h], active))
        scatter_rows(states, offsets, gather_rows(x, active))
        return states, drafted

    def _hist_rows(self, h: int) -> torch.Tensor:
        return self.buf[(2 + h) * self.total: (3 + h) * self.total]

    def _apply(self, v: torch.Tensor, rows: Sequence[int], steps: Sequence[int], outs) -> list[torch.Tensor]:
        """The rule's step from the round buffer's state ``rows`` (their history rows alongside)
        with model outputs ``v``: ``[y_next, H_next_0, ...]``, written into ``outs`` (views or None)."""
        total = self.total
        index = torch.tensor([[r] + [(2 + h) * total + r for h in range(self.m)] for r in rows], device=self.dev)
        res = []
        for o, out in enumerate(outs):
            coeffs = gather_rows(self.mat_rows[o], steps).contiguous()
            res.append(sdsv_kernels.gather_combine(v, self.buf, index, coeffs, out=out))
        return res

    def _commit(self, x, v, rows, steps, samples) -> None:
        """Steps from buffer ``rows`` with outputs ``v``: the samples' next states and history."""
        dests = [x] + [self.hist[h] for h in range(self.m)]
        views = [rows_view(d, samples) for d in dests]
        res = self._apply(v, rows, steps, views)
        for d, view, r in zip(dests, views, res):
            if view is None:
                scatter_rows(d, samples, r)

    def roll(self, states, y_src, d_src, src_rows, steps):
        # the draft's step, its history alongside (rows never overlap: r -> r + 1)
        dst_rows = [r + 1 for r in src_rows]
        dsts = [rows_view(states, dst_rows)] + [rows_view(self._hist_rows(h), dst_rows) for h in range(self.m)]
        res = self._apply(d_src, src_rows, steps, dsts)
        for h, (view, r) in enumerate(zip(dsts, res)):
            if view is None:
                scatter_rows(states if h == 0 else self._hist_rows(h - 1), dst_rows, r)

    def close(self, x, t, closings, n_windows, x_next):
        if not closings:
            return
        t_rows = [c.t_row for c in closings]
        v = t if t_rows == list(range(t.shape[0])) else gather_rows(t, t_rows)
        self._commit(x, v, [c.state_row for c in closings], [c.step for c in closings], [c.sample for c in closings])

    def draft_steps(self, x, states, drafted, rows, steps, samples):
        self._commit(x, gather_rows(drafted, rows), rows, steps, samples)


def stepper_for(solver: Solver, sigmas: Sequence[float], like: torch.Tensor, dtype: torch.dtype,
                h: torch.Tensor) -> Stepper:
    """The stepper of ``solver`` for one call: Euler's fused ops, or the rule's matrices."""
    if isinstance(solver, Euler):
        return EulerStepper(h)
    return MatrixStepper(solver, sigmas, like, dtype)
