"""pyproject's package list covers every folder of hal/ and backends/ (installed as hal.backends).

setuptools installs only the packages listed, so a folder missing from the list works from a
checkout and is absent from a wheel; this reads the list instead of building one.
"""

from __future__ import annotations

import fnmatch
from pathlib import Path
from typing import Any

import pytest

tomllib = pytest.importorskip("tomllib", reason="tomllib is Python 3.11's")

ROOT = Path(__file__).resolve().parents[1]


def _setuptools() -> Any:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]


def _source_folders() -> dict[str, Path]:
    """Dotted package name -> folder, for every folder holding a .py file."""
    found = {}
    for top, name in (("hal", "hal"), ("backends", "hal.backends")):
        for py in (ROOT / top).rglob("*.py"):
            rel = py.parent.relative_to(ROOT / top)
            if "__pycache__" not in rel.parts:
                found[".".join((name, *rel.parts))] = py.parent
    return found


def test_every_folder_is_a_listed_package() -> None:
    listed = set(_setuptools()["packages"])
    folders = _source_folders()
    assert sorted(set(folders) - listed) == [], "add these to [tool.setuptools] packages"
    assert sorted(listed - set(folders)) == [], "listed packages with no folder"
    assert all((f / "__init__.py").is_file() for f in folders.values())


def test_every_data_file_is_package_data() -> None:
    patterns = _setuptools()["package-data"]["hal"]
    data = [p.relative_to(ROOT / "hal").as_posix() for p in (ROOT / "hal").rglob("*")
            if p.is_file() and p.suffix not in (".py", ".pyc") and "__pycache__" not in p.parts]
    assert data and all(any(fnmatch.fnmatch(d, pat) for pat in patterns) for d in data), data
