"""``hal doctor``'s cluster findings: the launcher environment, this rank's binding, and what goes
wrong on clusters (an empty visible-devices list in a GPU allocation, more tasks per node than
devices, a master that does not resolve, the collective library missing from torch).

Runs in the doctor's parent on the report's plain data and the environment: no plugin code, no
torch in this process (the collective-library check asks a bounded ``python`` child).
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
from collections.abc import Mapping
from typing import Any

from hal.contract import Finding
from hal.errors import ConfigError

#: Slurm variables that say GPUs (any vendor's generic resources) were allocated to this job.
GPU_ALLOCATION_VARS = ("SLURM_STEP_GPUS", "SLURM_JOB_GPUS", "SLURM_GPUS_ON_NODE", "SLURM_GPUS_PER_TASK")
#: Bound on resolving MASTER_ADDR and on the collective-library check.
RESOLVE_TIMEOUT_S, LIBRARY_TIMEOUT_S = 5.0, 120.0


def _selected(report: Mapping[str, Any]) -> tuple[Mapping[str, Any] | None, int]:
    """The selected backend's report entry and its visible device count."""
    sel = report.get("selection") or {}
    name = sel.get("backend")
    backend = next((b for b in report.get("backends") or [] if b.get("name") == name), None)
    count = next((int(c.get("device_count") or 0) for c in sel.get("candidates") or []
                  if c.get("name") == name), 0)
    return backend, count


def resolves(host: str, timeout: float = RESOLVE_TIMEOUT_S) -> str | None:
    """Why ``host`` does not resolve from this node within ``timeout`` seconds; None if it does."""
    result: list[str | None] = []

    def look() -> None:
        try:
            socket.getaddrinfo(host, None)
            result.append(None)
        except OSError as exc:
            result.append(str(exc.strerror or exc))

    worker = threading.Thread(target=look, daemon=True)
    worker.start()
    worker.join(timeout)
    return result[0] if result else f"no answer within {timeout:g} s"


def collective_available(dist_backend: str, timeout: float = LIBRARY_TIMEOUT_S) -> str | None:
    """Why torch here lacks ``dist_backend`` (asked in a bounded child); None if it has it."""
    code = ("import torch.distributed as d, sys; "
            f"sys.exit(0 if d.is_available() and d.is_backend_available({dist_backend!r}) else 3)")
    try:
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return f"the check did not finish within {timeout:g} s"
    if done.returncode == 3:
        return f"torch.distributed.is_backend_available({dist_backend!r}) is False"
    if done.returncode:
        return f"import torch.distributed failed (exit {done.returncode})"
    return None


def cluster_findings(environ: Mapping[str, str], report: Mapping[str, Any],
                     check_library: bool = True) -> list[Finding]:
    """Findings about the launcher environment this ``hal doctor`` runs in (none outside one)."""
    from hal.distributed.environments import detect

    try:
        env = detect(environ)
    except ConfigError as exc:
        return [Finding("cluster-variables", "error", str(exc),
                        "fix the launcher's variables (or unset them for one process); "
                        "docs/distributed.md lists what each launcher sets")]
    job = environ.get("SLURM_JOB_ID", "").strip()
    if env is None:
        if job:
            return [Finding("cluster-environment", "info",
                            f"Slurm job {job} but not an srun step: hal.distributed.init() runs "
                            "one process here", "start ranks with srun (or hal run --launcher slurm)")]
        return []
    backend, count = _selected(report)
    sel = report.get("selection") or {}
    step = environ.get("SLURM_STEP_ID", "").strip()
    where = f"job {job}{f' step {step}' if step else ''}, " if job else ""
    nodes = f", node {env.node_rank} of {env.num_nodes}" if env.num_nodes else ""
    out = [Finding("cluster-environment", "info",
                   f"{env.name}: {where}rank {env.rank} of {env.world_size}{nodes}, local rank "
                   f"{env.local_rank}, device {sel.get('device', '?')}, master {env.master} "
                   f"({env.reason})")]
    device_type = (backend or {}).get("device_type", "cpu")
    visible = tuple((backend or {}).get("visible_devices_env") or ())
    if device_type == "cpu":
        return out
    allocated = [v for v in GPU_ALLOCATION_VARS if environ.get(v, "").strip()]
    empty = [v for v in visible if v in environ and not environ[v].strip()]
    if allocated and empty:
        out.append(Finding(
            "cluster-visible-devices-empty", "error",
            f"{allocated[0]}={environ[allocated[0]]} allocates devices but {empty[0]} is empty: this "
            "rank sees none", f"do not clear {empty[0]} in the job script; bind with srun "
            "--gpus-per-task=1 or --gpu-bind=single:1"))
    bound = any(environ.get(v, "").strip() for v in visible)
    if env.local_world_size and count and env.local_world_size > count and not bound:
        out.append(Finding(
            "cluster-tasks-above-devices", "error",
            f"{env.local_world_size} tasks on this node but {sel.get('backend')} has {count} "
            "visible device(s)", f"launch at most {count} task(s) per node "
            f"(srun --ntasks-per-node={count}) or bind one device per task"))
    if env.world_size > 1:
        why = resolves(env.master_addr)
        if why:
            out.append(Finding("cluster-master-unreachable", "error",
                               f"master {env.master_addr} does not resolve from this node: {why}",
                               "set MASTER_ADDR to a host name or address every node resolves"))
    dist_backend = str((backend or {}).get("dist_backend") or "")
    if check_library and dist_backend and dist_backend != "gloo":
        why = collective_available(dist_backend)
        if why:
            out.append(Finding("cluster-collective-library", "error",
                               f"{sel.get('backend')} collectives need {dist_backend}: {why}",
                               f"install the torch build or plugin that ships {dist_backend} "
                               "(hal doctor's backend section names its versions)"))
    return out

