"""The `liteffn` command line: a thin layer over the library. Each command is a module here
with ``register(subparsers)``; its parser's ``func`` receives the parsed arguments."""

from __future__ import annotations

import argparse
import importlib
import sys

# Command modules, in the order `liteffn --help` lists them.
_COMMANDS = ["info", "bench", "train", "sweep", "convert", "demo"]


def build_parser() -> argparse.ArgumentParser:
    from liteffn import __version__

    parser = argparse.ArgumentParser(
        prog="liteffn",
        description="Compute-lite feed-forward blocks for transformers on CPUs.",
    )
    parser.add_argument("--version", action="version", version=f"liteffn {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _COMMANDS:
        importlib.import_module(f"liteffn.cli.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        print(f"liteffn {args.command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
