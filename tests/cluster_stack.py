"""A one-node Slurm cluster on localhost for tests/test_cluster.py: munged, slurmctld and slurmd
started from a generated slurm.conf in a temporary directory, and stopped (every daemon waited
for) by ``stop()``.  Needs root and Debian's slurm-wlm and munge (scripts/cluster_packages.py)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

#: How long a daemon may take to answer on a loaded 2-core machine.
START_TIMEOUT_S = 120.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def missing() -> str | None:
    """Why the stack cannot run here, or None."""
    if os.geteuid() != 0:
        return "the Slurm tests start slurmd, which needs root"
    tools = [t for t in ("munged", "slurmctld", "slurmd", "srun", "sbatch", "sinfo") if not shutil.which(t)]
    if tools:
        return f"{', '.join(tools)} not installed (Debian: apt-get install slurm-wlm munge)"
    return None


@dataclass
class Stack:
    """The running daemons and the environment that points srun/sbatch at them."""

    root: Path
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)

    def conf(self) -> str:
        r = self.root
        return "\n".join([
            "ClusterName=halci", "SlurmctldHost=localhost(127.0.0.1)", "AuthType=auth/munge",
            f"AuthInfo=socket={r}/munge.sock", "CredType=cred/munge", "SlurmUser=root", "SlurmdUser=root",
            f"SlurmctldPort={_free_port()}", f"SlurmdPort={_free_port()}",
            f"StateSaveLocation={r}/state", f"SlurmdSpoolDir={r}/spool",
            f"SlurmctldPidFile={r}/slurmctld.pid", f"SlurmdPidFile={r}/slurmd.pid",
            f"SlurmctldLogFile={r}/slurmctld.log", f"SlurmdLogFile={r}/slurmd.log",
            "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none", "MpiDefault=none",
            "SchedulerType=sched/builtin", "SelectType=select/cons_tres", "SelectTypeParameters=CR_CPU",
            "ReturnToService=2", "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none", "KillWait=5", "MinJobAge=5",
            f"NodeName=localhost NodeAddr=127.0.0.1 CPUs={os.cpu_count() or 1} State=UNKNOWN",
            "PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4",
            ""])

    def _daemon(self, *argv: str) -> None:
        log = open(self.root / f"{Path(argv[0]).name}.out", "wb")  # noqa: SIM115
        self.procs.append(subprocess.Popen(list(argv), stdout=log, stderr=subprocess.STDOUT,
                                           env=self.env, start_new_session=True))

    def start(self) -> None:
        r = self.root
        for d in ("state", "spool"):
            (r / d).mkdir(parents=True, exist_ok=True)
        (r / "slurm.conf").write_text(self.conf())
        key = r / "munge.key"
        key.write_bytes(os.urandom(128))
        key.chmod(0o400)
        self.env = {**os.environ, "SLURM_CONF": str(r / "slurm.conf")}
        self._daemon("munged", "-F", "-f", f"--socket={r}/munge.sock", f"--key-file={key}",
                     f"--pid-file={r}/munged.pid", f"--log-file={r}/munged.log",
                     f"--seed-file={r}/munge.seed")
        self._wait(lambda: (r / "munge.sock").exists(), "munged")
        self._daemon("slurmctld", "-D", "-i", "-f", str(r / "slurm.conf"))
        self._daemon("slurmd", "-D", "-N", "localhost", "-f", str(r / "slurm.conf"))
        self._wait(self._idle, "slurmctld/slurmd (node idle)")

    def _idle(self) -> bool:
        out = subprocess.run(["sinfo", "-h", "-N", "-o", "%T"], env=self.env, capture_output=True,
                             text=True, timeout=60)
        return out.returncode == 0 and out.stdout.strip().startswith("idle")

    def _wait(self, ready: object, what: str) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if any(p.poll() is not None for p in self.procs):
                raise RuntimeError(f"{what}: a daemon exited early; logs in {self.root}: "
                                   + self.logs())
            if ready():  # type: ignore[operator]
                return
            time.sleep(0.5)  # polling a daemon's readiness, bounded by the deadline
        raise RuntimeError(f"{what} not ready within {START_TIMEOUT_S:g} s; " + self.logs())

    def logs(self) -> str:
        return " | ".join(f"{p.name}: {p.read_text(errors='replace')[-400:]}"
                          for p in sorted(self.root.glob("*.log")) if p.is_file())

    def stop(self) -> None:
        """Stop every daemon (SIGTERM, then SIGKILL after 30 s) and wait for each."""
        for p in reversed(self.procs):
            if p.poll() is None:
                p.terminate()
        for p in reversed(self.procs):
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=30)
        self.procs.clear()
