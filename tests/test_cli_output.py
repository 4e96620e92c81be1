"""The CLI's output under strange terminals: other encodings, a closed pipe, a full disk, and
error lines that echo long or control-character values (real subprocesses of ``hal``)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import ISOLATED_VARS, run_hal

from hal.console import one_line

#: Every command, in a form that prints its normal (non-JSON) output quickly.
COMMANDS = (("devices",), ("plugins",), ("doctor",), ("plan", "deepseek-r1"), ("watch", "--once"))


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ISOLATED_VARS}
    env.update(extra)
    return env


def _run(args: tuple[str, ...], env: dict[str, str], **kw: object) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "hal", *args], env=env, timeout=120,
                          **kw)  # type: ignore[call-overload, no-any-return]


@pytest.mark.parametrize("args", COMMANDS, ids=" ".join)
def test_no_command_crashes_on_an_ascii_terminal(args: tuple[str, ...]) -> None:
    proc = _run(args, _env(PYTHONIOENCODING="ascii"), capture_output=True)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    assert b"Traceback" not in proc.stderr
    assert proc.stdout.isascii() and proc.stdout.strip()


@pytest.fixture(scope="module")
def latin1_locale(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """An ISO-8859-1 locale built with localedef into a private LOCPATH (no root needed)."""
    if shutil.which("localedef") is None or not Path("/usr/share/i18n/locales/en_US").exists():
        pytest.skip("localedef or its locale sources are missing (Debian: apt-get install locales)")
    root = tmp_path_factory.mktemp("locale")
    proc = subprocess.run(["localedef", "-i", "en_US", "-f", "ISO-8859-1",
                           str(root / "en_US.ISO-8859-1")], capture_output=True, timeout=60)
    if not (root / "en_US.ISO-8859-1").exists():
        pytest.skip(f"localedef could not build en_US.ISO-8859-1: {proc.stderr[-200:]!r}")
    return _env(LOCPATH=str(root), LC_ALL="en_US.ISO-8859-1", PYTHONIOENCODING="")


@pytest.mark.parametrize("args", [("plan", "deepseek-r1"), ("watch", "--once")], ids=" ".join)
def test_bars_survive_an_iso_8859_1_locale(args: tuple[str, ...],
                                           latin1_locale: dict[str, str]) -> None:
    check = subprocess.run([sys.executable, "-c", "import sys; print(sys.stdout.encoding)"],
                           env=latin1_locale, capture_output=True, text=True, timeout=60)
    assert check.stdout.strip().lower().replace("-", "") in ("iso88591", "latin1")
    proc = _run(args, latin1_locale, capture_output=True)
    assert proc.returncode == 0, proc.stderr.decode("latin-1")
    assert b"Traceback" not in proc.stderr
    proc.stdout.decode("latin-1")  # the bytes are the locale's, not UTF-8 through a side door
    assert "█".encode() not in proc.stdout


def test_a_closed_pipe_exits_141_quietly() -> None:
    read, write = os.pipe()
    os.close(read)  # the reader is gone before hal writes a byte: every write is EPIPE
    try:
        proc = _run(("watch", "--once"), _env(), stdout=write, stderr=subprocess.PIPE)
    finally:
        os.close(write)
    assert (proc.returncode, proc.stderr) == (141, b"")


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full on this system")
def test_a_full_disk_is_one_line() -> None:
    with open("/dev/full", "w") as full:
        proc = _run(("watch", "--once"), _env(), stdout=full, stderr=subprocess.PIPE)
    err = proc.stderr.decode()
    assert proc.returncode == 1 and "Traceback" not in err
    assert err.count("\n") == 1 and "No space left" in err


def test_a_long_model_name_gives_one_bounded_line() -> None:
    proc = run_hal("plan", "org/" + "a" * 10_000, env={"HF_HUB_OFFLINE": "1"})
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert proc.stderr.count("\n") == 1 and len(proc.stderr) < 600, proc.stderr[:300]
    assert "more characters)" in proc.stderr


def test_a_newline_in_an_env_path_stays_on_one_line(tmp_path: Path) -> None:
    odd = tmp_path / "a\nb\x1b[31m"
    proc = run_hal("plan", "foo/bar", env={"HF_HUB_OFFLINE": "1", "HF_HOME": str(odd)})
    assert proc.returncode != 0
    assert proc.stderr.count("\n") == 1 and "\x1b" not in proc.stderr, proc.stderr
    assert "a\\nb\\x1b[31m" in proc.stderr


def test_one_line_escapes_and_bounds() -> None:
    assert one_line("a\nb\tc\x1b]0;x\x07") == "a\\nb\\tc\\x1b]0;x\\x07"
    assert one_line("é✓") == "é✓"  # printable text is kept as it is
    line = one_line("x" * 1000, limit=50)
    assert line == "x" * 50 + "... (950 more characters)"


def test_the_why_line_names_passed_over_backends_without_repeating_their_reasons() -> None:
    from hal.commands.devices import why_line

    backends = [{"name": "cuda", "available": False, "reason": "torch is a CPU-only build"},
                {"name": "cpu", "available": True, "reason": "always"}]
    line = why_line("cpu is the highest-priority available backend (always); not available: "
                    "cuda: torch is a CPU-only build", backends)
    assert line == ("why: cpu is the highest-priority available backend (always); "
                    "not available: cuda (reasons above)")
