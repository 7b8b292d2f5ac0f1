"""The ``yofo`` command line.

Each sub-command lives in ``yofo.commands.<name>`` and exposes ``HELP`` (one line),
``add_arguments(parser)`` and ``run(args) -> int``. Errors meant for users (:class:`yofo.errors.YofoError`)
are printed as one line and exit with code 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

from yofo.errors import YofoError

COMMANDS = ("synth", "data", "train", "eval", "segment", "bench", "demo", "ablate")


def build_parser() -> argparse.ArgumentParser:
    """Return the top-level parser with every available sub-command."""
    from yofo import __version__

    parser = argparse.ArgumentParser(
        prog="yofo", description="Referring video object segmentation with YOFO (AAAI 2022)."
    )
    parser.add_argument("--version", action="version", version=f"yofo {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"yofo.commands.{name}")
        except ModuleNotFoundError as err:
            if err.name == f"yofo.commands.{name}":
                continue  # command not part of this build
            raise
        command = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(command)
        command.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``yofo`` console script; returns the exit code."""
    parser = build_parser()
    # `key=value` overrides may come after options (`yofo train demo --max-steps 9 data.root=x`), which
    # argparse's positional `nargs="*"` does not take once an option has intervened
    args, extra = parser.parse_known_args(argv)
    if extra:
        if not hasattr(args, "overrides") or any(item.startswith("-") or "=" not in item for item in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides = list(args.overrides) + extra
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except YofoError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
