"""Argument types and checks for the ``sdsv`` command.

Every value is checked before anything is loaded or compiled, and a bad one ends the command the
way argparse ends it for a bad choice: the usage, one line naming the option, exit status 2 —
never a traceback after a minute of compiling. Checks that need two options (a threshold and its
metric, a step count and the schedules built from it) run right after parsing, through
:func:`check`, which builds the same cheap objects the command would build later.
"""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path
from typing import Callable


def int_at_least(low: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            n = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
        if n < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {n}")
        return n

    parse.__name__ = f"int >= {low}"  # argparse names the type in its own messages
    return parse


def finite_float(low: float = -math.inf) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            x = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
        if not math.isfinite(x):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
        if x < low:
            raise argparse.ArgumentTypeError(f"must be >= {low:g}, got {x:g}")
        return x

    parse.__name__ = "finite number"
    return parse


def tiny_prompt(text: str) -> str:
    """A prompt the tiny models understand ('a <color> <shape>'), with the words it may use."""
    from .tiny.data import parse_prompt

    try:
        parse_prompt(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def weights_folder(text: str) -> Path:
    path = Path(text)
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is not a folder")
    return path


def check(parser: argparse.ArgumentParser, option: str, build: Callable[[], object]) -> None:
    """Run ``build`` (a cheap constructor the command will call later); a ValueError or TypeError
    it raises becomes argparse's one-line error for ``option``."""
    try:
        build()
    except (ValueError, TypeError) as e:
        parser.error(f"argument {option}: {e}")


def check_weights(parser: argparse.ArgumentParser, folder: Path | None, names: list[str]) -> None:
    """The shipped weights are always complete; a folder given with --weights must hold every
    model the command will load."""
    if folder is None:
        return
    from .tiny.weights import shipped_path

    missing = [shipped_path(n, folder).name for n in names if not shipped_path(n, folder).is_file()]
    if missing:
        parser.error(f"argument --weights: {str(folder)!r} has no {', '.join(missing)}")



def _nearest_existing(path: Path) -> Path:
    """``path`` or the closest of its ancestors that exists (the folder it would be made in)."""
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _check_creatable(parser: argparse.ArgumentParser, option: str, text: str, path: Path) -> None:
    if path.is_file():  # an earlier run's file, written over
        if not os.access(path, os.W_OK):
            parser.error(f"argument {option}: cannot write {text!r} (permission denied)")
        return
    base = _nearest_existing(path.parent if not path.exists() else path)
    if not base.is_dir():
        parser.error(f"argument {option}: cannot create {text!r}: {str(base)!r} is a file, not a folder")
    if not os.access(base, os.W_OK | os.X_OK):
        parser.error(f"argument {option}: cannot write into {str(base)!r} (permission denied)")


def check_output_folder(parser: argparse.ArgumentParser, option: str, text: str | None) -> None:
    """A folder the command will write into, checked before anything is sampled (it is made
    then): not a file, and creatable. ``None`` or ``''``: nothing is written."""
    if not text:
        return
    path = Path(text)
    if path.exists() and not path.is_dir():
        parser.error(f"argument {option}: {text!r} is a file, not a folder")
    _check_creatable(parser, option, text, path)


def check_output_file(parser: argparse.ArgumentParser, option: str, text: str | None) -> None:
    """A file the command will write, checked before anything is sampled: not a folder, and
    creatable (its folder is made then)."""
    if not text:
        return
    path = Path(text)
    if path.is_dir():
        parser.error(f"argument {option}: {text!r} is a folder, not a file")
    _check_creatable(parser, option, text, path)
