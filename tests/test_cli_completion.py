"""``hal completion``: a script the real shell loads, completing commands, options, choices
and paths from hal's own parser; without shtab, one line and exit 1."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hal.cli import COMMANDS

pytest.importorskip("shtab")  # the test extra holds it; tox installs it

HAL = [sys.executable, "-m", "hal"]

#: Completes the words given as arguments with the loaded script; prints COMPREPLY.
BASH_DRIVER = """
source <("$@")
comp() {
  COMP_WORDS=("$@"); COMP_CWORD=$((${#COMP_WORDS[@]}-1)); COMP_LINE="$*"
  COMP_POINT=${#COMP_LINE}; COMPREPLY=(); _shtab_hal; printf '%s\\n' "${COMPREPLY[*]}"
}
"""


def _hal(*args: str, **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*HAL, *args], capture_output=True, text=True, timeout=60, **kw)


def _bash_complete(tmp_path: Path, *lines: list[str]) -> list[set[str]]:
    script = BASH_DRIVER + "".join(
        "comp " + " ".join(f"'{w}'" for w in words) + "\n" for words in lines)
    out = subprocess.run(["bash", "-c", script, "driver", *HAL, "completion", "bash"],
                         capture_output=True, text=True, timeout=60, cwd=tmp_path, check=True)
    assert out.stderr == ""
    return [set(line.split()) for line in out.stdout.splitlines()]


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")
def test_bash_completes_commands_options_choices_and_paths(tmp_path: Path) -> None:
    (tmp_path / "train.py").write_text("")
    (tmp_path / "log.csv").write_text("")
    commands, plan_options, emit, run_script, csv = _bash_complete(
        tmp_path, ["hal", ""], ["hal", "plan", "--e"], ["hal", "plan", "--emit", ""],
        ["hal", "run", "tr"], ["hal", "watch", "--csv", "lo"])
    assert commands == set(COMMANDS)  # every command, from the parser itself
    assert plan_options == {"--emit", "--engine"}
    assert emit == {"vllm", "sglang", "llama.cpp"}
    assert run_script == {"train.py"}
    assert csv == {"log.csv"}


@pytest.mark.parametrize("shell", ["zsh", "tcsh"])
def test_other_shells_get_a_script_their_shell_parses(shell: str, tmp_path: Path) -> None:
    out = _hal("completion", shell)
    assert out.returncode == 0 and out.stderr == ""
    assert all(name in out.stdout for name in COMMANDS)
    if shutil.which(shell) is None:
        pytest.skip(f"{shell} is not installed: the script is generated, not run")
    script = tmp_path / f"hal.{shell}"
    script.write_text(out.stdout)
    check = [shell, "-n", str(script)] if shell == "zsh" else [shell, "-f", "-c", f"source {script}"]
    assert subprocess.run(check, capture_output=True, timeout=60).returncode == 0


def test_unknown_shell_is_one_usage_line() -> None:
    out = _hal("completion", "fish")
    assert out.returncode == 2 and out.stdout == ""
    assert len(out.stderr.splitlines()) == 1 and "invalid choice: 'fish'" in out.stderr


def test_without_shtab_one_line_says_how_to_get_it(tmp_path: Path) -> None:
    (tmp_path / "shtab.py").write_text("raise ImportError('no shtab here')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(tmp_path), *filter(None, [os.environ.get("PYTHONPATH")])])}
    out = _hal("completion", "bash", env=env)
    assert out.returncode == 1 and out.stdout == ""
    assert out.stderr.count("\n") == 1 and "pip install shtab" in out.stderr
    assert "Traceback" not in out.stderr


def test_hals_written_out_path_completion_is_shtabs_own() -> None:
    # hal.commands holds shtab.FILE's values so that building the parser never imports shtab:
    # the copy must stay what the installed shtab means by "complete a file path"
    import shtab

    from hal.commands import PATH_COMPLETION

    assert {shell: shtab.FILE[shell] for shell in PATH_COMPLETION} == PATH_COMPLETION
