"""The ``sdsv`` command."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="sdsv", description="Speculative sampling for diffusion transformers")
    sub = p.add_subparsers(dest="command", required=True)
    from . import demo

    d = sub.add_parser("demo", help="SDSV vs target-only and the draft baselines on the shipped tiny models",
                       description=demo.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    demo.add_arguments(d)
    from .evaluation import cli as evaluation

    e = sub.add_parser("eval", help="the paper's tables and figures, measured on the shipped tiny models",
                       description=evaluation.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    evaluation.add_arguments(e)
    args = p.parse_args(argv)
    if args.command == "demo":
        demo.check_arguments(d, args)
        return demo.main(args)
    if args.command == "eval":
        evaluation.check_arguments(e, args)
        return evaluation.main(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
