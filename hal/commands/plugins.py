"""``hal plugins``: every plugin with distribution, version, hooks, status and load error."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def add_parser(sub: Any) -> None:
    """Register the ``plugins`` command."""
    p = sub.add_parser("plugins", help="list plugins, their versions, hooks and load errors")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Print the plugin list; exit 0 even when some failed (they are listed with the error)."""
    from hal.plugins import list_plugins
    from hal.validate import route_plugin_stdout

    route_plugin_stdout()  # what plugin code prints goes to stderr: --json stays parseable
    plugins = list_plugins()
    if args.json:
        json.dump(plugins, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    for p in plugins:
        dist = f"{p['distribution']} {p['version']}" if p["distribution"] else "(no distribution)"
        line = f"{p['name']}: {p['status']} [{dist}]"
        if p["hooks"]:
            line += f" hooks: {', '.join(p['hooks'])}"
        if p["error"]:
            line += f" — {p['error']}"
        for note in p.get("notes", []):
            line += f"; note: {note}"
        sys.stdout.write(line + "\n")
    return 0
