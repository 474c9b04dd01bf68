"""Rows of a batch buffer as views where they are evenly spaced (the common case: one sample,
or one row per sample), else gathered/scattered by index. Right after a model forward a small op
costs many times its warm time on a CPU, so a view instead of an index tensor matters
(docs/self_draft.md, the sampler's own work)."""

from __future__ import annotations

from typing import Sequence

import torch


def rows_view(buf: torch.Tensor, rows: Sequence[int]) -> torch.Tensor | None:
    """``buf[rows]`` as a view when the rows are evenly spaced (the common case), else None."""
    if len(rows) == 1:
        return buf[rows[0] : rows[0] + 1]
    step = rows[1] - rows[0]
    if step > 0 and all(b - a == step for a, b in zip(rows, rows[1:])):
        return buf[rows[0] : rows[-1] + 1 : step]
    return None


def gather_rows_and_index(buf: torch.Tensor, rows: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``buf[rows]`` (a view where it can be) and the index tensor it needed (None for a view),
    to gather the same rows of another buffer without making the index again."""
    view = rows_view(buf, rows)
    if view is not None:
        return view, None
    index = torch.tensor(rows, device=buf.device)
    return buf.index_select(0, index), index


def gather_rows(buf: torch.Tensor, rows: Sequence[int], index: torch.Tensor | None = None) -> torch.Tensor:
    view = rows_view(buf, rows)
    if view is not None:
        return view
    return buf.index_select(0, index if index is not None else torch.tensor(rows, device=buf.device))


def scatter_rows(buf: torch.Tensor, rows: Sequence[int], src: torch.Tensor) -> None:
    view = rows_view(buf, rows)
    if view is not None:
        if view.data_ptr() != src.data_ptr():
            view.copy_(src)
    else:
        buf.index_copy_(0, torch.tensor(rows, device=buf.device), src)
