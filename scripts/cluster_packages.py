"""Install Debian's Slurm, munge and Open MPI for the tox env ``cluster`` when they are missing.

Runs ``apt-get update`` once and ``apt-get install -y slurm-wlm munge openmpi-bin`` as root;
without root or apt, or when the registry cannot deliver, it says so and leaves the tests to
skip with that reason (tests/cluster_stack.py ``missing()``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

PACKAGES = ("slurm-wlm", "munge", "openmpi-bin")
TOOLS = ("munged", "slurmctld", "slurmd", "srun", "sbatch", "mpirun")
#: apt on a loaded machine with a slow mirror: bounded, never a hang.
TIMEOUT_S = 900


def main() -> int:
    """Install what is missing; 0 unless apt ran and failed."""
    absent = [t for t in TOOLS if not shutil.which(t)]
    if not absent:
        print("cluster packages: already installed")
        return 0
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        print(f"cluster packages: {', '.join(absent)} missing and not root with apt-get: "
              "the Slurm/MPI tests will skip")
        return 0
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", *PACKAGES]):
        try:
            done = subprocess.run(argv, env=env, timeout=TIMEOUT_S, capture_output=True, text=True)
        except subprocess.TimeoutExpired:
            print(f"cluster packages: {' '.join(argv)} did not finish within {TIMEOUT_S} s")
            return 1
        if done.returncode:
            tail = (done.stderr or done.stdout).strip().splitlines()[-1:]
            print(f"cluster packages: {' '.join(argv[:2])} failed: {' '.join(tail)}")
            return 1
    print(f"cluster packages: installed {', '.join(PACKAGES)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
