"""``hal doctor``: diagnose the accelerator stack (hardware vs installed software) and say the fix.

Exit 0 without error findings, 1 with, 2 for usage errors.  See docs/doctor.md.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any


def add_parser(sub: Any) -> None:
    """Register the ``doctor`` command."""
    p = sub.add_parser(
        "doctor",
        help="find what is wrong with this machine's accelerator stack and how to fix it",
        description="Compare the hardware that is here with the software that is installed; "
                    "for every mismatch say what is wrong and the command that fixes it. "
                    "Exit code: 0 no errors, 1 errors found, 2 usage error.",
    )
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", dest="format", action="store_const", const="json",
                     help="machine-readable JSON (schema hal.doctor/1, see docs/doctor.md)")
    fmt.add_argument("--markdown", dest="format", action="store_const", const="markdown",
                     help="markdown, for pasting into a bug report")
    fmt.add_argument("--plain", dest="format", action="store_const", const="plain",
                     help="plain text (the default when output is not a terminal)")
    fmt.add_argument("--rich", dest="format", action="store_const", const="rich",
                     help="coloured output (the default on a terminal)")
    p.add_argument("--smoke", action="store_true",
                   help="also allocate, run a matmul per native dtype and a one-process "
                        "collective on the selected device, timed")
    p.add_argument("--timeout", default=None, metavar="SECONDS",
                   help="seconds a probe may take before it is declared hung (default 30, "
                        "at most 3600)")
    p.add_argument("--in-process", action="store_true",
                   help="probe in this process instead of an isolated child (debugging)")
    p.set_defaults(run=run, format=None)


def run(args: argparse.Namespace) -> int:
    """Collect, render, and exit 1 when any finding is an error."""
    from hal.doctor.report import DEFAULT_TIMEOUT, Options, collect
    from hal.errors import ConfigError
    from hal.parse import parse_float
    from hal.validate import MAX_TIMEOUT

    timeout = DEFAULT_TIMEOUT
    if args.timeout is not None:
        try:
            timeout = parse_float("--timeout", args.timeout, lo=0.0, hi=MAX_TIMEOUT,
                                  lo_inclusive=False)
        except ConfigError as exc:
            raise ConfigError(f"{exc} (seconds, such as 30)") from None
    fmt = args.format or ("rich" if sys.stdout.isatty() else "plain")
    report = collect(Options(smoke=args.smoke, timeout=timeout, isolate=not args.in_process))
    if fmt == "rich":
        from rich.console import Console

        from hal.doctor.render import render_rich

        render_rich(report, Console(highlight=False))
    else:
        from hal.doctor.render import render

        sys.stdout.write(render(report, fmt))
    sys.stdout.flush()
    code: int = report["exit_code"]
    return code
