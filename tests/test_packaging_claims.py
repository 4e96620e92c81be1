"""pyproject.toml claims only what CI tests, and pins what must match the user's torch."""

from __future__ import annotations

import configparser
import re
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parent.parent
#: Distributions built for one torch release each: an extra naming them must pin them exactly.
TORCH_BOUND = ("torch-npu", "torch_npu", "intel-extension-for-pytorch")


def _project() -> dict[str, object]:
    project: dict[str, object] = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return project


def _tox_torch_pins() -> list[tuple[int, ...]]:
    text = (ROOT / "tox.ini").read_text()
    return [tuple(int(x) for x in m.split(".")[:2]) for m in re.findall(r"torch==(\d+\.\d+)", text)]


def test_the_torch_floor_is_the_oldest_torch_ci_runs() -> None:
    deps = [d for d in _project()["dependencies"] if re.match(r"torch\b", d)]  # type: ignore[attr-defined]
    assert len(deps) == 1
    floor = re.fullmatch(r"torch>=(\d+)\.(\d+)", deps[0].replace(" ", ""))
    assert floor, deps
    assert tuple(map(int, floor.groups())) == min(_tox_torch_pins())


def test_requires_python_is_the_python_ci_runs() -> None:
    tox = configparser.ConfigParser()
    tox.read(ROOT / "tox.ini")
    envs = [e.strip() for e in tox["tox"]["envlist"].split(",")]
    tested = sorted({e[2:] for e in envs if re.fullmatch(r"py3\d+", e)})
    assert tested, envs
    oldest = f"3.{min(int(v[1:]) for v in tested)}"
    assert _project()["requires-python"] == f">={oldest}"


def test_no_extra_names_a_torch_bound_package_unpinned() -> None:
    extras: dict[str, list[str]] = _project()["optional-dependencies"]  # type: ignore[assignment]
    for name, reqs in extras.items():
        for req in reqs:
            dist = re.split(r"[<>=!~; \[]", req, maxsplit=1)[0].lower()
            if dist in TORCH_BOUND:
                assert "==" in req, f"extra {name!r}: {req!r} must pin the release its torch needs"
