"""Isolation for plugin and torch code that may hang, crash or exit; this runs in the PARENT.

One child process, started without the working directory on sys.path, watched with a silence
timeout.  A child step that makes no progress for ``timeout`` seconds is declared hung and the
child is killed; a child that dies mid-step is declared crashed (a signal) or exited (an exit
code).  Either way the records written before are kept and the step that misbehaved is named.
Each line the child writes is parsed here, once, into a typed record (``hal.doctor.records``);
a line that is not one is kept as a rejection with its reason.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

from hal.doctor.records import Done, Record, RecordError, Step, decode

R = TypeVar("R", bound=Record)
#: Rejected lines kept per child (the first ones say what went wrong).
MAX_REJECTED = 20


@dataclass(frozen=True)
class ChildResult:
    """What the child process left behind: its records, and how it ended."""

    records: tuple[Record, ...]
    outcome: str  # "done", "hung", "crashed" (a signal), "exited" (an exit code, no "done")
    step: Step | None = None  # the step that hung or crashed
    returncode: int | None = None
    stderr_tail: str = ""
    seconds: float = 0.0
    detail: str = ""
    rejected: tuple[str, ...] = ()  # why each line that is not a valid record was refused

    def of(self, kind: type[R]) -> list[R]:
        """Records of one kind, in order."""
        return [r for r in self.records if isinstance(r, kind)]


def describe_exit(returncode: int | None) -> str:
    """``exit code 3`` or ``killed by SIGSEGV`` for a child's return code."""
    if returncode is None:
        return "still running"
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit code {returncode}"


#: The child's first statement: drop the working directory and every relative or empty entry
#: from sys.path before anything else is imported, then run the child.  ``python -m`` would put
#: the working directory first and run a ``torch.py``, ``json.py`` or ``hal/`` found there.
BOOT = ("import sys, os; sys.path[:] = [p for p in sys.path if p and os.path.isabs(p)]; "
        "from hal.doctor.child import main; main(sys.argv[1:])")


def child_command(argv: Sequence[str]) -> list[str]:
    """The isolated child's command line: no working directory on sys.path, and no user site
    directory unless hal itself is installed there."""
    import site

    flags = ["-s"]
    try:
        user_site = site.getusersitepackages()
    except Exception:
        user_site = ""
    here = os.path.abspath(__file__)
    if user_site and here.startswith(os.path.abspath(user_site) + os.sep):
        flags = []
    return [sys.executable, *flags, "-c", BOOT, *argv]


def run_child(argv: Sequence[str], *, timeout: float,
              env: Mapping[str, str] | None = None) -> ChildResult:
    """Run the isolated child (``hal.doctor.child``) in ``/``, reading records until done, a hang,
    a crash or an exit.  ``timeout``: seconds the child may stay silent before it is killed."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        child_command(argv), cwd=os.path.abspath(os.sep),
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, encoding="utf-8", errors="replace",
        env=None if env is None else dict(env),
        start_new_session=True,  # a plugin signalling its process group cannot reach us
    )
    try:
        return _watch(proc, timeout, start)
    finally:
        if proc.poll() is None:  # never leave a child behind, whatever happened here
            proc.kill()
            proc.wait()


def _watch(proc: subprocess.Popen[str], timeout: float, start: float) -> ChildResult:
    lines: queue.Queue[str | None] = queue.Queue()
    stderr: list[str] = []

    def read_stdout() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    def read_stderr() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            stderr.append(line[:2000])
            if len(stderr) > 400:
                del stderr[:200]

    for target in (read_stdout, read_stderr):
        threading.Thread(target=target, daemon=True).start()

    records: list[Record] = []
    rejected: list[str] = []
    step: Step | None = None
    outcome = "crashed"
    detail = ""
    while True:
        try:
            line = lines.get(timeout=timeout)
        except queue.Empty:
            outcome = "hung"
            detail = f"no progress for {timeout:g} s"
            proc.kill()
            break
        if line is None:
            break
        if not line.strip():
            continue
        try:
            record = decode(line)
        except RecordError as exc:
            if len(rejected) < MAX_REJECTED:
                rejected.append(str(exc))
            continue
        records.append(record)
        if isinstance(record, Step):
            step = record
        elif isinstance(record, Done):
            outcome = "done"
            step = None
    try:
        returncode = proc.wait(timeout=max(timeout, 5.0))
    except subprocess.TimeoutExpired:
        proc.kill()
        returncode = proc.wait()
    if outcome == "crashed":
        detail = describe_exit(returncode)
        if returncode is not None and returncode >= 0:
            outcome = "exited"  # an exit code, not a signal: the process ended itself
    return ChildResult(tuple(records), outcome, step, returncode,
                       "".join(stderr)[-4000:], time.perf_counter() - start, detail, tuple(rejected))


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for the child: ours, plus ``extra``."""
    env = dict(os.environ)
    env.update(extra or {})
    return env
