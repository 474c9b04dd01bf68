"""Triton kernels of the ops (Liger-style: ``_kernel``, then the ``*_forward`` launcher).

Importing this package imports ``triton``; :mod:`sdsv_kernels._backend` does that lazily and
reports why it failed. On a CPU-only machine the kernels run under ``TRITON_INTERPRET=1`` (set it
before the first import of this package: ``triton.jit`` reads it at decoration time).
"""

from .accept_commit import accept_commit_forward
from .gather_combine import gather_combine_forward
from .pair_stats import pair_stats_forward
from .rollout import rollout_step_forward

OPS = {
    "pair_stats": pair_stats_forward, "accept_commit": accept_commit_forward, "rollout_step": rollout_step_forward,
    "gather_combine": gather_combine_forward,
}
