"""Count jobs that print the right answer and still fail: ``hal run -n 2`` of the example, N times.

    python scripts/abort_check.py [--runs 50] [--no-hog] [--script examples/distributed_sum.py]

A CPU hog (one busy process) runs beside the jobs, as on a loaded shared machine, because the
exit-order abort (``terminate called without an active exception``, SIGABRT on one rank) shows
up under load.  Prints one line per failed run and a summary: runs, failures, aborts.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HOG = "import time\nend = time.monotonic() + 3600\nwhile time.monotonic() < end: pass\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=50)
    p.add_argument("--no-hog", action="store_true", help="run without the CPU hog")
    p.add_argument("--script", default=str(ROOT / "examples" / "distributed_sum.py"))
    p.add_argument("--timeout", type=float, default=180.0, help="seconds per run")
    p.add_argument("--save", metavar="DIR", help="write each failed run's stderr to DIR/run-N.txt")
    args = p.parse_args()
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env.setdefault("OMP_NUM_THREADS", "1")
    hog = None if args.no_hog else subprocess.Popen([sys.executable, "-c", HOG])
    failures = aborts = 0
    started = time.monotonic()
    try:
        for i in range(args.runs):
            try:
                proc = subprocess.run([sys.executable, "-m", "hal", "run", "-n", "2", args.script],
                                      capture_output=True, text=True, env=env, cwd=ROOT,
                                      timeout=args.timeout)
                code, err = proc.returncode, proc.stderr
            except subprocess.TimeoutExpired as exc:
                code, err = -1, f"timed out after {args.timeout:g} s: {exc.stderr!r}"
            if code != 0:
                failures += 1
                aborted = "terminate called" in err or "SIGABRT" in err or "signal 6" in err
                aborts += aborted
                if args.save:
                    Path(args.save).mkdir(parents=True, exist_ok=True)
                    (Path(args.save) / f"run-{i + 1}.txt").write_text(err)
                tail = " | ".join(err.strip().splitlines()[-3:])
                print(f"run {i + 1}: exit {code}{' (abort)' if aborted else ''}: {tail[-300:]}",
                      flush=True)
    finally:
        if hog is not None:
            hog.kill()
            hog.wait()
    print(f"{args.runs} runs in {time.monotonic() - started:.0f} s: {failures} failed, "
          f"{aborts} aborted", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
