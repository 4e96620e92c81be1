"""Launcher environments (hal.distributed.environments): detection order, each launcher's
variables, bad input as one line, the local index selection gets, and a toy launcher added in
one class.  Real Slurm and Open MPI runs: tests/test_cluster.py (tox env ``cluster``)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

import hal
from hal import distributed as hd
from hal.distributed import environments as envs
from hal.selection import decide

ROOT = Path(__file__).resolve().parent.parent
TORCHRUN = {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "MASTER_ADDR": "10.0.0.5",
            "MASTER_PORT": "29501"}
SRUN = {"SLURM_JOB_ID": "123456", "SLURM_STEP_ID": "0", "SLURM_PROCID": "3", "SLURM_NTASKS": "4",
        "SLURM_LOCALID": "1", "SLURM_NODEID": "1", "SLURM_STEP_NUM_NODES": "2",
        "SLURM_STEP_NODELIST": "gpu[07-08]", "SLURM_STEP_TASKS_PER_NODE": "2(x2)"}
OMPI = {"OMPI_COMM_WORLD_RANK": "1", "OMPI_COMM_WORLD_SIZE": "2", "OMPI_COMM_WORLD_LOCAL_RANK": "1",
        "OMPI_COMM_WORLD_LOCAL_SIZE": "2"}


@pytest.fixture(autouse=True)
def _no_world(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for var in (*envs.LAUNCHER_VARS, "KUBERNETES_SERVICE_HOST", "TORCHELASTIC_RUN_ID",
                "SLURM_JOB_ID", "SLURM_JOB_NODELIST", "TOY_RANK", "TOY_SIZE"):
        monkeypatch.delenv(var, raising=False)
    hd.shutdown()
    yield
    hd.shutdown()


def test_no_launcher_is_none() -> None:
    assert envs.detect({}) is None and envs.placement({}) is None


def test_slurm_step_master_from_the_expanded_node_list_and_port_from_the_job_id() -> None:
    env = envs.detect(SRUN)
    assert env is not None
    assert (env.name, env.rank, env.world_size, env.local_rank, env.node_rank, env.num_nodes,
            env.local_world_size) == ("slurm", 3, 4, 1, 1, 2, 2)
    assert (env.master_addr, env.master_port) == ("gpu07", 15000 + 3456)
    assert "first host of SLURM_STEP_NODELIST" in env.reason and "SLURM_JOB_ID=123456" in env.reason
    over = envs.detect({**SRUN, "MASTER_ADDR": "head", "MASTER_PORT": "4000"})
    assert over is not None and over.master == "head:4000"


def test_open_mpi_on_one_node_masters_on_loopback() -> None:
    env = envs.detect(OMPI)
    assert env is not None
    assert (env.name, env.rank, env.world_size, env.local_rank, env.master_addr) == \
        ("openmpi", 1, 2, 1, "127.0.0.1")


@pytest.mark.parametrize(("variables", "name"), [
    ({"PMI_RANK": "1", "PMI_SIZE": "2", "MPI_LOCALRANKID": "1", "MPI_LOCALNRANKS": "2"}, "pmi"),
    ({"MV2_COMM_WORLD_RANK": "1", "MV2_COMM_WORLD_SIZE": "2", "MV2_COMM_WORLD_LOCAL_RANK": "1",
      "MV2_COMM_WORLD_LOCAL_SIZE": "2"}, "mvapich"),
])
def test_mpich_and_mvapich_variables(variables: dict[str, str], name: str) -> None:
    env = envs.detect(variables)
    assert env is not None and (env.name, env.rank, env.world_size, env.local_rank) == (name, 1, 2, 1)


def test_kubernetes_pod_reads_torchrun_variables_and_says_so() -> None:
    pod = {"RANK": "3", "WORLD_SIZE": "4", "MASTER_ADDR": "job-master-0", "MASTER_PORT": "23456",
           "KUBERNETES_SERVICE_HOST": "10.96.0.1"}
    env = envs.detect(pod)
    assert env is not None and (env.name, env.rank, env.local_rank) == ("kubernetes", 3, 0)
    assert "the operator set torchrun's variables" in env.reason
    elastic = envs.detect({**pod, "LOCAL_RANK": "0", "TORCHELASTIC_RUN_ID": "r1"})
    assert elastic is not None and elastic.name == "torchrun" and "torchelastic" in elastic.reason


def test_torchrun_inside_a_slurm_step_wins_and_the_reason_says_why() -> None:
    inner = {**SRUN, "SLURM_NTASKS": "2", "SLURM_PROCID": "1", "SLURM_LOCALID": "0",
             "SLURM_STEP_TASKS_PER_NODE": "1(x2)", **TORCHRUN, "WORLD_SIZE": "4"}
    env = envs.detect(inner)
    assert env is not None and (env.name, env.rank, env.world_size) == ("torchrun", 1, 4)
    assert "innermost launcher (started inside Slurm (srun step)" in env.reason


def test_mpirun_inside_a_batch_step_wins_over_slurm() -> None:
    env = envs.detect({**SRUN, "SLURM_NTASKS": "1", "SLURM_PROCID": "0", "SLURM_LOCALID": "0",
                       "SLURM_NODEID": "0", "SLURM_STEP_TASKS_PER_NODE": "1", **OMPI})
    assert env is not None and env.name == "openmpi"


@pytest.mark.parametrize(("variables", "message"), [
    ({**SRUN, "SLURM_PROCID": "4"}, "SLURM_PROCID=4 with SLURM_NTASKS=4: expected 0 <= SLURM_PROCID"),
    ({**SRUN, "SLURM_LOCALID": "2"}, "SLURM_LOCALID=2 with SLURM_STEP_TASKS_PER_NODE=2(x2)"),
    ({**SRUN, "SLURM_STEP_NODELIST": "gpu[07-"}, "SLURM_STEP_NODELIST='gpu[07-' does not expand"),
    ({**SRUN, "SLURM_NTASKS": "8", **TORCHRUN}, "launchers disagree on the world size: "
     "WORLD_SIZE=2 (torchrun) but SLURM_NTASKS=8"),
    ({"OMPI_COMM_WORLD_RANK": "0"}, "Open MPI environment incomplete: world size "
     "(OMPI_COMM_WORLD_SIZE) not set"),
    ({**OMPI, "OMPI_COMM_WORLD_LOCAL_SIZE": "1"}, "OMPI_COMM_WORLD_LOCAL_RANK=1 with "
     "OMPI_COMM_WORLD_LOCAL_SIZE=1"),
    ({**OMPI, "OMPI_COMM_WORLD_LOCAL_SIZE": "1", "OMPI_COMM_WORLD_LOCAL_RANK": "0"},
     "Open MPI: 2 ranks over several nodes and no MASTER_ADDR"),
])
def test_bad_launcher_variables_are_one_line(variables: dict[str, str], message: str) -> None:
    with pytest.raises(hal.ConfigError) as info:
        envs.detect(variables)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_a_script_with_bad_launcher_variables_exits_2_with_one_line(tmp_path: Path) -> None:
    script = tmp_path / "s.py"
    script.write_text("import hal.distributed as hd\nhd.init()\nprint('unreachable')\n")
    env = {k: v for k, v in os.environ.items() if k not in envs.LAUNCHER_VARS}
    env.update(SRUN, SLURM_PROCID="9", HAL_DEVICE="cpu")
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env,
                          timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "hal: error: SLURM_PROCID=9 with SLURM_NTASKS=4: expected 0 <= SLURM_PROCID < SLURM_NTASKS"]
    assert "unreachable" not in proc.stdout


# -- selection asks the environment for the local index ---------------------------------------


def _gpus(count: int) -> list[hal.Backend]:
    from hal.backends.cpu import CpuBackend

    class Gpu(hal.Backend):
        name, device_type, priority = "gpu", "meta", 90
        visible_devices_env = ("GPUX_VISIBLE_DEVICES",)

        def probe(self) -> hal.Probe:
            return hal.Probe(True, "fake", count)

    return [Gpu(), CpuBackend()]


def test_selection_binds_the_slurm_local_rank() -> None:
    sel = decide(_gpus(2), {**SRUN})
    assert sel.index == 1 and "SLURM_LOCALID=1, slurm" in sel.reason
    assert decide(_gpus(2), {**OMPI}).index == 1


def test_more_tasks_per_node_than_devices_is_refused_on_every_rank() -> None:
    for local in ("0", "1"):
        with pytest.raises(hal.ConfigError, match=r"SLURM_STEP_TASKS_PER_NODE=2 ranks on this node "
                           r"\(slurm\) but gpu has only 1 visible device"):
            decide(_gpus(1), {**SRUN, "SLURM_LOCALID": local})
    # bound by the scheduler (one visible device per task): index 0 on each
    bound = decide(_gpus(1), {**SRUN, "GPUX_VISIBLE_DEVICES": "5"})
    assert bound.index == 0 and "GPUX_VISIBLE_DEVICES gives this rank 1 device(s)" in bound.reason
    assert decide(_gpus(1)[1:], {**SRUN}).index is None  # CPU: any number of ranks


# -- the seam: a toy launcher in one class -----------------------------------------------------


class Toy(envs.Environment):
    """A launcher that sets TOY_RANK/TOY_SIZE and nothing else."""

    name, title = "toy", "Toy launcher"
    markers = rank_vars = ("TOY_RANK",)
    world_size_vars = ("TOY_SIZE",)
    needs_local_rank = False


def test_a_toy_launcher_environment_is_used_by_init(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOY_RANK", "0")
    monkeypatch.setenv("TOY_SIZE", "1")
    monkeypatch.setenv("HAL_DEVICE", "cpu")
    with envs.registered(Toy):
        world = hd.init(timeout=30)
        assert (world.environment, world.rank, world.world_size) == ("toy", 0, 1)
        assert world.master == "127.0.0.1:29500" and "Toy launcher" in world.reason
        assert torch.distributed.is_initialized()
        hd.shutdown()
    assert Toy not in envs.ENVIRONMENTS
    assert hd.init().environment == "none"
