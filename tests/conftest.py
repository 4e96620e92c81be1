"""Shared fixtures: every test starts with no HAL_* settings and a fresh hal decision."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import ISOLATED_VARS

from hal import selection


@pytest.fixture(autouse=True)
def _fresh_hal(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for var in ISOLATED_VARS:
        monkeypatch.delenv(var, raising=False)
    selection.reset(plugins=True)
    try:
        yield
    finally:
        selection.reset(plugins=True)


@pytest.fixture
def plugin_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A directory on sys.path where tests write distributions with ``make_dist``."""
    path = tmp_path / "site"
    path.mkdir()
    monkeypatch.syspath_prepend(str(path))
    return path
