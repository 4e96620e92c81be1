"""Fault injection for the CLI's edges: a reader that left, a full disk, no stdout, a broken torch.

Every case runs the real CLI in a subprocess and wants no traceback, at most one line on
stderr and a non-zero exit.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from helpers import ISOLATED_VARS

from hal.cli import EXIT_BROKEN_PIPE

COMMANDS = [["devices"], ["devices", "--json"], ["plugins"], ["--help"], ["--version"],
            ["plan", "7B", "--no-local"]]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ISOLATED_VARS}
    env.update({"HAL_DEVICE": "cpu", **extra})
    return env


def _hal(args: list[str], stdout: Any, env: dict[str, str] | None = None,
         **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hal", *args], stdout=stdout,
                          stderr=subprocess.PIPE, text=True, env=env or _env(), timeout=120,
                          **kwargs)


def _quiet_failure(out: subprocess.CompletedProcess[str]) -> list[str]:
    assert out.returncode != 0, out.stderr
    assert "Traceback" not in out.stderr and "Exception ignored" not in out.stderr, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) <= 1, out.stderr
    return lines


@pytest.mark.parametrize("args", COMMANDS, ids=" ".join)
def test_output_to_a_closed_pipe_ends_quietly(args: list[str]) -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the first byte: like `hal ... | head -0`
    try:
        out = _hal(args, stdout=write_end)
    finally:
        os.close(write_end)
    assert _quiet_failure(out) == []
    assert out.returncode == EXIT_BROKEN_PIPE


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full on this system")
@pytest.mark.parametrize("args", COMMANDS, ids=" ".join)
def test_output_to_a_full_disk_is_one_line(args: list[str]) -> None:
    with open("/dev/full", "w") as full:
        out = _hal(args, stdout=full)
    assert _quiet_failure(out) == ["hal: error: cannot write the output: No space left on device"]


def test_started_with_stdout_closed_is_one_line() -> None:
    out = _hal(["devices"], stdout=None, preexec_fn=lambda: os.close(1))
    assert _quiet_failure(out) == ["hal: error: standard output is closed"]


def test_a_partly_read_pipe_still_exits_cleanly() -> None:
    """`hal devices --json | head -c 10`: the reader leaves after a few bytes."""
    proc = subprocess.Popen([sys.executable, "-m", "hal", "devices", "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env())
    assert proc.stdout is not None and proc.stderr is not None
    first = proc.stdout.read(10)
    proc.stdout.close()
    err = proc.stderr.read().decode()
    code = proc.wait(timeout=120)
    assert first.startswith(b"{") or first == b""
    assert "Traceback" not in err and len(err.strip().splitlines()) <= 1
    assert code in (0, EXIT_BROKEN_PIPE)  # 0 when everything fit in the pipe before it closed


@pytest.fixture
def broken_torch(tmp_path: Path) -> dict[str, str]:
    """An environment whose ``import torch`` raises, as a torch built for a missing driver does."""
    (tmp_path / "torch.py").write_text(
        "raise RuntimeError('libtorch_cuda.so: cannot open shared object file')\n")
    path = os.pathsep.join(p for p in (str(tmp_path), os.environ.get("PYTHONPATH")) if p)
    return _env(PYTHONPATH=path)


@pytest.mark.parametrize("args", [["bench"], ["bench", "--json"], ["run", "-n", "1", "x.py"]],
                         ids=" ".join)
def test_a_torch_whose_import_raises_is_one_line(broken_torch: dict[str, str],
                                                 args: list[str]) -> None:
    out = _hal(args, stdout=subprocess.PIPE, env=broken_torch)
    (line,) = _quiet_failure(out)
    assert line.startswith("hal: error: torch cannot be imported (RuntimeError: libtorch_cuda.so")
    assert f"'hal {args[0]}' needs it" in line and out.stdout == ""


def test_help_still_works_with_a_broken_torch(broken_torch: dict[str, str]) -> None:
    out = _hal(["--help"], stdout=subprocess.PIPE, env=broken_torch)
    assert out.returncode == 0 and "bench" in out.stdout
