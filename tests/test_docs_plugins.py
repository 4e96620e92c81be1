"""docs/plugins.md's hook reference: every snippet runs, and every hook has one (llm's habit)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from hal import hookspecs

DOC = Path(__file__).resolve().parent.parent / "docs" / "plugins.md"


def _reference() -> str:
    text = DOC.read_text()
    start = text.index("## Hook reference")
    end = text.index("\n## ", start + 1)
    return text[start:end]


def _snippets() -> list[str]:
    return re.findall(r"```python\n(.*?)```", _reference(), re.S)


def test_every_hook_has_a_snippet() -> None:
    hooks = sorted(n for n in dir(hookspecs) if n.startswith("hal_"))
    assert hooks, "no hooks found in hal.hookspecs"
    headings = re.findall(r"^### `(\w+)\(", _reference(), re.M)
    assert sorted(h for h in headings if h.startswith("hal_")) == hooks


@pytest.mark.parametrize("index", range(len(_snippets())))
def test_snippet_runs(index: int) -> None:
    code = _snippets()[index]
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
        env={k: v for k, v in os.environ.items() if not k.startswith("HAL_")},
    )
    assert done.returncode == 0, done.stderr[-2000:]
