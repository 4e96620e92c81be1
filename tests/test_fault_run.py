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
# rank 1 fails only once rank 0 has said READY too: the test knows both pids, however loaded
ready0 = os.path.join(os.path.dirname(os.path.abspath(sys.argv[0])), "rank0.ready")
if rank == 0:
    open(ready0, "w").close()
elif action in ("kill", "abort"):
    deadline = time.monotonic() + 120
    while not os.path.exists(ready0) and time.monotonic() < deadline:
        time.sleep(0.05)
if action == "kill" and rank == 1:
    os.kill(os.getpid(), signal.SIGKILL)
if action == "abort" and rank == 1:
    os.abort()
time.sleep(600)
"""


#: A script written as users write them: no signal handler, so Ctrl-C is a KeyboardInterrupt.
PLAIN_SCRIPT = """
import os, time
print(f"READY {os.environ['RANK']} {os.getpid()} OMP={os.environ.get('OMP_NUM_THREADS')}",
      flush=True)
time.sleep(600)
"""
#: A line of torchrun's own logging (glog style: W1207 12:12:27.270000 12955 torch/...py:874]).
TORCHRUN_LINE = re.compile(r"^[IWEF]\d{4} [\d:.]+ +\d+ .*\.py:\d+\]", re.MULTILINE)


def _env(omp: bool = True) -> dict[str, str]:
    drop = {*ISOLATED_VARS, "MASTER_ADDR", "MASTER_PORT", "LOCAL_WORLD_SIZE", "GROUP_RANK",
            "OMP_NUM_THREADS", "HAL_RUN_VERBOSE"}
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(TORCH_CPP_LOG_LEVEL="ERROR")
    if omp:
        env.update(OMP_NUM_THREADS="1")
    return env


class Launch:
    """``hal run -n 2`` of the rank script, its stdout read line by line in a thread."""

    def __init__(self, tmp_path: Path, action: str, text: str = RANK_SCRIPT,
                 flags: tuple[str, ...] = (), omp: bool = True) -> None:
        script = tmp_path / "rank.py"
        script.write_text(text)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "hal", "run", *flags, "-n", "2", str(script), action],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(omp), cwd=ROOT)
        self.seen: list[str] = []
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
            self.seen.append(line)
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


def test_ctrl_c_of_a_plain_script_is_one_hal_line(tmp_path: Path) -> None:
    """No KeyboardInterrupt traceback per rank, no torchrun log line, no OMP banner (issue 20)."""
    job = Launch(tmp_path, "sleep", PLAIN_SCRIPT, omp=False)
    pids = job.ranks()
    job.proc.send_signal(signal.SIGINT)  # torchrun's ranks have sessions of their own: as Ctrl-C
    rc, err = job.finish()
    assert rc == 130, err[-2000:]
    assert err.splitlines() == ["hal: interrupted"], err[-3000:]
    assert all("OMP=1" in line for line in job.seen if "READY" in line), job.seen  # as torchrun
    assert _gone(pids) == []


def test_verbose_shows_the_launcher_and_the_ranks_tracebacks(tmp_path: Path) -> None:
    job = Launch(tmp_path, "sleep", PLAIN_SCRIPT, flags=("-v",), omp=False)
    pids = job.ranks()
    job.proc.send_signal(signal.SIGINT)
    rc, err = job.finish()
    assert rc == 130, err[-2000:]
    assert TORCHRUN_LINE.search(err) and "closing signal SIGINT" in err, err[-3000:]
    assert "KeyboardInterrupt" in err and err.rstrip().endswith("hal: interrupted"), err[-3000:]
    assert _gone(pids) == []


def test_a_normal_run_prints_only_the_ranks_output(tmp_path: Path) -> None:
    script = tmp_path / "s.py"
    script.write_text("import os\nprint('ran', os.environ['RANK'], os.environ['OMP_NUM_THREADS'])\n")
    proc = subprocess.run([sys.executable, "-m", "hal", "run", "-n", "2", str(script)],
                          capture_output=True, text=True, env=_env(omp=False), cwd=ROOT,
                          timeout=150)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert sorted(proc.stdout.split("\n")) == ["", "ran 0 1", "ran 1 1"], proc.stdout
    assert proc.stderr == "", proc.stderr[-2000:]  # no OMP_NUM_THREADS banner, no torchrun notes


def test_unbuffered_ranks_never_interleave_within_a_line(tmp_path: Path) -> None:
    # PYTHONUNBUFFERED=1 makes each print several writes; two ranks on one pipe split lines
    script = tmp_path / "s.py"
    script.write_text("import os, sys\nr = os.environ['RANK']\n"
                      "for i in range(300):\n    print('rank', r, 'line', i, 'of', 300)\n"
                      "    print('err', r, i, file=sys.stderr)\n")
    env = {**_env(), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run([sys.executable, "-m", "hal", "run", "-n", "2", str(script)],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=150)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    assert len(lines) == 600 and all(re.fullmatch(r"rank [01] line \d+ of 300", x) for x in lines)
    for rank in "01":  # each rank's lines in its own order
        mine = [int(x.split()[3]) for x in lines if x.split()[1] == rank]
        assert mine == list(range(300))
    errs = proc.stderr.splitlines()
    assert len(errs) == 600 and all(re.fullmatch(r"err [01] \d+", x) for x in errs), errs[:5]


def test_a_distributed_rank_ends_with_threads_atexit_files_and_status_kept(
        tmp_path: Path) -> None:
    # after torch.distributed the rank skips interpreter finalization: what a script relies
    # on at exit must still happen, and its exit status must be the one it asked for
    script = tmp_path / "s.py"
    script.write_text(
        "import atexit, os, sys, threading, time\nimport torch.distributed\n"
        "out = sys.argv[1]\nlog = open(out + '.log', 'w')\nlog.write('never closed')\n"
        "def late():\n    time.sleep(0.3)\n    open(out + '.thread', 'w').write('joined')\n"
        "threading.Thread(target=late).start()\n"
        "atexit.register(lambda: print('atexit ran', flush=True))\n"
        "sys.exit(sys.argv[2] if sys.argv[2] != 'int' else 7)\n")
    for how, code, said in (("int", 7, ""), ("a message", 1, "a message")):
        out = tmp_path / how.replace(" ", "_")
        proc = subprocess.run([sys.executable, "-m", "hal", "run", "-n", "1", str(script),
                               str(out), how], capture_output=True, text=True, env=_env(),
                              cwd=ROOT, timeout=150)
        assert proc.returncode == code, proc.stderr[-2000:]
        assert proc.stdout == "atexit ran\n"
        assert Path(f"{out}.log").read_text() == "never closed"
        assert Path(f"{out}.thread").read_text() == "joined"
        assert said in proc.stderr


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
