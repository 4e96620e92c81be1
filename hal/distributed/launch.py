"""``hal run`` on a cluster: the Slurm allocation it runs in, and one runner per outer launcher.

Inside an ``srun`` step (``srun --ntasks-per-node=1 hal run script.py``) the allocation gives
torchrun its node count, node rank and master.  ``hal run --launcher slurm|mpirun`` builds the
``srun``/``mpirun`` command line as a value (DeepSpeed's ``multinode_runner.get_cmd`` shape),
prints it, and runs it (``--dry-run``: prints only).  Torch-free.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

from hal.distributed.environments import Slurm, derived_port
from hal.errors import ConfigError
from hal.parse import parse_int


@dataclass(frozen=True)
class Allocation:
    """A Slurm step's nodes as torchrun's rendezvous flags need them."""

    job_id: str
    num_nodes: int
    node_rank: int
    master_addr: str
    master_port: int

    def torchrun_flags(self) -> dict[str, str]:
        """``hal run``'s rendezvous arguments (argparse names) this allocation fills."""
        return {"nnodes": str(self.num_nodes), "node_rank": str(self.node_rank),
                "master_addr": self.master_addr, "master_port": str(self.master_port)}


def slurm_allocation(environ: Mapping[str, str]) -> Allocation | None:
    """The step this ``hal run`` is a task of, or None outside Slurm (or on one node).

    One launcher per node is what torchrun needs: a step with more tasks than nodes, or a
    several-node allocation without a step (``hal run`` in the batch script itself), is refused.
    """
    job = environ.get("SLURM_JOB_ID", "").strip()
    if not job:
        return None
    if not Slurm.detect(environ):
        nodes = parse_int("SLURM_JOB_NUM_NODES", environ.get("SLURM_JOB_NUM_NODES", "1") or "1",
                          lo=1, hi=1 << 20)
        if nodes > 1:
            raise ConfigError(f"hal run in Slurm job {job} with SLURM_JOB_NUM_NODES={nodes} but "
                              "outside an srun step: start one per node (srun --ntasks-per-node=1 "
                              "hal run ...) or use hal run --launcher slurm")
        return None
    place = Slurm.placement(environ)
    nodes = place.num_nodes or 1
    if place.world_size != nodes:
        raise ConfigError(f"hal run under srun needs one task per node: SLURM_NTASKS="
                          f"{place.world_size} on {nodes} node(s) (srun --ntasks-per-node=1 hal run ...)")
    if nodes == 1:
        return None  # one node: torchrun's --standalone picks a free port itself
    addr, _ = Slurm.main_address(environ, place)
    given = environ.get("MASTER_PORT", "").strip()
    port = parse_int("MASTER_PORT", given, lo=1, hi=65535) if given else derived_port(job)
    return Allocation(job, nodes, place.node_rank or 0, addr, port)


class Runner:
    """An outer launcher ``hal run --launcher NAME`` hands the job to."""

    name: ClassVar[str] = ""
    program: ClassVar[str] = ""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self.environ = environ

    def get_cmd(self, script: str, script_args: Sequence[str], nproc: int | None) -> list[str]:
        """The command line that runs ``script`` on every rank."""
        raise NotImplementedError


class SlurmRunner(Runner):
    """``srun`` one ``hal run`` per node of the allocation; each fills torchrun from its step."""

    name, program = "slurm", "srun"

    def get_cmd(self, script: str, script_args: Sequence[str], nproc: int | None) -> list[str]:
        cmd = ["srun", "--ntasks-per-node=1", "--kill-on-bad-exit=1"]
        nodes = self.environ.get("SLURM_JOB_NUM_NODES", "").strip()
        if nodes:
            cmd.append(f"--nodes={parse_int('SLURM_JOB_NUM_NODES', nodes, lo=1, hi=1 << 20)}")
        inner = [sys.executable, "-m", "hal", "run"]
        if nproc is not None:
            inner += ["-n", str(nproc)]
        return [*cmd, *inner, script, *script_args]


class MpirunRunner(Runner):
    """``mpirun -n N python script``: every rank joins through Open MPI's/Hydra's variables."""

    name, program = "mpirun", "mpirun"

    def get_cmd(self, script: str, script_args: Sequence[str], nproc: int | None) -> list[str]:
        cmd = ["mpirun", "-n", str(nproc or 1)]
        if os.geteuid() == 0:
            cmd.insert(1, "--allow-run-as-root")  # Open MPI refuses root without it
        for var in ("MASTER_ADDR", "MASTER_PORT", "HAL_DEVICE"):
            if self.environ.get(var):
                cmd += ["-x", var]
        return [*cmd, sys.executable, script, *script_args]


RUNNERS: dict[str, type[Runner]] = {r.name: r for r in (SlurmRunner, MpirunRunner)}


def run_with(name: str, script: str, script_args: Sequence[str], nproc: int | None,
             dry_run: bool) -> int:
    """Print the launcher's command line and run it (unless ``dry_run``); its exit status.

    SIGINT/SIGTERM go on to the launcher, which stops its ranks; hal waits for it, so nothing
    is left behind.  The launcher names a failing rank itself (srun: ``task N: Exited``).
    """
    runner = RUNNERS[name](os.environ)
    cmd = runner.get_cmd(script, script_args, nproc)
    line = shlex.join(cmd)
    if dry_run:
        print(line)
        return 0
    sys.stderr.write(f"hal: running: {line}\n")
    try:
        proc = subprocess.Popen(cmd)
    except FileNotFoundError:
        raise ConfigError(f"hal run --launcher {name}: {runner.program} not found on PATH") from None
    previous = {s: signal.signal(s, lambda n, _f: proc.send_signal(n))
                for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        code = proc.wait()
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
    if code:
        how = f"signal {-code}" if code < 0 else f"exit code {code}"
        sys.stderr.write(f"hal: error: {runner.program} ended with {how}; its output above "
                         "names the failing rank\n")
    return code if code >= 0 else 128 - code


def fill_from_allocation(args: object, environ: Mapping[str, str] | None = None) -> str:
    """Give ``hal run``'s ``args`` the Slurm step's rendezvous when none was passed; a note."""
    names = ("nnodes", "node_rank", "rdzv_endpoint", "rdzv_backend", "master_addr", "master_port")
    if any(getattr(args, n, None) is not None for n in names):
        return ""
    alloc = slurm_allocation(os.environ if environ is None else environ)
    if alloc is None:
        return ""
    for key, value in alloc.torchrun_flags().items():
        setattr(args, key, value)
    return (f"Slurm job {alloc.job_id}: node {alloc.node_rank} of {alloc.num_nodes}, "
            f"master {alloc.master_addr}:{alloc.master_port}")


__all__ = ["RUNNERS", "Allocation", "MpirunRunner", "Runner", "SlurmRunner",
           "fill_from_allocation", "run_with", "slurm_allocation"]
