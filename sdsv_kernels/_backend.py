"""Backend registry: which implementation serves an op.

Only the pure-torch ``reference`` backend exists today; native backends register here with
``register(name, ops, available_or_reason)`` and are picked by ``use_backend(name)`` or the
``SDSV_BACKEND`` environment variable. ``auto`` (the default) takes the first available
backend for the tensor's device in ``_PREFERENCE`` and falls back to ``reference``.
"""

from __future__ import annotations

import contextlib
import os
import threading
from typing import Callable

from . import reference

_OPS = ("pair_stats", "accept_commit", "rollout_step")
_REGISTRY: dict[str, tuple[dict[str, Callable] | None, bool | str]] = {
    "reference": ({op: getattr(reference, op) for op in _OPS}, True),
}
# per device type, in order of preference for "auto"
_PREFERENCE = {"cuda": ("triton", "cuda", "reference"), "cpu": ("cpp", "reference")}
_KNOWN = ("reference", "cpp", "triton", "cuda")
_local = threading.local()


def register(name: str, ops: dict[str, Callable] | None, status: bool | str) -> None:
    """Make a backend known; ``status`` is True or the reason it cannot be used here."""
    _REGISTRY[name] = (ops, status)


def backends() -> dict[str, bool | str]:
    """Every known backend -> True if usable here, else the reason it is not."""
    out: dict[str, bool | str] = {}
    for name in _KNOWN:
        out[name] = _REGISTRY[name][1] if name in _REGISTRY else "not implemented in this version"
    return out


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
    ops, status = _REGISTRY.get(name, (None, "not implemented in this version"))
    if status is not True or ops is None:
        raise RuntimeError(f"sdsv_kernels backend {name!r} is not available: {status}")
    return ops


def dispatch(op: str, like) -> Callable:
    name = current_backend()
    if name != "auto":
        return _require(name)[op]
    for cand in _PREFERENCE.get(like.device.type, ("reference",)):
        ops, status = _REGISTRY.get(cand, (None, False))
        if status is True and ops is not None:
            return ops[op]
    return _REGISTRY["reference"][0][op]
