"""Bench: what watching costs.  Goals (issue 17): each sample under 5 ms here, and ``hal watch``
at 1 Hz under 1 % of one core; no device context is created (the fakes would count one).

1. Sample cost: ``Sampler.sample()`` in-process over the real CPU backend alone, and over the
   CPU plus the four vendor fakes (cuda, rocm, ascend, xpu: nine devices).  Median and p95 wall
   time per sample; the CPU reader's process-table refresh (every 5 s) is included as it falls.
2. Overhead: the real ``hal watch`` live view in a pseudo-terminal at ``--interval 1`` (and the
   ``--json`` stream into a pipe), its CPU time over a window after start-up, as a fraction of
   one core.  Run with ``python bench/bench_watch.py [--seconds 30]``.
"""

from __future__ import annotations

import argparse
import os
import select
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent


def _fake_backends(tmp: Path) -> list[object]:
    from hal.backends.ascend.testing.fake_telemetry import make_backend as ascend
    from hal.backends.cuda.testing.fake_telemetry import make_backend as cuda
    from hal.backends.rocm.testing.fake_telemetry import make_backend as rocm
    from hal.backends.xpu.testing import fake_telemetry as xpu

    root = xpu.make_tree(tmp / "xpu")
    return [cuda(environ={}), rocm(environ={}), ascend(), xpu.make_backend(root)]


def sample_cost(backends: list[object], n: int) -> tuple[float, float, float, int]:
    """(median wall ms, p95 wall ms, mean CPU ms, devices) of n samples after a priming one.

    CPU time (all threads of this process) is the cost itself; wall time also holds waiting
    for a core, which on a shared, loaded machine says more about the neighbours.
    """
    from hal.telemetry import Sampler

    sampler = Sampler(backends, timeout=30)  # type: ignore[arg-type]
    sampler.discover(timeout=60)
    sampler.sample()
    times = []
    cpu0 = time.process_time()
    for _ in range(n):
        start = time.perf_counter()
        rows = sampler.sample()
        times.append((time.perf_counter() - start) * 1000)
        assert all(r.error is None for r in rows), [r.error for r in rows if r.error]
    cpu = (time.process_time() - cpu0) / n * 1000
    sampler.close()
    times.sort()
    return statistics.median(times), times[int(0.95 * (len(times) - 1))], cpu, len(rows)


def _drain(fd: int, seconds: float) -> None:
    end = time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            try:
                if not os.read(fd, 65536):
                    return
            except OSError:
                return


def live_overhead(seconds: float, warmup: float = 8.0) -> float:
    """Fraction of one core the live view uses at --interval 1, measured after ``warmup``."""
    master, slave = os.openpty()
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "150", "LINES": "40"}
    proc = subprocess.Popen([sys.executable, "-m", "hal", "watch", "--interval", "1"],
                            stdin=slave, stdout=slave, stderr=slave, env=env)
    try:
        p = psutil.Process(proc.pid)
        _drain(master, warmup)
        c0, t0 = sum(p.cpu_times()[:2]), time.monotonic()
        _drain(master, seconds)
        c1, t1 = sum(p.cpu_times()[:2]), time.monotonic()
        os.write(master, b"q")
        _drain(master, 2)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
        os.close(slave)
    return (c1 - c0) / (t1 - t0)


def json_overhead(seconds: float, warmup: float = 8.0) -> float:
    """Fraction of one core the --json stream into a pipe uses at --interval 1."""
    proc = subprocess.Popen([sys.executable, "-m", "hal", "watch", "--json", "--interval", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        p = psutil.Process(proc.pid)
        _drain(fd, warmup)
        c0, t0 = sum(p.cpu_times()[:2]), time.monotonic()
        _drain(fd, seconds)
        c1, t1 = sum(p.cpu_times()[:2]), time.monotonic()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    return (c1 - c0) / (t1 - t0)


def main() -> None:
    """Measure and print every figure against its goal."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="measuring window")
    parser.add_argument("--samples", type=int, default=300)
    args = parser.parse_args()

    from hal.backends.cpu import CpuBackend

    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    med, p95, cpu, n = sample_cost([CpuBackend()], args.samples)
    print(f"sample, cpu only ({n} device): CPU {cpu:.2f} ms; wall median {med:.2f} ms, "
          f"p95 {p95:.2f} ms (goal < 5 ms)")
    with tempfile.TemporaryDirectory() as tmp:
        fakes = _fake_backends(Path(tmp))
        med, p95, cpu, n = sample_cost([CpuBackend(), *fakes], args.samples)
    print(f"sample, cpu + 4 vendor fakes ({n} devices): CPU {cpu:.2f} ms; wall median "
          f"{med:.2f} ms, p95 {p95:.2f} ms (goal < 5 ms)")
    live = live_overhead(args.seconds)
    print(f"hal watch live view at 1 Hz: {live * 100:.2f} % of one core over {args.seconds:g} s "
          "(goal < 1 %)")
    stream = json_overhead(args.seconds)
    print(f"hal watch --json at 1 Hz: {stream * 100:.2f} % of one core over {args.seconds:g} s "
          "(goal < 1 %)")


if __name__ == "__main__":
    main()
