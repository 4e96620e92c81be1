"""Lay hal out as installed, for PYTHONPATH, where ``pip install -e`` cannot run (old setuptools).

    python3 scripts/stage_hal.py ROOT STAGE

STAGE/hal holds links to ROOT/hal's entries plus ``backends`` -> ROOT/backends (setuptools'
package-dir mapping), and STAGE/torch_hal-<version>.dist-info the metadata and the ``hal`` and
console entry points from pyproject.toml, so plugin discovery works exactly as after pip.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import tomllib


def stage(root: Path, dest: Path) -> Path:
    """Build the layout under ``dest`` (replacing an earlier one); returns the dist-info folder."""
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    if dest.exists():
        shutil.rmtree(dest)
    pkg = dest / "hal"
    pkg.mkdir(parents=True)
    for entry in (root / "hal").iterdir():
        if entry.name != "__pycache__":
            (pkg / entry.name).symlink_to(entry)
    (pkg / "backends").symlink_to(root / "backends")
    info = dest / f"torch_hal-{project['version']}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n")
    groups = {"console_scripts": project.get("scripts", {}), **project.get("entry-points", {})}
    (info / "entry_points.txt").write_text("".join(
        f"[{group}]\n" + "".join(f"{k} = {v}\n" for k, v in eps.items()) + "\n"
        for group, eps in groups.items()))
    return info


if __name__ == "__main__":
    if len(sys.argv) != 3:
        print("usage: stage_hal.py ROOT STAGE", file=sys.stderr)
        raise SystemExit(2)
    print(f"staged: {stage(Path(sys.argv[1]).resolve(), Path(sys.argv[2]))}")
