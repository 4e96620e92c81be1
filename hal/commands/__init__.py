"""One module a CLI command; each defines ``add_parser(subparsers)`` and a ``run(args)``."""

from __future__ import annotations

from typing import Any

#: shtab's completion of a file path per shell (the value of shtab.FILE, written out so that
#: building the parser never imports shtab): ``hal completion`` completes these arguments as paths.
PATH_COMPLETION = {"bash": "_shtab_compgen_files", "zsh": "_files", "tcsh": "f"}


def completes_path(action: Any) -> Any:
    """Mark an argparse argument as a file path for ``hal completion``; returns the action."""
    action.complete = PATH_COMPLETION
    return action
