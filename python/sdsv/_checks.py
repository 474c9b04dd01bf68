"""Argument checks shared by the public constructors (one validation layer per boundary): a
clear error that names the argument, instead of a failure deep inside torch."""

from __future__ import annotations

import math
import numbers


def as_int(name: str, value, minimum: int | None = None) -> int:
    """``value`` as an int (ints and integral numpy/torch scalars; not bools or floats like 2.5)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {value!r} ({type(value).__name__})")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def as_float(name: str, value, *, positive: bool = False) -> float:
    """``value`` as a finite float (Python or numpy numbers; not None, bools or tensors)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {value!r} ({type(value).__name__})")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    if positive and value <= 0:
        raise ValueError(f"{name} must be > 0, got {value}")
    return value
