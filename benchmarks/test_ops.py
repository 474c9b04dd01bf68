"""Microbenchmarks of every op on every available backend, backends of one case side by side.

Cases: the latent of ONE (sample, step) row at three sizes — ``tiny`` (the shipped models,
3 x 32 x 32), ``flux-1024`` (Flux.1 at 1024x1024: 4096 packed tokens x 64) and ``wan-480p-81f``
(Wan2.1 480p, 81 frames: 16 x 21 x 60 x 104) — with R = 2 rows (``endpoints`` verification of one
window) and R = 10 (``full`` verification of K = 9), in fp32 and bf16. Each benchmark's group is
``op | size R dtype``, so pytest-benchmark prints the backends of one case together; its
``extra_info`` holds the bytes an op must move (every input element read once, every output
written once) and the GB/s that gives at the median time.

    python -m pytest benchmarks/ --benchmark-only                      # every case (~4 min on 2 cores)
    python -m pytest benchmarks/ --benchmark-only -k "flux and R2"      # a subset
    python -m pytest benchmarks/ --benchmark-only --benchmark-json=out.json
    python -m pytest benchmarks/ --benchmark-only --benchmark-compare=benchmarks/results/bench_cpu_baseline.json
"""

from __future__ import annotations

import pytest
import torch

import sdsv_kernels
from _common import DTYPES, ROWS, SIZES, make_inputs, window_k_for

CASES = {"tiny": (3, 32, 32), **SIZES}
OPS = ("pair_stats", "accept_commit", "rollout_step", "gather_combine")
METRIC, TAU = "x0_rms", 0.05
ANCHORS = 2  # the self-draft's order-1 forecast: two anchors per row, from a bank of 3 slots per row


def backends(bench_triton: bool, bench_compile: bool = False) -> list[tuple[str, str]]:
    """(backend, device) pairs usable here; ``compile`` = torch.compile of the reference."""
    status = sdsv_kernels.backends()
    out = []
    if torch.cuda.is_available():
        out.append(("reference", "cuda"))
        out += [(b, "cuda") for b in ("cuda", "triton") if status[b] is True]
        if bench_compile:
            out.append(("compile", "cuda"))
    out.append(("reference", "cpu"))
    if status["cpp"] is True:
        out.append(("cpp", "cpu"))
    if bench_triton and not torch.cuda.is_available() and status["triton"] is True:
        out.append(("triton", "cpu"))
    if bench_compile:
        out.append(("compile", "cpu"))
    return out


def op_bytes(op: str, t: torch.Tensor, n_commit: int) -> int:
    """Compulsory traffic: inputs read once, outputs written once (stats: 5 fp32 per row)."""
    e, row, r = t.element_size(), t[0].numel(), t.shape[0]
    if op == "pair_stats":        # t, d, y read
        return 3 * r * row * e + r * 5 * 4
    if op == "accept_commit":     # y and t of each committed row read, the next state written
        return 3 * n_commit * row * e + r * 5 * 4
    if op == "rollout_step":      # x, v read, out written
        return 3 * r * row * e
    if op == "gather_combine":    # base and the anchors read, out written
        return (2 + ANCHORS) * r * row * e
    raise ValueError(op)


def make_call(op: str, t, d, y, h, sigma, window_k, verify, compiled: bool = False):
    """The op's call on prepared inputs (outputs preallocated where the op takes ``out``);
    ``compiled``: torch.compile of the pure-torch reference instead of the library's op."""
    ref = sdsv_kernels.reference
    r = t.shape[0]
    bank = t.repeat(3, *([1] * (t.dim() - 1)))
    index = torch.stack([torch.arange(r) * 3, torch.arange(r) * 3 + 1], 1).to(t.device)
    coeffs = torch.tensor([[1.0, 1.3, -0.3]] * r, device=t.device)
    stats = ref.pair_stats(t, d, y, h)
    if compiled:
        fn = {"pair_stats": lambda: ref.pair_stats(t, d, y, h),
              "accept_commit": lambda: ref.accept_commit(stats, y, t, h, sigma, window_k, METRIC, TAU, verify),
              "rollout_step": lambda: ref.rollout_step(y, d, h),
              "gather_combine": lambda: ref.gather_combine(d, bank, index, coeffs)}[op]
        return torch.compile(fn, dynamic=False)
    if op == "pair_stats":
        return lambda: sdsv_kernels.pair_stats(t, d, y, h)
    if op == "accept_commit":
        return lambda: sdsv_kernels.accept_commit(stats, y, t, h, sigma, window_k, METRIC, TAU, verify)
    if op == "rollout_step":
        out = torch.empty_like(y)
        return lambda: sdsv_kernels.rollout_step(y, d, h, out=out)
    out = torch.empty_like(d)
    return lambda: sdsv_kernels.gather_combine(d, bank, index, coeffs, out=out)


def _ids(pairs):
    return [f"{b}-{d}" for b, d in pairs]


def pytest_generate_tests(metafunc):
    if "backend" in metafunc.fixturenames:
        pairs = backends(metafunc.config.getoption("--bench-triton"), metafunc.config.getoption("--bench-compile"))
        metafunc.parametrize("backend", pairs, ids=_ids(pairs))


@pytest.mark.parametrize("dtype", list(DTYPES), ids=list(DTYPES))
@pytest.mark.parametrize("rows", ROWS, ids=[f"R{r}" for r in ROWS])
@pytest.mark.parametrize("size", list(CASES))
@pytest.mark.parametrize("op", OPS)
def test_op(benchmark, op, size, rows, dtype, backend):
    name, device = backend
    window_k, verify = window_k_for(rows)
    t, d, y, h, sigma = make_inputs(CASES[size], rows, DTYPES[dtype], device)
    if name == "compile":
        torch._dynamo.reset()
    call = make_call(op, t, d, y, h, sigma, window_k.to(device), verify, compiled=name == "compile")
    benchmark.group = f"{op} | {size} R={rows} {dtype}"
    benchmark.extra_info.update(backend=name, device=device, bytes=op_bytes(op, t, window_k.numel()))
    with sdsv_kernels.use_backend("reference" if name == "compile" else name):
        call()  # warm-up outside the timing (allocations, lazy backend load, JIT, compilation)
        if device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            before = torch.cuda.memory_allocated()
            call()
            torch.cuda.synchronize()
            # memory one call adds at its peak, outputs included (CPU: benchmarks/bench_kernels_cpu.py)
            benchmark.extra_info["peak_extra_MB"] = round((torch.cuda.max_memory_allocated() - before) / 1e6, 2)
            benchmark(lambda: (call(), torch.cuda.synchronize()))
        else:
            benchmark(call)
    median = benchmark.stats.stats.median if benchmark.stats is not None else None
    if median:
        benchmark.extra_info["GBps"] = round(benchmark.extra_info["bytes"] / median / 1e9, 2)
