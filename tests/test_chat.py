"""examples/chat.py's bad input: one line on stderr and exit 2, before any model is loaded."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import ISOLATED_VARS

CHAT = Path(__file__).resolve().parents[1] / "examples" / "chat.py"


@pytest.mark.parametrize("args, words", [
    (["--prompts", "/nonexistent/prompts.txt"], "not a regular file"),
    (["--prompts", "EMPTY"], "no prompts"),
    (["-n", "0", "hi"], "--max-new-tokens=0"),
    (["--max-batch", "lots", "hi"], "--max-batch='lots'"),
    (["--prompts", "EMPTY", "hi"], "not both"),
])
def test_bad_input_is_one_line_and_exit_2(args: list[str], words: str, tmp_path: Path) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n")
    argv = [str(empty) if a == "EMPTY" else a for a in args]
    env = {k: v for k, v in os.environ.items() if k not in ISOLATED_VARS}
    done = subprocess.run([sys.executable, str(CHAT), *argv], capture_output=True, text=True,
                          env=env, timeout=120)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and words in done.stderr, done.stderr
    assert done.stdout == ""
