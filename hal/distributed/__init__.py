"""One collectives API on every backend: torch.distributed under a launcher, identities alone.

``init()`` reads the launcher's environment (torchrun, Slurm, MPI...: ``environments``),
builds the process-group backend string from the selected hal backend (CPU's gloo always
beside the accelerator's), sets the rank's device and
returns a ``World``.  Without a launcher it is a world of one with no process group,
where every collective is an identity, so the same script runs in a notebook.  Failures (a rank
that never arrives, crashes or stalls; a busy port; an unreachable master; ranks that disagree
under ``TORCH_DISTRIBUTED_DEBUG=DETAIL``) are one-line ``DistributedError``s within the timeout,
never a hang.  Design notes: docs/distributed.md.

Layout: ``env`` (the environment value, checked), ``environments`` (the launchers),
``launch`` (``hal run`` on a cluster), ``state`` (the World and the one State object),
``plans`` (dtype plans), ``collectives``, ``parallel`` (DDP, meshes), ``faults`` (errors).
"""

from __future__ import annotations

from hal.distributed.collectives import (
    all_gather,
    all_reduce,
    barrier,
    broadcast,
    recv,
    reduce_scatter,
    send,
)
from hal.distributed.env import DEFAULT_TIMEOUT_S, ENV_VARS, backend_string, read_env
from hal.distributed.parallel import mesh, wrap
from hal.distributed.plans import OPS, reduce_plan
from hal.distributed.state import World, init, is_initialized, shutdown, world
from hal.errors import DistributedError

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "ENV_VARS",
    "OPS",
    "DistributedError",
    "World",
    "all_gather",
    "all_reduce",
    "backend_string",
    "barrier",
    "broadcast",
    "init",
    "is_initialized",
    "mesh",
    "read_env",
    "recv",
    "reduce_plan",
    "reduce_scatter",
    "send",
    "shutdown",
    "world",
    "wrap",
]
