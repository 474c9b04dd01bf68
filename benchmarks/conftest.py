"""pytest-benchmark suite of the ops and the sampler (``python -m pytest benchmarks/ --benchmark-only``).

Not collected by the plain ``python -m pytest`` (``testpaths = ["tests"]``); ``tests/`` runs one
smoke case of it. Backends: ``reference`` and ``cpp`` on the CPU, ``reference``, ``cuda`` and
``triton`` on a GPU; Triton under its CPU interpreter only with ``--bench-triton`` (it measures
the interpreter, not a kernel: useful to check the code path, never as a speed); ``compile``
(``torch.compile`` of the reference, what a user could get without this library) with
``--bench-compile``.
"""

from __future__ import annotations

import os

import pytest
import torch


def pytest_addoption(parser):
    parser.addoption("--bench-triton", action="store_true",
                     help="also benchmark Triton on CPU tensors under TRITON_INTERPRET=1 (slow; code-path check)")
    parser.addoption("--bench-compile", action="store_true",
                     help="also benchmark torch.compile of the reference ops (one compile per case: slow)")


def pytest_configure(config):
    if config.getoption("--bench-triton") and not torch.cuda.is_available():
        os.environ.setdefault("TRITON_INTERPRET", "1")  # before anything imports triton


@pytest.fixture
def bench_triton(request) -> bool:
    return request.config.getoption("--bench-triton")
