"""`aloe`: one entry point; each stage adds its own subcommands from its `cli` module."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

# Each module exposes `add_parser(subparsers)`, registering subcommands whose parser defaults set
# `func(args) -> int`. Imports stay light: heavy libraries load inside `func`.
STAGE_CLIS = [
    "aloe.recipe.cli",
    "aloe.evaluate.cli",
    "aloe.curate.cli",
    "aloe.infer.cli",
    "aloe.serve.cli",
    "aloe.redteam.cli",
    "aloe.train.cli",
    "aloe.merge.cli",
    "aloe.evaluate.openended.cli",
    "aloe.humaneval.cli",
    "aloe.report.cli",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aloe", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for mod in STAGE_CLIS:
        importlib.import_module(mod).add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from aloe.models.precision import command_policy

    try:
        with command_policy(args):
            return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, OSError) as e:
        # Bad input gets one clear line, not a traceback (use -v for the traceback).
        if args.verbose:
            raise
        print(f"aloe {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
