"""The ``hal`` command line: ``hal devices``, ``hal plugins`` and the commands later issues add.

Each command lives in ``hal.commands.<name>`` with ``add_parser(subparsers)`` and ``run(args)``;
none imports torch at module level, so ``hal --help`` stays fast.  Usage errors exit 2 with one
line, hal's own errors exit 1 (2 for bad values) with one line, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import warnings
from collections.abc import Sequence
from typing import Any, NoReturn

from hal import __version__

#: Command modules under hal.commands, in the order ``--help`` lists them.
COMMANDS = ("devices", "plugins", "doctor", "run", "plan", "bench", "watch")


class _Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors (exit 2) instead of a usage block."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"{self.prog}: error: {message} (see '{self.prog} --help')\n")
        raise SystemExit(2)


def _show_warning(
    message: Warning | str, category: type[Warning], filename: str, lineno: int,
    file: Any = None, line: str | None = None,
) -> None:
    sys.stderr.write(f"hal: warning: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    """The full parser with every command's sub-parser."""
    parser = _Parser(
        prog="hal",
        description="Hardware abstraction for PyTorch: which device, why, and what is wrong.",
    )
    parser.add_argument("--version", action="version", version=f"hal {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in COMMANDS:
        module = importlib.import_module(f"hal.commands.{name}")
        module.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code."""
    from hal.errors import ConfigError, HalError

    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    warnings.showwarning = _show_warning
    # torch's CPU wheel warns at import when numpy is absent; it says nothing about hal's answer.
    warnings.filterwarnings("ignore", message="Failed to initialize NumPy")
    try:
        result: int = args.run(args)
        return result
    except ConfigError as exc:
        sys.stderr.write(f"hal: error: {exc}\n")
        return 2
    except HalError as exc:
        sys.stderr.write(f"hal: error: {exc}\n")
        return 1
    except KeyboardInterrupt:
        sys.stderr.write("hal: interrupted\n")
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
