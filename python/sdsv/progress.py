"""The ``progress=`` option every sampling entry point takes, as tqdm's keyword arguments."""

from __future__ import annotations


def progress_options(progress, desc: str) -> dict:
    """``progress``: False/None (no bar), True (a bar), or a dict of tqdm options (e.g. a diffusers
    pipeline's progress-bar config, which may hold ``"disable"``; an empty dict still means "show
    the bar"). The total is always the sampler's own, so ``total`` is dropped."""
    opts = {"desc": desc, "unit": "step", **(progress if isinstance(progress, dict) else {})}
    opts.pop("total", None)
    opts["disable"] = bool(opts.get("disable", False)) or progress is False or progress is None
    return opts


def check_progress(progress) -> None:
    """``progress`` is one of the values :func:`progress_options` takes (a clear error otherwise)."""
    if not (progress is None or type(progress).__name__ in ("bool", "bool_") or isinstance(progress, dict)):
        raise TypeError(f"progress must be True, False or a dict of tqdm options, got {progress!r} "
                        f"({type(progress).__name__})")
