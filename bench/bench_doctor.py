"""Benchmark ``hal doctor`` against ``python -c "import torch"`` and torch's collect_env.

All three run as fresh processes, interleaved round by round so machine load hits them alike;
the medians and the ratios are printed.  The goal: doctor (no --smoke) <= 1.2x import torch.

    python bench/bench_doctor.py [--rounds 7] [--collect-env-rounds 3]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import time

COMMANDS = {
    "import torch": [sys.executable, "-c", "import torch"],
    "hal doctor --json": [sys.executable, "-m", "hal", "doctor", "--json"],
    "hal doctor (plain)": [sys.executable, "-m", "hal", "doctor", "--plain"],
    "collect_env": [sys.executable, "-m", "torch.utils.collect_env"],
}


def timed(argv: list[str]) -> tuple[float, float]:
    """Wall and CPU seconds (user + system, children included) of one run; output discarded,
    exit code ignored (the doctor exits 1 on a machine with problems)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--collect-env-rounds", type=int, default=3)
    args = parser.parse_args()
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    cpu: dict[str, list[float]] = {name: [] for name in COMMANDS}
    timed(COMMANDS["import torch"])  # warm the page cache
    for r in range(args.rounds):
        for name, argv in COMMANDS.items():
            if name == "collect_env" and r >= args.collect_env_rounds:
                continue
            wall, used = timed(argv)
            times[name].append(wall)
            cpu[name].append(used)
    base = statistics.median(times["import torch"])
    print(f"{'command':<22} {'median s':>9} {'min s':>7} {'ratio':>7} {'cpu s':>7}  (runs)")
    for name, values in times.items():
        med = statistics.median(values)
        print(f"{name:<22} {med:9.3f} {min(values):7.3f} {med / base:6.2f}x "
              f"{statistics.median(cpu[name]):7.3f}  ({len(values)})")
    doctor = statistics.median(times["hal doctor --json"])
    print(f"\nhal doctor / import torch: {doctor / base:.2f}x median, "
          f"{min(times['hal doctor --json']) / min(times['import torch']):.2f}x best "
          "(goal <= 1.20x)")
    print(f"hal doctor / collect_env:  {doctor / statistics.median(times['collect_env']):.2f}x")


if __name__ == "__main__":
    main()
