"""Model rows sharded over ``torch.distributed`` ranks: the same sampler on every rank (SPMD).

Every rank runs the same ``sdsv.sample`` call on the same inputs. A wrapped denoiser evaluates a
contiguous share of the rows of each call (shares differ by at most one row; a rank with none
still takes part in the collective) and the full output is gathered onto every rank, so every
rank holds bit-identical outputs and reaches the same acceptance decisions with no further
communication. Where to wrap decides what is sharded:

* ``ShardedDenoiser(target)`` shards the sampler's rows: the verification batch of a round
  (2 rows per window with ``endpoints``, k+1 with ``full``, rows of every sample together);
* ``ClassifierFreeGuidance(ShardedDenoiser(model), ...)`` shards the model's rows after guidance
  doubled them: with batch 1 the conditional and unconditional halves go to two ranks;
* ``SelfDraft(ShardedSplit(split))``: the forecast self-draft, sharded the same way; every rank's
  anchor bank receives every row's residual (gathered like the outputs), so the anchors — and
  the forecasts — are identical on every rank.

Every call first checks, with one small collective, that all ranks got the same rows and
sigmas (a rank with other noise, seeds or schedule is an error on every rank, not a silent
divergence). A rank that fails mid-run leaves the others blocked in a collective until the
process group's timeout (``init_process_group(..., timeout=timedelta(seconds=...))``), which then
raises there; keep it short for interactive runs.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from .contract import is_pure, per_row_names


def rank_and_world(group=None) -> tuple[int, int]:
    """This process's rank and the group's size; a clear error without a process group."""
    if not dist.is_available() or not dist.is_initialized():
        raise RuntimeError("sdsv.distributed needs an initialised process group: call "
                           "torch.distributed.init_process_group(...) first (torchrun sets its environment)")
    return dist.get_rank(group), dist.get_world_size(group)


def share_bounds(rows: int, world: int) -> list[tuple[int, int]]:
    """Contiguous ``[lo, hi)`` of every rank; the first ``rows % world`` ranks take one row more."""
    base, extra = divmod(rows, world)
    out, lo = [], 0
    for r in range(world):
        hi = lo + base + (1 if r < extra else 0)
        out.append((lo, hi))
        lo = hi
    return out


def gather_rows(part: torch.Tensor | None, bounds: list[tuple[int, int]], feature, like: torch.Tensor,
                group) -> torch.Tensor:
    """Every rank's rows (``part``: this rank's, None when it has none) concatenated in rank order,
    on every rank. Shares are padded to the largest for ``all_gather``."""
    width = max(hi - lo for lo, hi in bounds)
    buf = like.new_zeros((width, *feature))
    if part is not None and part.shape[0]:
        buf[: part.shape[0]] = part
    parts = [torch.empty_like(buf) for _ in bounds]
    dist.all_gather(parts, buf, group=group)
    return torch.cat([p[: hi - lo] for p, (lo, hi) in zip(parts, bounds)])


def _check_same(x: torch.Tensor, sigma: torch.Tensor, group, world: int) -> None:
    """One small all_gather: the row count and checksums of the rows and sigmas of this call.
    Built on the rows' device: NCCL gathers GPU tensors only (gloo, CPU ones)."""
    xd = x.detach().double()
    mine = torch.stack([xd.new_tensor(float(x.shape[0])), xd.sum(), xd.abs().sum(),
                        sigma.detach().to(xd.device, torch.float64).sum()])
    everyone = [torch.empty_like(mine) for _ in range(world)]
    dist.all_gather(everyone, mine, group=group)
    if any(not torch.equal(e, everyone[0]) for e in everyone[1:]):
        raise RuntimeError("sdsv.distributed: the ranks called the model with different rows (different noise, "
                           "seeds, conditioning or sigmas?): every rank must run the same sampling call")


def _slice_cond(cond: dict, per_row: set, lo: int, hi: int) -> dict:
    return {k: (v[lo:hi] if k in per_row else v) for k, v in cond.items()}


