"""Run mypy on hal/ and backends/ laid out as installed (backends/ as hal.backends).

mypy cannot follow setuptools' package-dir remapping, so this stages symlinks in a
temporary folder, runs mypy there with the project's config, and maps paths back.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    """Stage, check, print mypy's report with repository paths; return mypy's exit code."""
    with tempfile.TemporaryDirectory() as tmp:
        stage = Path(tmp) / "hal"
        stage.mkdir()
        for entry in (ROOT / "hal").iterdir():
            if entry.name != "__pycache__":
                (stage / entry.name).symlink_to(entry)
        (stage / "backends").symlink_to(ROOT / "backends")
        cmd = [sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"),
               "-p", "hal", *sys.argv[1:]]
        result = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True,
                                env={**os.environ, "MYPYPATH": tmp})
        out = (result.stdout + result.stderr).replace("hal/backends/", "backends/")
        sys.stdout.write(out)
        return result.returncode


if __name__ == "__main__":
    raise SystemExit(main())
