"""A rank's launcher environment (the ``Env`` value) and ``init()``'s arguments, checked.

Which launcher started the process is decided in :mod:`hal.distributed.environments`.

Every number goes through :mod:`hal.parse` (ASCII digits, bounded), so ``RANK=²``, a 5000-digit
``MASTER_PORT``, ``WORLD_SIZE=10**12`` or ``timeout=inf`` are refused before torch sees them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING

from hal.errors import ConfigError
from hal.parse import parse_float

if TYPE_CHECKING:
    from hal.contract import Backend

#: Default for ``init(timeout=...)``: rendezvous and every collective fail after this long.
DEFAULT_TIMEOUT_S = 600.0
#: The longest ``init(timeout=...)`` accepted (a year): beyond it a job is hung, not slow.
MAX_TIMEOUT_S = 365 * 86400.0
#: The largest WORLD_SIZE accepted (2**20 ranks, far beyond any job torch runs today).
MAX_WORLD_SIZE = 2**20
#: Variables torchrun sets that ``init()`` needs; RANK/WORLD_SIZE present means "distributed".
ENV_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class Env:
    """One rank's place in the job as its launcher environment gives it, checked."""

    rank: int
    world_size: int
    local_rank: int
    master_addr: str
    master_port: int
    #: The launcher environment's name (``World.environment``): torchrun, slurm, openmpi...
    name: str = "torchrun"
    node_rank: int | None = None
    num_nodes: int | None = None
    local_world_size: int | None = None
    #: Which launcher was used and why, with where the master came from.
    reason: str = field(default="", compare=False)

    @property
    def master(self) -> str:
        """``ADDR:PORT`` of the rendezvous store."""
        return f"{self.master_addr}:{self.master_port}"


def backend_string(backend: Backend) -> str:
    """The process-group backend for ``backend``: gloo on CPU, else CPU's gloo beside its own.

    Since torch 2.6 a bare accelerator backend only serves accelerator tensors, so CPU
    tensors (metrics, object collectives) would fail without the ``cpu:gloo`` half.
    """
    if backend.device_type == "cpu":
        return "gloo"
    return f"cpu:gloo,{backend.device_type}:{backend.dist_backend}"


def address(text: str) -> str:
    """``text`` as a master host name or IP address; ConfigError naming MASTER_ADDR otherwise."""
    addr = text.strip()
    if len(addr) > 253 or not addr.isascii() or not addr.isprintable() or " " in addr:
        shown = addr if len(addr) <= 40 else addr[:37] + "..."
        raise ConfigError(f"MASTER_ADDR={shown!r} is not a host name or IP address")
    return addr


def read_env(environ: Mapping[str, str]) -> Env | None:
    """The launcher environment of this rank (innermost launcher first), or None for one process."""
    from hal.distributed.environments import detect

    return detect(environ)


def timeout_seconds(timeout: object) -> float:
    """``init(timeout=...)`` in seconds: None for the default, a number or a timedelta."""
    if timeout is None:
        return DEFAULT_TIMEOUT_S
    if isinstance(timeout, timedelta):
        timeout = timeout.total_seconds()
    if not isinstance(timeout, (int, float)) or isinstance(timeout, bool):
        raise ConfigError(f"timeout={timeout!r} must be a number of seconds or a timedelta")
    return parse_float("timeout", timeout, lo=0.0, lo_inclusive=False, hi=MAX_TIMEOUT_S)
