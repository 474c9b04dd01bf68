"""Argument checks shared by the public entry points (one validation layer per boundary): a
clear one-line error that names the argument, instead of a failure deep inside torch.

``TypeError`` for a value of the wrong kind, ``ValueError`` for one of the right kind out of
range; every message starts with the argument's name. Integers are Python ints or integral
numpy/torch scalars, never bools or floats such as ``2.0``; numbers are real numbers, never
bools, None, strings or tensors.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

#: seeds of ``torch.Generator().manual_seed`` that name one generator each (negative ones wrap)
SEED_MAX = 2**64 - 1


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


def as_bool(name: str, value) -> bool:
    """``value`` as a bool (True/False and numpy bools; not 0/1, strings or None)."""
    if type(value).__name__ not in ("bool", "bool_"):
        raise TypeError(f"{name} must be True or False, got {value!r} ({type(value).__name__})")
    return bool(value)


def as_str(name: str, value, choices: Sequence[str] | None = None) -> str:
    """``value`` as a str, one of ``choices`` when given."""
    listed = "" if choices is None else f" ({', '.join(map(repr, choices))})"
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str{listed}, got {value!r} ({type(value).__name__})")
    if choices is not None and value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}")
    return value


def _is_sequence(value) -> bool:
    """A list, tuple, range or 1-D numpy array: a sequence of items (a str or a tensor is not)."""
    if isinstance(value, (list, tuple, range)):
        return True
    return type(value).__module__ == "numpy" and getattr(value, "ndim", None) == 1


def as_seeds(name: str, seed, count: int, what: str = "images") -> list[int]:
    """The ``count`` seeds of a call: an int ``s`` gives ``s, s + 1, ...`` (item ``i`` uses
    ``s + i``, so it does not depend on its batch mates); a list, tuple, range or numpy array
    gives one seed per item. Seeds are ints in [0, 2**64 - 1]."""
    hint = f"an int ({what} get seed, seed + 1, ...) or a list of {count} ints"
    if _is_sequence(seed):
        seeds = [_seed(f"{name}[{i}]", s, hint) for i, s in enumerate(seed)]
        if len(seeds) != count:
            raise ValueError(f"{name}: {len(seeds)} seeds for {count} {what}")
        return seeds
    first = _seed(name, seed, hint)
    if first + count - 1 > SEED_MAX:
        raise ValueError(f"{name} must be <= 2**64 - {count} for {count} {what} (seed + i each), got {first}")
    return [first + i for i in range(count)]


def _seed(name: str, value, hint: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be {hint}, got {value!r} ({type(value).__name__})")
    value = int(value)
    if not 0 <= value <= SEED_MAX:
        raise ValueError(f"{name} must be in [0, 2**64 - 1], got {value}")
    return value


def as_list(name: str, value, kinds: tuple[type, ...], what: str) -> list:
    """``value`` as a non-empty list of items of ``kinds``: one item (an instance of the first
    kind) becomes a list of one; a list, tuple or 1-D numpy array is taken item by item.
    ``what``: how the message describes one item."""
    if isinstance(value, kinds[0]):
        return [value]
    if not _is_sequence(value) or isinstance(value, range):
        raise TypeError(f"{name} must be {what} or a list of them, got {value!r} ({type(value).__name__})")
    items = list(value)
    if not items:
        raise ValueError(f"{name} is empty: give at least one ({what})")
    for i, item in enumerate(items):
        if not isinstance(item, kinds):
            raise TypeError(f"{name}[{i}] must be {what}, got {item!r} ({type(item).__name__})")
    return items


def as_floats(name: str, value, *, positive: bool = False) -> list[float]:
    """``value`` as a non-empty list of finite floats: one number, or a list/tuple/array of them."""
    if _is_sequence(value) and not isinstance(value, range):
        items = [as_float(f"{name}[{i}]", v, positive=positive) for i, v in enumerate(value)]
        if not items:
            raise ValueError(f"{name} is empty: give at least one number")
        return items
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number or a list of numbers, got {value!r} ({type(value).__name__})")
    return [as_float(name, value, positive=positive)]
