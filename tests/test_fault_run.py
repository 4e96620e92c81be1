"""Fault injection for ``hal run``: signals to the launcher, ranks that die, launcher errors.

Real ``hal run`` subprocesses on 127.0.0.1.  The rank script here imports no torch, so each
scenario costs one launcher start; psutil checks that no rank outlives its launcher.
"""

from __future__ import annotations

import contextlib
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest
from helpers import ISOLATED_VARS

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
RANK_SCRIPT = """
import os, signal, sys, time
def leave(signum, frame):
    sys.exit(128 + signum)
signal.signal(signal.SIGINT, leave)  # before READY: a forwarded signal ends the rank quietly
rank = int(os.environ["RANK"])
print(f"READY {rank} {os.getpid()}", flush=True)
action = sys.argv[1]
if action == "kill" and rank == 1:
    os.kill(os.getpid(), signal.SIGKILL)
if action == "abort" and rank == 1:
    os.abort()
time.sleep(600)
"""


def _env() -> dict[str, str]:
    drop = {*ISOLATED_VARS, "MASTER_ADDR", "MASTER_PORT", "LOCAL_WORLD_SIZE", "GROUP_RANK"}
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(OMP_NUM_THREADS="1", TORCH_CPP_LOG_LEVEL="ERROR")
    return env


class Launch:
    """``hal run -n 2`` of the rank script, its stdout read line by line in a thread."""

    def __init__(self, tmp_path: Path, action: str) -> None:
        script = tmp_path / "rank.py"
        script.write_text(RANK_SCRIPT)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "hal", "run", "-n", "2", str(script), action],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(), cwd=ROOT)
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)

    def ranks(self, count: int = 2, timeout: float = 120) -> dict[int, int]:
        """{rank: pid} once ``count`` ranks said READY."""
        found: dict[int, int] = {}
        deadline = time.monotonic() + timeout
        while len(found) < count:
            try:
                line = self.lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                self.proc.kill()
                pytest.fail(f"ranks not ready after {timeout} s: {self.finish()[1][-2000:]}")
            # the ranks share one pipe: two reports can land on one line
            for rank, pid in re.findall(r"READY (\d+) (\d+)", line):
                found[int(rank)] = int(pid)
        return found

    def finish(self, timeout: float = 120) -> tuple[int, str]:
        """(exit code, stderr) once the launcher ended."""
        assert self.proc.stderr is not None
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            pytest.fail(f"hal run still running after {timeout} s")
        return self.proc.returncode, self.proc.stderr.read()


def _gone(pids: dict[int, int], timeout: float = 60) -> list[int]:
    """The pids still alive (not zombies) after ``timeout``; every rank must be gone."""
    procs = []
    for pid in pids.values():
        with contextlib.suppress(psutil.NoSuchProcess):
            procs.append(psutil.Process(pid))
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    left = []
    for p in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            if p.status() != psutil.STATUS_ZOMBIE:
                left.append(p.pid)
                p.kill()
    return left


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 130)])
def test_a_signal_reaches_the_ranks_and_ends_as_interrupted(
        tmp_path: Path, sig: signal.Signals, code: int) -> None:
    job = Launch(tmp_path, "sleep")
    pids = job.ranks()
    job.proc.send_signal(sig)
    rc, err = job.finish()
    assert rc == code, err[-2000:]
    assert err.rstrip().splitlines()[-1] == "hal: interrupted", err[-2000:]
    assert "SignalException" not in err and "Traceback" not in err, err[-2000:]
    assert _gone(pids) == []


def test_ranks_die_with_a_launcher_killed_outright(tmp_path: Path) -> None:
    job = Launch(tmp_path, "sleep")
    pids = job.ranks()
    job.proc.kill()  # SIGKILL: no handler runs, torchrun forwards nothing
    job.proc.wait()
    assert _gone(pids) == []  # not re-parented to pid 1 and left running


def test_a_rank_killed_by_sigkill_is_named_with_its_signal(tmp_path: Path) -> None:
    job = Launch(tmp_path, "kill")
    pids = job.ranks()
    rc, err = job.finish()
    last = err.rstrip().splitlines()[-1]
    assert rc == 1
    # torchrun may or may not list rank 0, which it stopped with SIGTERM: rank 1 comes first
    assert last.startswith("hal: error: "), err[-2000:]
    assert "first: rank 1 (signal 9, SIGKILL)" in last, err[-2000:]
    assert _gone(pids) == []


def test_a_rank_that_aborts_gets_the_check_mode_suggested(tmp_path: Path) -> None:
    job = Launch(tmp_path, "abort")
    job.ranks()
    rc, err = job.finish()
    last = err.rstrip().splitlines()[-1]
    assert rc == 1, err[-2000:]
    assert "first: rank 1 (signal 6, SIGABRT)" in last, err[-2000:]
    assert "TORCH_DISTRIBUTED_DEBUG=DETAIL" in last


def _hal_run(*args: str, timeout: float = 150) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hal", "run", *args], capture_output=True,
                          text=True, env=_env(), cwd=ROOT, timeout=timeout)


@pytest.mark.parametrize(("args", "message"), [
    (["--nnodes", "2:1"], "--nnodes=2:1: MIN 2 is larger than MAX 1"),
    (["--nnodes", "0"], "--nnodes=0 is out of range"),
    (["--rdzv-backend", "bogus"],
     "torchrun refused the arguments: The rendezvous backend 'bogus'"),
    (["--rdzv-endpoint", "::::x"], "--rdzv-endpoint='::::x' is not HOST or HOST:PORT"),
    (["--rdzv-endpoint", "host:99999"], "--rdzv-endpoint port=99999 is out of range"),
    (["-n", "²"], "-n='²' is not a whole number"),
    (["--master-port", "9" * 5000], "--master-port='9999999999999999999999999999999999999...' is not"),
])
def test_launcher_argument_errors_are_one_line_and_exit_2(
        tmp_path: Path, args: list[str], message: str) -> None:
    script = tmp_path / "s.py"
    script.write_text("print('ran')\n")
    proc = _hal_run(*args, str(script))
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [ln for ln in proc.stderr.splitlines() if not ln.startswith("W")]  # torchrun's notes
    assert len(lines) == 1 and message in lines[0], proc.stderr[-2000:]
    assert "ran" not in proc.stdout


def test_a_taken_static_master_port_is_one_line(tmp_path: Path) -> None:
    script = tmp_path / "s.py"
    script.write_text("print('ran')\n")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = _hal_run("--master-addr", "127.0.0.1", "--master-port", str(port), str(script))
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.splitlines() if not ln.startswith("W")]
    assert len(lines) == 1 and "the rendezvous port is already in use" in lines[0], proc.stderr
