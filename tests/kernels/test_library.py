"""The op boundary: torch.library custom ops, torch.compile, backend selection, and the package
without its native extension."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch

import sdsv_kernels
from sdsv_kernels import reference

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([os.path.join(ROOT, "python"), ROOT, os.environ.get("PYTHONPATH", "")])}


def _window(device="cpu", dtype=torch.float32):
    g = torch.Generator().manual_seed(0)
    t = torch.randn((5, 3, 41), generator=g).to(device, dtype)
    d = (t.float() + 0.05 * torch.randn((5, 3, 41), generator=g)).to(device, dtype)
    y = torch.randn((5, 3, 41), generator=g).to(device, dtype)
    h = torch.full((5,), -0.04, device=device)
    sigma = torch.linspace(0.9, 0.5, 5, device=device)
    return t, d, y, h, sigma, torch.tensor([2, 0, 1], device=device)


def test_ops_are_registered_custom_ops():
    for name in ("pair_stats", "accept_commit", "accept_commit_out", "rollout_step", "rollout_step_out"):
        assert hasattr(torch.ops.sdsv, name), name


def test_opcheck():
    """torch.library.opcheck: schema, fake (meta) kernels, and AOT dispatch agree with the real op."""
    t, d, y, h, sigma, k = _window()
    stats = sdsv_kernels.pair_stats(t, d, y, h)
    torch.library.opcheck(torch.ops.sdsv.pair_stats.default, (t, d, y, h))
    torch.library.opcheck(torch.ops.sdsv.accept_commit.default, (stats, y, t, h, sigma, k, "x0_rms", 0.05, "endpoints"))
    out = torch.empty((3, 3, 41))
    torch.library.opcheck(torch.ops.sdsv.accept_commit_out.default, (stats, y, t, h, sigma, k, "cosine", 0.9, "endpoints", out))
    torch.library.opcheck(torch.ops.sdsv.rollout_step.default, (y, t, h))
    torch.library.opcheck(torch.ops.sdsv.rollout_step_out.default, (y, t, h, torch.empty_like(y)))


def _verify_round(t, d, y, h, sigma, k, buf):
    """What the sampler does per round: rollout into a buffer row, stats, accept + commit."""
    sdsv_kernels.rollout_step(y, d, h, out=buf)
    stats = sdsv_kernels.pair_stats(t, d, buf, h)
    x, a = sdsv_kernels.accept_commit(stats, buf, t, h, sigma, k, "x0_rms", 0.05, "endpoints")
    return x * 2, a + 1, stats


@pytest.mark.parametrize("compile_backend", ["aot_eager", "inductor"])
def test_torch_compile_fullgraph(compile_backend):
    """The ops trace as opaque nodes (fullgraph: no graph break) and give the eager results.
    inductor compiles the surrounding arithmetic with the C++ compiler (~10-30 s on 2 cores)."""
    t, d, y, h, sigma, k = _window()
    buf_e, buf_c = torch.empty_like(y), torch.empty_like(y)
    eager = _verify_round(t, d, y, h, sigma, k, buf_e)
    torch._dynamo.reset()
    compiled = torch.compile(_verify_round, fullgraph=True, backend=compile_backend)(t, d, y, h, sigma, k, buf_c)
    for a, b in zip(eager, compiled):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    torch.testing.assert_close(buf_e, buf_c, rtol=0, atol=0)


def test_backends_report_and_forcing():
    status = sdsv_kernels.backends()
    assert set(status) == {"reference", "cpp", "triton", "cuda"}
    assert status["reference"] is True
    for name, s in status.items():
        assert s is True or (isinstance(s, str) and s), (name, s)
    with pytest.raises(ValueError, match="unknown backend"):
        with sdsv_kernels.use_backend("numba"):
            pass
    t = torch.zeros(2, 3)
    with sdsv_kernels.use_backend("reference"):
        assert sdsv_kernels.resolve(t) == "reference"
    if status["cuda"] is not True:
        with pytest.raises(RuntimeError, match="not available"):
            with sdsv_kernels.use_backend("cuda"):
                pass


def test_auto_prefers_cpp_on_cpu():
    if sdsv_kernels.backends()["cpp"] is not True:
        pytest.skip(f"cpp backend: {sdsv_kernels.backends()['cpp']}")
    with sdsv_kernels.use_backend("auto"):
        assert sdsv_kernels.resolve(torch.zeros(1)) == "cpp"


def _run(code: str, **env) -> str:
    res = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                         env={**ENV, **env}, cwd=ROOT, timeout=120)
    assert res.returncode == 0, res.stderr
    return res.stdout.strip()


def test_env_var_forces_backend():
    out = _run("""
        import torch, sdsv_kernels
        print(sdsv_kernels.current_backend(), sdsv_kernels.resolve(torch.zeros(1)))
    """, SDSV_BACKEND="reference")
    assert out == "reference reference"


def test_package_works_without_extension_and_imports_nothing_heavy():
    """With sdsv_kernels._C unimportable: backends() says why, the ops run on the reference, and
    importing + calling never imports torch.utils.cpp_extension; importing does not import triton."""
    out = _run("""
        import sys, importlib.abc
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path, target=None):
                if name == "sdsv_kernels._C":
                    raise ImportError("blocked for the test")
        sys.meta_path.insert(0, Block())
        import torch, sdsv_kernels
        triton_at_import = "triton" in sys.modules  # (torch's custom-op dispatch may import it later)
        t = torch.randn(3, 7)
        s = sdsv_kernels.pair_stats(t, t, t, torch.full((3,), -0.1))
        x, a = sdsv_kernels.accept_commit(s, t, t, torch.full((3,), -0.1), torch.ones(3), torch.tensor([1, 0]), "cosine", 0.9, "endpoints")
        r = sdsv_kernels.rollout_step(t, t, -0.1)
        st = sdsv_kernels.backends()
        print(sdsv_kernels.resolve(t), a.tolist(), "cpp" if st["cpp"] is True else "nocpp",
              "torch.utils.cpp_extension" in sys.modules, triton_at_import)
    """, TRITON_INTERPRET="0", SDSV_BACKEND="auto")
    assert out == "reference [1, 0] nocpp False False"


def test_forced_triton_without_gpu_or_interpreter_is_a_clear_error():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    out = _run("""
        import torch, sdsv_kernels
        try:
            with sdsv_kernels.use_backend("triton"):
                pass
        except RuntimeError as e:
            print(e)
    """, TRITON_INTERPRET="0")
    assert "not available" in out and "TRITON_INTERPRET" in out


def test_reference_out_forms():
    t, d, y, h, sigma, k = _window()
    with sdsv_kernels.use_backend("reference"):
        stats = sdsv_kernels.pair_stats(t, d, y, h)
        out = torch.empty((3, 3, 41))
        x, a = sdsv_kernels.accept_commit(stats, y, t, h, sigma, k, "cosine", 0.9, "endpoints", out=out)
        assert x is out
        x2, a2 = reference.accept_commit(stats, y, t, h, sigma, k, "cosine", 0.9, "endpoints")
        assert torch.equal(out, x2) and torch.equal(a, a2)