class ShardedDenoiser:
    """``denoiser(x, sigma, **cond)`` with its rows spread over the ranks of ``group`` (default:
    the world) and the output gathered on every rank. ``per_row``: the conditioning kwargs that
    hold one row per row of ``x`` (default: every tensor whose first dimension is the row count;
    name them when a shared tensor could have that length). ``check_inputs``: compare the ranks'
    rows and sigmas at every call (one small collective)."""

    def __init__(self, denoiser, group=None, per_row=None, check_inputs: bool = True):
        if not callable(denoiser):
            raise TypeError(f"denoiser must be callable, got {type(denoiser).__name__}")
        rank_and_world(group)  # refuse early: no process group
        self.denoiser, self.group, self.per_row, self.check_inputs = denoiser, group, per_row, check_inputs

    @property
    def sdsv_pure(self) -> bool:
        return is_pure(self.denoiser)

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, **cond) -> torch.Tensor:
        rank, world = rank_and_world(self.group)
        if self.check_inputs:
            _check_same(x, sigma, self.group, world)
        bounds = share_bounds(x.shape[0], world)
        lo, hi = bounds[rank]
        part = None
        if hi > lo:
            part = self.denoiser(x[lo:hi], sigma[lo:hi], **_slice_cond(cond, per_row_names(cond, x.shape[0], self.per_row),
                                                                        lo, hi))
        return gather_rows(part, bounds, x.shape[1:], x, self.group)

    def __repr__(self) -> str:
        return f"ShardedDenoiser({self.denoiser!r})"


class ShardedSplit:
    """A split model (:class:`sdsv.forecast.SplitModel`) whose calls are sharded like
    :class:`ShardedDenoiser`'s; the residuals of a target call are gathered too, so every rank's
    anchor bank sees every row. A split that stacks guidance branches itself (``model_rows``)
    keeps its branch-major row order: each branch is gathered separately."""

    def __init__(self, split, group=None, per_row=None, check_inputs: bool = True):
        for name in ("forward_with_residual", "forward_with_forecast"):
            if not callable(getattr(split, name, None)):
                raise TypeError(f"ShardedSplit needs a split model with {name}(); got {type(split).__name__}")
        rank_and_world(group)
        self.split, self.group, self.per_row, self.check_inputs = split, group, per_row, check_inputs
        self._meta = None  # the residual's (dtype, feature shape), agreed once per ShardedSplit
        if hasattr(split, "model_rows"):
            self.model_rows = split.model_rows

    @property
    def sdsv_pure(self) -> bool:
        return bool(getattr(self.split, "sdsv_pure", False))

    def _branches(self, x, cond) -> int:
        return self.split.model_rows(x, **cond) // x.shape[0] if hasattr(self.split, "model_rows") else 1

    def _prepare(self, x, sigma, cond):
        rank, world = rank_and_world(self.group)
        if self.check_inputs:
            _check_same(x, sigma, self.group, world)
        bounds = share_bounds(x.shape[0], world)
        lo, hi = bounds[rank]
        return bounds, lo, hi, _slice_cond(cond, per_row_names(cond, x.shape[0], self.per_row), lo, hi)

    def _gather_branches(self, part, bounds, rows: int, branches: int, like) -> torch.Tensor:
        """Gather ``part`` ([branches * share rows, ...], branch-major) into [branches * rows, ...]."""
        feature = like.shape[1:]
        chunks = part.chunk(branches) if part is not None else [None] * branches
        return torch.cat([gather_rows(c, bounds, feature, like, self.group) for c in chunks])

    def forward_with_residual(self, x, sigma, **cond):
        bounds, lo, hi, part_cond = self._prepare(x, sigma, cond)
        branches = self._branches(x, cond)
        v = r = None
        if hi > lo:
            v, r = self.split.forward_with_residual(x[lo:hi], sigma[lo:hi], **part_cond)
        # every rank must know the residual's shape and dtype, also one without rows: ask the ranks once
        if self._meta is None:
            self._meta = _residual_meta(r, self.group)
        like = torch.empty((0, *self._meta[1]), dtype=self._meta[0], device=x.device)
        return (gather_rows(v, bounds, x.shape[1:], x, self.group),
                self._gather_branches(r, bounds, x.shape[0], branches, like))

    def forward_with_forecast(self, x, sigma, bank, index, coeffs, **cond):
        bounds, lo, hi, part_cond = self._prepare(x, sigma, cond)
        branches, rows = self._branches(x, cond), x.shape[0]
        part = None
        if hi > lo:
            sel = torch.cat([torch.arange(b * rows + lo, b * rows + hi) for b in range(branches)]).to(index.device)
            part = self.split.forward_with_forecast(x[lo:hi], sigma[lo:hi], bank, index.index_select(0, sel),
                                                    coeffs.index_select(0, sel), **part_cond)
        return gather_rows(part, bounds, x.shape[1:], x, self.group)


def _residual_meta(r: torch.Tensor | None, group) -> tuple[torch.dtype, tuple]:
    """The residual's (dtype, feature shape), agreed by all ranks (a rank with no rows has none)."""
    mine = [None if r is None else (r.dtype, tuple(r.shape[1:]))]
    everyone = [None] * dist.get_world_size(group)
    dist.all_gather_object(everyone, mine[0], group=group)
    known = [m for m in everyone if m is not None]
    return known[0]
