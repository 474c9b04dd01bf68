"""Shared fixtures of the kernel tests.

Backends under test: every *native* backend that is usable here (``cpp``, ``triton``, ``cuda``)
is compared with the pure-torch ``reference``; the reference itself is checked against a
float64 oracle and a plain-Python decision oracle, so no test compares a thing with itself.

On a machine without CUDA the Triton kernels run through the interpreter: ``TRITON_INTERPRET``
is set to 1 here, before anything imports triton (``triton.jit`` reads it at decoration time).
Set ``SDSV_REQUIRE_BACKENDS=cpp,triton`` (CI does) to turn "backend unavailable" skips into
failures, so a broken build cannot hide behind a skip.
"""

from __future__ import annotations

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

import sdsv_kernels  # noqa: E402

NATIVE = ("cpp", "triton", "cuda")
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}

# Tolerances for tensors a kernel WRITES in the input dtype (rollout, commit): the kernel and the
# reference both compute in fp32 and round once, so they differ by at most ~1 ulp of the output
# dtype (FMA contraction, rounding of the interpreter/compilers); fp32 gets a few fp32 ulps.
OUT_TOL = {
    torch.float32: dict(rtol=1e-6, atol=1e-6),
    torch.float16: dict(rtol=2e-3, atol=2e-3),   # 2^-10 = 9.8e-4 per ulp
    torch.bfloat16: dict(rtol=1.6e-2, atol=1.6e-2),  # 2^-7 = 7.8e-3 per ulp
}


def _required() -> set[str]:
    return {b.strip() for b in os.environ.get("SDSV_REQUIRE_BACKENDS", "").split(",") if b.strip()}


def _usable(name: str, device: str) -> bool | str:
    status = sdsv_kernels.backends()[name]
    if status is not True:
        return status
    from sdsv_kernels import _backend

    devices = _backend._entry(name)[2]
    return True if device in devices else f"serves {devices}, not {device}"


def backend_params() -> list:
    """(backend, device) pairs: every native backend on every device it could serve here."""
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    out = []
    for name in NATIVE:
        for dev in devices:
            if name == "cpp" and dev != "cpu" or name == "cuda" and dev != "cuda":
                continue
            if name == "triton" and dev == "cpu" and torch.cuda.is_available():
                continue  # the interpreter is only for CPU-only machines
            ok = _usable(name, dev)
            marks = []
            if ok is not True and name not in _required():
                marks = [pytest.mark.skip(reason=f"backend {name} on {dev}: {ok}")]
            out.append(pytest.param((name, dev), id=f"{name}-{dev}", marks=marks))
    return out


@pytest.fixture(params=backend_params())
def backend(request):
    """``(name, device)``; inside the test the backend is forced with use_backend."""
    name, dev = request.param
    with sdsv_kernels.use_backend(name):
        yield name, dev


def stats_oracle(t, d, y, h) -> torch.Tensor:
    """The five statistics in float64 from the (upcast) inputs: the exact value the fp32 kernels approximate."""
    tf, df, yf = (x.reshape(x.shape[0], -1).double().cpu() for x in (t, d, y))
    hf = h.reshape(-1, 1).double().cpu()
    nxt = yf + hf * tf
    return torch.stack([(tf * df).sum(1), (tf * tf).sum(1), (df * df).sum(1), ((tf - df) ** 2).sum(1), (nxt * nxt).sum(1)], 1)


def assert_stats_close(got: torch.Tensor, t, d, y, h, rtol: float) -> None:
    """fp32 accumulation vs the float64 oracle. Error is measured against the natural scale of
    each column (|t||d| for the dot product, which may cancel; the value itself for the others),
    and the max absolute error is reported, fla-style."""
    exact = stats_oracle(t, d, y, h)
    g = got.double().cpu()
    scale = exact.abs().clone()
    scale[:, 0] = torch.sqrt(exact[:, 1] * exact[:, 2])
    err = (g - exact).abs() / scale.clamp_min(1e-30)
    assert err.max().item() <= rtol, f"max rel err {err.max().item():.3g} > {rtol} (max abs err {(g - exact).abs().max().item():.3g})"
