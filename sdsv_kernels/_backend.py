"""Backend registry: which implementation serves an op.

Backends:

* ``reference`` — the pure-torch spec (:mod:`sdsv_kernels.reference`); every device; always there.
* ``cpp``      — the C++ CPU extension ``sdsv_kernels._C`` (built by ``setup.py``); CPU tensors.
* ``cuda``     — the CUDA kernels of the same extension (built only against a CUDA torch with
  nvcc present); CUDA tensors.
* ``triton``   — :mod:`sdsv_kernels.triton_ops`; CUDA tensors, or CPU tensors when
  ``TRITON_INTERPRET=1`` (the interpreter, for tests).

Native backends are loaded lazily, on first use or on :func:`backends`, so importing
``sdsv_kernels`` never imports triton or compiles anything. ``use_backend(name)`` or
``SDSV_BACKEND=name`` forces one; ``auto`` (the default) takes, per call, the first usable
backend for the tensor's device in ``_PREFERENCE`` and falls back to ``reference``.
"""

from __future__ import annotations

import contextlib
import os
import threading
from typing import Callable

from . import reference

_OPS = ("pair_stats", "accept_commit", "rollout_step", "gather_combine")
# name -> (ops or None, True or the reason it is unusable, device types it serves)
_REGISTRY: dict[str, tuple[dict[str, Callable] | None, bool | str, tuple[str, ...]]] = {
    "reference": ({op: getattr(reference, op) for op in _OPS}, True, ("cpu", "cuda", "mps", "xpu", "meta")),
}
_LOADERS: dict[str, Callable[[], tuple[dict[str, Callable] | None, bool | str, tuple[str, ...]]]] = {}
# per device type, in order of preference for "auto". CUDA tensors: the extension's kernels
# first, the fastest provider on an H200 at Flux/Wan latent sizes in all but the largest
# gather_combine cases (docs/kernels.md, "GPU"); Triton serves when the extension was built
# without CUDA.
_PREFERENCE = {"cuda": ("cuda", "triton", "reference"), "cpu": ("cpp", "reference")}
_KNOWN = ("reference", "cpp", "triton", "cuda")
_local = threading.local()
_lock = threading.Lock()


def register(name: str, ops: dict[str, Callable] | None, status: bool | str, devices: tuple[str, ...] = ("cpu", "cuda")) -> None:
    """Make a backend known; ``status`` is True or the reason it cannot be used here."""
    _REGISTRY[name] = (ops, status, tuple(devices))


def register_lazy(name: str, loader: Callable[[], tuple[dict[str, Callable] | None, bool | str, tuple[str, ...]]]) -> None:
    """Register a backend whose ``loader()`` (run once, on first need) returns ``(ops, status, devices)``."""
    _LOADERS[name] = loader


def _entry(name: str):
    if name not in _REGISTRY and name in _LOADERS:
        with _lock:
            if name not in _REGISTRY:
                try:
                    _REGISTRY[name] = _LOADERS[name]()
                except Exception as exc:  # a broken optional backend must not break the package
                    _REGISTRY[name] = (None, f"failed to load: {type(exc).__name__}: {exc}", ())
    return _REGISTRY.get(name, (None, "not implemented in this version", ()))


def backends() -> dict[str, bool | str]:
    """Every known backend -> True if usable here, else the reason it is not."""
    return {name: _entry(name)[1] for name in _KNOWN}


def _default() -> str:
    name = os.environ.get("SDSV_BACKEND", "auto").strip().lower() or "auto"
    if name != "auto" and name not in _KNOWN:
        raise ValueError(f"SDSV_BACKEND={name!r}: choose from auto, {', '.join(_KNOWN)}")
    return name


def current_backend() -> str:
    return getattr(_local, "name", None) or _default()


@contextlib.contextmanager
def use_backend(name: str):
    """Force a backend inside a ``with`` block (``"auto"`` restores per-device choice)."""
    if name != "auto" and name not in _KNOWN:
        raise ValueError(f"unknown backend {name!r}; choose from auto, {', '.join(_KNOWN)}")
    if name != "auto":
        _require(name)
    prev = getattr(_local, "name", None)
    _local.name = name
    try:
        yield
    finally:
        _local.name = prev


def _require(name: str) -> dict[str, Callable]:
    ops, status, _ = _entry(name)
    if status is not True or ops is None:
        raise RuntimeError(f"sdsv_kernels backend {name!r} is not available: {status}")
    return ops


# the native kernels accumulate in fp32 by design; other dtypes (fp64 latents) always take the
# reference, which computes fp64 updates in fp64 — even when a native backend is forced
NATIVE_DTYPES = ("float32", "float16", "bfloat16")
# ops whose native kernels also take fp64 (accumulating in fp64): the forecast's residual
# combinations cancel heavily, and fp64 is how their exactness is tested
OP_DTYPES = {"gather_combine": NATIVE_DTYPES + ("float64",)}


def resolve(like, op: str | None = None) -> str:
    """The backend that serves a call (of ``op``, when given) whose tensors live on
    ``like.device`` with ``like.dtype``."""
    name = current_backend()
    dev = like.device.type
    if str(like.dtype).replace("torch.", "") not in OP_DTYPES.get(op, NATIVE_DTYPES):
        return "reference"
    if name != "auto":
        _require(name)
        devices = _entry(name)[2]
        if dev not in devices:
            raise RuntimeError(
                f"sdsv_kernels backend {name!r} cannot run on {dev} tensors (it serves {', '.join(devices)}); "
                f"use 'auto' or 'reference'"
            )
        return name
    for cand in _PREFERENCE.get(dev, ("reference",)):
        ops, status, devices = _entry(cand)
        if status is True and ops is not None and dev in devices:
            return cand
    return "reference"


def dispatch(op: str, like) -> Callable:
    return _entry(resolve(like, op))[0][op]


# ---- the optional backends -------------------------------------------------------------------

def _load_triton():
    import importlib.util

    import torch

    interpreting = os.environ.get("TRITON_INTERPRET", "0") == "1"
    if importlib.util.find_spec("triton") is None:
        return None, "triton is not installed (pip install triton)", ()
    if not interpreting and not torch.cuda.is_available():  # answer without importing triton
        return None, "no CUDA device (set TRITON_INTERPRET=1 before importing to run the kernels on CPU)", ()
    from .triton_ops import OPS

    return OPS, True, (("cpu", "cuda") if interpreting else ("cuda",))


def _load_ext(device: str):
    def load():
        from . import _ext

        if _ext.C is None:
            return None, _ext.REASON, ()
        if device == "cpu":
            return _ext.CPU_OPS, True, ("cpu",)
        if not _ext.HAS_CUDA:
            return None, "the extension was built without CUDA (CPU-only torch or no nvcc at build time)", ()
        import torch

        if not torch.cuda.is_available():
            return None, "no CUDA device", ()
        return _ext.CUDA_OPS, True, ("cuda",)

    return load


register_lazy("triton", _load_triton)
register_lazy("cpp", _load_ext("cpu"))
register_lazy("cuda", _load_ext("cuda"))
