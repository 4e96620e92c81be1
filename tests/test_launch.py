"""``hal run`` on a cluster (hal.distributed.launch): the Slurm step filling torchrun's
rendezvous, and the srun/mpirun lines ``--launcher`` builds (``--dry-run``).  Real srun and
mpirun runs: tests/test_cluster.py."""

from __future__ import annotations

import argparse
import os
import re
import shlex
import sys
from pathlib import Path

import pytest

import hal
from hal.cli import main
from hal.distributed.launch import fill_from_allocation, slurm_allocation

STEP = {"SLURM_JOB_ID": "4242", "SLURM_STEP_ID": "0", "SLURM_PROCID": "1", "SLURM_NTASKS": "2",
        "SLURM_LOCALID": "0", "SLURM_NODEID": "1", "SLURM_STEP_NUM_NODES": "2",
        "SLURM_STEP_NODELIST": "cn[100-101]", "SLURM_STEP_TASKS_PER_NODE": "1(x2)"}
FLAGS = ("nnodes", "node_rank", "rdzv_endpoint", "rdzv_backend", "master_addr", "master_port")


def _args(**given: str) -> argparse.Namespace:
    return argparse.Namespace(**{n: given.get(n) for n in FLAGS})


def test_a_slurm_step_fills_nodes_node_rank_and_master() -> None:
    args = _args()
    note = fill_from_allocation(args, STEP)
    assert (args.nnodes, args.node_rank, args.master_addr, args.master_port) == \
        ("2", "1", "cn100", str(15000 + 4242))
    assert note == "Slurm job 4242: node 1 of 2, master cn100:19242"
    given = _args(master_addr="elsewhere")
    assert fill_from_allocation(given, STEP) == "" and given.nnodes is None


def test_one_node_or_no_slurm_keeps_standalone() -> None:
    assert slurm_allocation({}) is None
    assert slurm_allocation({"SLURM_JOB_ID": "1", "SLURM_JOB_NUM_NODES": "1"}) is None


@pytest.mark.parametrize(("variables", "message"), [
    ({"SLURM_JOB_ID": "7", "SLURM_JOB_NUM_NODES": "3"},
     "SLURM_JOB_NUM_NODES=3 but outside an srun step: start one per node"),
    ({**STEP, "SLURM_NTASKS": "4", "SLURM_PROCID": "3", "SLURM_STEP_TASKS_PER_NODE": "2(x2)",
      "SLURM_LOCALID": "1"}, "needs one task per node: SLURM_NTASKS=4 on 2 node(s)"),
])
def test_hal_run_refuses_allocations_it_cannot_fill(variables: dict[str, str], message: str) -> None:
    with pytest.raises(hal.ConfigError, match=re.escape(message)):
        slurm_allocation(variables)


@pytest.fixture
def script(tmp_path: Path) -> str:
    path = tmp_path / "train.py"
    path.write_text("print('hi')\n")
    return str(path)


def test_launcher_slurm_dry_run_prints_the_srun_line(script: str, capsys: pytest.CaptureFixture[str],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLURM_JOB_NUM_NODES", "4")
    assert main(["run", "--launcher", "slurm", "--dry-run", "-n", "1", script, "--lr", "3"]) == 0
    assert shlex.split(capsys.readouterr().out) == [
        "srun", "--ntasks-per-node=1", "--kill-on-bad-exit=1", "--nodes=4", sys.executable, "-m",
        "hal", "run", "-n", "1", script, "--lr", "3"]


def test_launcher_mpirun_dry_run_prints_the_mpirun_line(script: str, capsys: pytest.CaptureFixture[str],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HAL_DEVICE", "cpu")
    assert main(["run", "--launcher", "mpirun", "--dry-run", "-n", "2", script]) == 0
    root = ["--allow-run-as-root"] if os.geteuid() == 0 else []
    assert shlex.split(capsys.readouterr().out) == [
        "mpirun", *root, "-n", "2", "-x", "HAL_DEVICE", sys.executable, script]


def test_dry_run_under_a_slurm_step_prints_the_filled_torchrun_line(
        script: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in STEP.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("HAL_DEVICE", "cpu")
    assert main(["run", "--dry-run", script]) == 0
    out, err = capsys.readouterr()
    assert shlex.split(out) == ["torchrun", "--nproc-per-node=1", "--nnodes=2", "--node-rank=1",
                                "--master-addr=cn100", "--master-port=19242", script]
    assert "hal run: Slurm job 4242: node 1 of 2" in err
