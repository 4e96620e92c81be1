"""The ``hal`` command line: ``hal devices``, ``hal plugins`` and the commands later issues add.

Each command lives in ``hal.commands.<name>`` with ``add_parser(subparsers)`` and ``run(args)``;
none imports torch at module level, so ``hal --help`` stays fast.  Usage errors exit 2 with one
line, hal's own errors exit 1 (2 for bad values) with one line, never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import importlib
import os
import sys
import warnings
from collections.abc import Sequence
from typing import Any, NoReturn

#: Command modules under hal.commands, in the order ``--help`` lists them.
COMMANDS = ("devices", "plugins", "doctor", "run", "plan", "bench", "watch", "completion")
#: Commands that cannot start without torch: checked first, so a broken torch is one line.
NEEDS_TORCH = ("bench", "run")
#: Exit code when the reader of stdout went away (as a process killed by SIGPIPE reports).
EXIT_BROKEN_PIPE = 141
_OUTPUT_ERRNOS = (errno.EPIPE, errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


class _Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors (exit 2) instead of a usage block."""

    def error(self, message: str) -> NoReturn:
        from hal.console import one_line

        sys.stderr.write(f"{self.prog}: error: {one_line(message)} (see '{self.prog} --help')\n")
        raise SystemExit(2)

    def _print_message(self, message: str, file: Any = None) -> None:
        # argparse swallows write errors here; let a closed pipe or a full disk reach main().
        if message:
            (file or sys.stdout).write(message)


class _VersionAction(argparse.Action):
    """``--version``: reads the distribution metadata only when asked (it costs ~60 ms to import)."""

    def __call__(self, parser: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> None:
        import hal

        print(f"hal {hal.__version__}")
        parser.exit()


def _show_warning(
    message: Warning | str, category: type[Warning], filename: str, lineno: int,
    file: Any = None, line: str | None = None,
) -> None:
    from hal.console import one_line

    sys.stderr.write(f"hal: warning: {one_line(message)}\n")


def build_parser() -> argparse.ArgumentParser:
    """The full parser with every command's sub-parser."""
    parser = _Parser(
        prog="hal",
        description="Hardware abstraction for PyTorch: which device, why, and what is wrong.",
    )
    parser.add_argument("--version", action=_VersionAction, nargs=0, help="show hal's version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in COMMANDS:
        module = importlib.import_module(f"hal.commands.{name}")
        module.add_parser(sub)
    return parser


def require_torch(command: str) -> None:
    """Import torch for a command that needs it; a torch whose import raises is one HalError line."""
    from hal.errors import HalError, describe_exception

    try:
        import torch  # noqa: F401
    except Exception as exc:
        raise HalError(f"torch cannot be imported ({describe_exception(exc, 300)}); "
                       f"'hal {command}' needs it; 'hal doctor' says why") from None


def _error(message: object) -> None:
    """The one place hal prints an error: one escaped, bounded line on stderr."""
    from hal.console import one_line

    sys.stderr.write(f"hal: error: {one_line(message)}\n")


def _dispatch(argv: Sequence[str] | None) -> int:
    from hal.errors import ConfigError, HalError

    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    warnings.showwarning = _show_warning
    from hal.validate import route_plugin_stdout

    route_plugin_stdout()  # what plugin code prints goes to stderr: --json output stays parseable
    # torch's CPU wheel warns at import when numpy is absent; it says nothing about hal's answer.
    warnings.filterwarnings("ignore", message="Failed to initialize NumPy")
    try:
        if args.command in NEEDS_TORCH:
            require_torch(args.command)
        result: int = args.run(args)
        return result
    except ConfigError as exc:
        _error(exc)
        return 2
    except HalError as exc:
        _error(exc)
        return 1
    except KeyboardInterrupt:
        sys.stderr.write("hal: interrupted\n")
        return 130


def _output_failed(exc: OSError) -> int:
    """stdout cannot take the output (reader gone, disk full): point it at devnull, one line, exit."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # the final flush at exit must not fail again
        os.close(devnull)
    if exc.errno == errno.EPIPE:  # the reader left on purpose (| head): no message
        return EXIT_BROKEN_PIPE
    with contextlib.suppress(OSError, ValueError, AttributeError):
        _error(f"cannot write the output: {exc.strerror or exc}")
        sys.stderr.flush()
    return 1


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (output errors end quietly, never with a traceback)."""
    if sys.stdout is None:  # started with stdout closed (hal devices >&-)
        with contextlib.suppress(OSError, ValueError, AttributeError):
            sys.stderr.write("hal: error: standard output is closed\n")
        return 1
    from hal.console import setup_streams

    setup_streams()  # a terminal whose encoding lacks a character gets a look-alike, not a crash
    try:
        try:
            code = _dispatch(argv)
        finally:
            sys.stdout.flush()  # inside the try: a closed pipe fails here, not at exit
        return code
    except OSError as exc:
        if exc.errno in _OUTPUT_ERRNOS:
            return _output_failed(exc)
        raise


if __name__ == "__main__":
    raise SystemExit(main())
