"""Real launchers (issue 24 item 5), run by the tox env ``cluster`` (HAL_TEST_CLUSTER=1): a
one-node Slurm (munged, slurmctld, slurmd on localhost, tests/cluster_stack.py) with ``srun -n 2``
and ``sbatch``; Open MPI's ``mpirun -n 2``; and two "nodes" on loopback (127.0.0.1, 127.0.0.2).
Each checks the all-reduce on every rank, each rank's device index and the failing exit code."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cluster_stack import Stack, missing

from hal.distributed.environments import LAUNCHER_VARS

pytestmark = pytest.mark.skipif(os.environ.get("HAL_TEST_CLUSTER") != "1",
                                reason="real-launcher tests run in the tox env 'cluster'")

SCRIPT = Path(__file__).resolve().parent / "dist_scripts" / "cluster_rank.py"
#: A generous bound for one launch on a loaded 2-core machine (torch imports in every rank).
LAUNCH_TIMEOUT_S = 300


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in LAUNCHER_VARS and not k.startswith(("SLURM_", "OMPI_", "PMIX_", "PMI_"))}
    env.update(HAL_DEVICE="cpu", PYTHONUNBUFFERED="1", **extra)
    return env


def _ranks(stdout: str) -> list[dict[str, Any]]:
    """Every rank's JSON report; the ranks share one stdout, so each object is decoded where it
    starts (two can land on one line), not line by line."""
    decoder = json.JSONDecoder()
    starts = re.finditer(r'(?:^|(?<=\}))\{"', stdout, re.MULTILINE)  # a line's or after another's
    rows = [decoder.raw_decode(stdout, m.start())[0] for m in starts]
    return sorted(rows, key=lambda r: r["rank"])


def _check(rows: list[dict[str, Any]], environment: str, world: int = 2) -> None:
    assert [r["rank"] for r in rows] == list(range(world)), rows
    for r in rows:
        assert r["environment"] == environment and r["world_size"] == world
        assert r["sum"] == world * (world + 1) / 2  # 1 + 2 (+ 3 + 4)
        assert r["device_index"] == r["local_rank"]


@pytest.fixture(scope="session")
def slurm() -> Iterator[Stack]:
    why = missing()
    if why:
        pytest.skip(why)
    before = _stepds()
    stack = Stack(Path(tempfile.mkdtemp(prefix="hal-slurm-")))
    try:
        stack.start()
        yield stack
    finally:
        stack.stop()
        left = _wait_stepds_gone(before)
        shutil.rmtree(stack.root, ignore_errors=True)
        assert not left, f"slurmstepd processes left running: {left}"


def _stepds() -> set[int]:
    found = set()
    for p in Path("/proc").iterdir():
        try:
            if p.name.isdigit() and (p / "comm").read_text().strip() == "slurmstepd":
                found.add(int(p.name))
        except OSError:
            continue
    return found


def _wait_stepds_gone(before: set[int]) -> set[int]:
    import time

    deadline = time.monotonic() + 60
    while (left := _stepds() - before) and time.monotonic() < deadline:
        time.sleep(0.5)  # slurmstepd exits on its own once its step ends; bounded wait
    return left


def _srun(stack: Stack, *argv: str, **extra: str) -> subprocess.CompletedProcess[str]:
    env = _clean_env(**extra)
    env["SLURM_CONF"] = stack.env["SLURM_CONF"]
    return subprocess.run(list(argv), env=env, capture_output=True, text=True,
                          timeout=LAUNCH_TIMEOUT_S, cwd=stack.root)


def test_srun_two_tasks(slurm: Stack) -> None:
    proc = _srun(slurm, "srun", "-n", "2", sys.executable, str(SCRIPT))
    assert proc.returncode == 0, proc.stderr
    rows = _ranks(proc.stdout)
    _check(rows, "slurm")
    assert all(r["master"].startswith("localhost:") for r in rows)


def test_srun_exit_code_of_a_failing_rank(slurm: Stack) -> None:
    proc = _srun(slurm, "srun", "-n", "2", sys.executable, str(SCRIPT), HAL_TEST_FAIL_RANK="1")
    assert proc.returncode == 3, proc.stderr
    _check(_ranks(proc.stdout), "slurm")


@pytest.mark.parametrize("fail", ["", "0"])
def test_sbatch_of_a_script_calling_init(slurm: Stack, fail: str) -> None:
    batch = slurm.root / f"job{fail or 'ok'}.sh"
    out = slurm.root / f"job{fail or 'ok'}.out"
    batch.write_text(f"#!/bin/sh\nsrun -n 2 {sys.executable} {SCRIPT}\n")
    proc = _srun(slurm, "sbatch", "--wait", "-n", "2", "-o", str(out), str(batch),
                 HAL_TEST_FAIL_RANK=fail)
    assert proc.returncode == (3 if fail else 0), proc.stderr + out.read_text()
    _check(_ranks(out.read_text()), "slurm")


@pytest.mark.skipif(shutil.which("mpirun") is None, reason="mpirun not installed "
                    "(Debian: apt-get install openmpi-bin)")
@pytest.mark.parametrize("fail", ["", "1"])
def test_mpirun_two_ranks(fail: str) -> None:
    argv = ["mpirun", "--oversubscribe", "-n", "2", "-x", "HAL_TEST_FAIL_RANK",
            sys.executable, str(SCRIPT)]
    if os.geteuid() == 0:
        argv.insert(1, "--allow-run-as-root")
    proc = subprocess.run(argv, env=_clean_env(HAL_TEST_FAIL_RANK=fail), capture_output=True,
                          text=True, timeout=LAUNCH_TIMEOUT_S)
    assert (proc.returncode != 0) == bool(fail), proc.stderr
    if fail:
        assert proc.returncode == 3, proc.stderr
    rows = _ranks(proc.stdout)
    _check(rows, "openmpi")
    assert all(r["master"].startswith("127.0.0.1:") for r in rows)


def test_two_nodes_on_loopback() -> None:
    """Four tasks as srun starts them on two nodes named 127.0.0.1 and 127.0.0.2."""
    common = {"SLURM_JOB_ID": str(os.getpid()), "SLURM_STEP_ID": "0", "SLURM_NTASKS": "4",
              "SLURM_STEP_NUM_NODES": "2", "SLURM_STEP_NODELIST": "127.0.0.[1-2]",
              "SLURM_STEP_TASKS_PER_NODE": "2(x2)"}
    procs = []
    for rank in range(4):
        env = _clean_env(**common, SLURM_PROCID=str(rank), SLURM_LOCALID=str(rank % 2),
                         SLURM_NODEID=str(rank // 2))
        procs.append(subprocess.Popen([sys.executable, str(SCRIPT)], env=env, text=True,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    outs = []
    try:
        for p in procs:
            out, err = p.communicate(timeout=LAUNCH_TIMEOUT_S)
            assert p.returncode == 0, err
            outs.append(out)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    rows = _ranks("".join(outs))
    _check(rows, "slurm", world=4)
    assert [r["node_rank"] for r in rows] == ["0", "0", "1", "1"]
    assert {r["master"].split(":")[0] for r in rows} == {"127.0.0.1"}
    assert all("first host of SLURM_STEP_NODELIST" in r["reason"] for r in rows)


def test_hal_run_launcher_slurm_runs_one_hal_run_per_node(slurm: Stack) -> None:
    proc = _srun(slurm, sys.executable, "-m", "hal", "run", "--launcher", "slurm", "-n", "2",
                 str(SCRIPT))
    assert proc.returncode == 0, proc.stderr
    assert "hal: running: srun --ntasks-per-node=1" in proc.stderr
    _check(_ranks(proc.stdout), "torchrun")


@pytest.mark.skipif(shutil.which("mpirun") is None, reason="mpirun not installed")
def test_hal_run_launcher_mpirun_names_the_exit_code() -> None:
    env = _clean_env(HAL_TEST_FAIL_RANK="1")
    proc = subprocess.run([sys.executable, "-m", "hal", "run", "--launcher", "mpirun", "-n", "2",
                           str(SCRIPT)], env=env, capture_output=True, text=True,
                          timeout=LAUNCH_TIMEOUT_S)
    assert proc.returncode == 3, proc.stderr
    assert "hal: error: mpirun ended with exit code 3" in proc.stderr
    _check(_ranks(proc.stdout), "openmpi")


def test_doctor_collective_library_check_asks_real_torch() -> None:
    from hal.doctor.cluster import collective_available

    assert collective_available("gloo") is None
    assert collective_available("hccl") == "torch.distributed.is_backend_available('hccl') is False"
