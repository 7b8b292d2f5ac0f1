"""The ``yofo`` command line.

Each sub-command lives in ``yofo.commands.<name>`` and exposes ``HELP`` (one line),
``add_arguments(parser)`` and ``run(args) -> int``. Errors meant for users (:class:`yofo.errors.YofoError`)
are printed as one line and exit with code 2. Warnings of the ``yofo`` loggers are one line each on stderr
(``warning: ...``), printed above a running progress bar; results go to stdout.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from typing import Sequence

from yofo.errors import YofoError

COMMANDS = ("synth", "data", "train", "eval", "segment", "info", "serve", "bench", "demo")


class _OneLine(logging.Handler):
    """``warning: <message>`` on stderr through tqdm, so that a progress bar being drawn stays intact."""

    def emit(self, record: logging.LogRecord) -> None:
        from tqdm import tqdm

        tqdm.write(f"{record.levelname.lower()}: {record.getMessage()}", file=sys.stderr)


def _log_to_stderr() -> None:
    logger = logging.getLogger("yofo")
    if not any(isinstance(handler, _OneLine) for handler in logger.handlers):
        logger.addHandler(_OneLine())


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
    _log_to_stderr()
    try:
        code = int(args._run(args) or 0)
        sys.stdout.flush()  # a closed pipe fails here, not in the interpreter's exit
        return code
    except YofoError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `yofo ... | head`: the reader left; the outputs are written, say nothing more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(main())
