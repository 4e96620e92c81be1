"""``hal doctor``'s cluster findings (hal/doctor/cluster.py) on report data and launcher
variables: the environment line, an empty visible-devices list in a GPU allocation, more tasks
per node than devices, a master that does not resolve.  The collective-library check (a torch
child): test_cluster.py."""

from __future__ import annotations

from typing import Any

from hal.doctor.cluster import cluster_findings

SRUN = {"SLURM_JOB_ID": "77", "SLURM_STEP_ID": "0", "SLURM_PROCID": "0", "SLURM_NTASKS": "4",
        "SLURM_LOCALID": "0", "SLURM_NODEID": "0", "SLURM_STEP_NUM_NODES": "1",
        "SLURM_STEP_NODELIST": "localhost", "SLURM_STEP_TASKS_PER_NODE": "4"}


def _report(device_type: str = "gpux", count: int = 2, dist_backend: str = "gloo") -> dict[str, Any]:
    return {"selection": {"backend": "gx", "device": f"{device_type}:0",
                          "candidates": [{"name": "gx", "device_count": count}]},
            "backends": [{"name": "gx", "device_type": device_type, "dist_backend": dist_backend,
                          "visible_devices_env": ["GX_VISIBLE_DEVICES"]}]}


def _ids(found: list[Any]) -> list[str]:
    return [f.id for f in found]


def test_outside_a_launcher_nothing_and_a_batch_step_is_named() -> None:
    assert cluster_findings({}, _report()) == []
    (only,) = cluster_findings({"SLURM_JOB_ID": "9"}, _report())
    assert only.id == "cluster-environment" and "not an srun step" in only.message


def test_the_environment_line_names_job_step_ranks_and_binding() -> None:
    found = cluster_findings({**SRUN, "SLURM_STEP_TASKS_PER_NODE": "2", "SLURM_NTASKS": "2"},
                             _report())
    assert _ids(found) == ["cluster-environment"]
    assert found[0].message.startswith("slurm: job 77 step 0, rank 0 of 2, node 0 of 1, "
                                       "local rank 0, device gpux:0, master localhost:")


def test_tasks_above_devices_and_an_empty_visible_list() -> None:
    found = cluster_findings({**SRUN, "SLURM_GPUS_ON_NODE": "2", "GX_VISIBLE_DEVICES": ""},
                             _report())
    assert _ids(found) == ["cluster-environment", "cluster-visible-devices-empty",
                           "cluster-tasks-above-devices"]
    assert "SLURM_GPUS_ON_NODE=2 allocates devices but GX_VISIBLE_DEVICES is empty" in found[1].message
    assert "4 tasks on this node but gx has 2 visible device(s)" in found[2].message
    assert _ids(cluster_findings({**SRUN, "SLURM_GPUS_ON_NODE": "2", "GX_VISIBLE_DEVICES": ""},
                                 _report("cpu"))) == ["cluster-environment"]  # CPU: any count


def test_a_master_that_does_not_resolve() -> None:
    found = cluster_findings({**SRUN, "SLURM_STEP_TASKS_PER_NODE": "2", "SLURM_NTASKS": "2",
                              "MASTER_ADDR": "no-such-host.invalid"}, _report())
    assert _ids(found)[-1] == "cluster-master-unreachable"
    assert "no-such-host.invalid does not resolve" in found[-1].message


def test_bad_launcher_variables_are_an_error_finding() -> None:
    (only,) = cluster_findings({**SRUN, "SLURM_PROCID": "4"}, _report())
    assert only.id == "cluster-variables" and only.severity == "error"
    assert "SLURM_PROCID=4 with SLURM_NTASKS=4" in only.message

