"""This process's place in the job: the World, and the one State object that owns the group.

``init()`` joins the job torchrun started (or becomes a world of one), ``shutdown()`` tears it
down in an order that cannot abort (see ``shutdown``), and every other module reads the
current World and the torch entry points from ``STATE``.
"""

from __future__ import annotations

import atexit
import gc
import os
import re
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from hal.distributed.env import DEFAULT_TIMEOUT_S, Env, backend_string, read_env, timeout_seconds
from hal.distributed.faults import describe_peer_failure, first_line
from hal.errors import ConfigError, DistributedError, LaunchError

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class World:
    """This process's place in the job: rank, size, local rank, device and backend string."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: str
    timeout_s: float = DEFAULT_TIMEOUT_S
    master: str | None = None
    #: The launcher environment that placed this rank (torchrun, slurm, openmpi, ...; "none").
    environment: str = "none"
    #: Why: which launcher was used, the outer ones it overrode, where the master came from.
    reason: str = field(default="no launcher variables set: a world of one", compare=False)

    @property
    def is_main(self) -> bool:
        """True on rank 0, the rank that logs, saves and prints."""
        return self.rank == 0


@dataclass
class State:
    """Everything hal.distributed remembers between calls, in one place (one per process)."""

    lock: threading.RLock = field(default_factory=threading.RLock)
    world: World | None = None
    owns_group: bool = False
    made_group: bool = False  # hal created a group in this process at some time
    atexit_registered: bool = False
    dist: Any = None  # torch.distributed once init() ran: spares an import per call
    gather: Any = None  # all_gather_single where torch has it, else all_gather_into_tensor
    scatter: Any = None  # reduce_scatter_single where torch has it, else reduce_scatter_tensor
    #: [weakref(out), weakref(tensor), op, ReduceOp] of the last reduce_scatter that passed
    #: hal's checks in this world (weak: the shortcut must not keep large buffers alive).
    last_scatter: list[Any] = field(default_factory=list)


STATE = State()


def is_initialized() -> bool:
    """Has ``init()`` run in this process (and ``shutdown()`` not since)?"""
    return STATE.world is not None


def world() -> World:
    """The current World, initialising with the defaults on first use."""
    return STATE.world or init()


def init(timeout: float | timedelta | None = None) -> World:
    """Join the job torchrun started (or become a world of one) and return this rank's World.

    Idempotent: later calls return the same World.  ``timeout`` (seconds, default 600) bounds
    the rendezvous and every collective; a missing or dead rank fails within it.
    """
    s = STATE
    existing = s.world
    if existing is not None:
        return existing
    with s.lock:
        if s.world is not None:
            return s.world
        seconds = timeout_seconds(timeout)
        env = _launch_env()
        import torch.distributed as dist

        from hal.selection import select

        selection = select()
        backend = selection.backend
        device = selection.device
        backend_str = backend_string(backend)
        if not dist.is_available():
            raise DistributedError("this torch build has no torch.distributed support")
        if selection.index is not None:
            backend.set_device(selection.index)
        if dist.is_initialized():  # the user (or a library) made the group: adopt it
            new = World(dist.get_rank(), dist.get_world_size(),
                        env.local_rank if env else 0, device, str(dist.get_backend()), seconds,
                        env.master if env else None, env.name if env else "none",
                        "adopted the process group made before init()")
        elif env is None:
            new = World(0, 1, 0, device, backend_str, seconds)
        else:
            _init_group(dist, backend_str, env, seconds)
            s.owns_group = s.made_group = True
            new = World(env.rank, env.world_size, env.local_rank, device, backend_str, seconds,
                        env.master, env.name, env.reason)
        if not s.atexit_registered:
            # registered after torch.distributed's import, so it runs before torch's own exit
            # handlers (atexit is last-in, first-out) while the interpreter is whole
            atexit.register(_at_exit)
            s.atexit_registered = True
        s.dist = dist
        s.gather = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
        s.scatter = getattr(dist, "reduce_scatter_single", None) or dist.reduce_scatter_tensor
        s.world = new
        return new


def _launch_env() -> Env | None:
    """The launcher environment; inconsistent variables are a LaunchError, its line on stderr."""
    try:
        return read_env(os.environ)
    except ConfigError as exc:
        import sys

        sys.stderr.write(f"hal: error: {exc}\n")
        raise LaunchError(str(exc)) from None


_JOINED_RE = re.compile(r"(\d+)/(\d+) clients joined")


def _wait_for_master(env: Env, deadline: float, seconds: float) -> None:
    """Return once the master's port accepts connections; DistributedError at the deadline.

    torch's own client connects and validates twice, each time for the whole timeout, and
    logs a C++ stack trace each time: waiting here first keeps the failure at the stated
    timeout and out of the C++ logger.
    """
    pause = 0.02
    while True:
        left = deadline - time.monotonic()
        try:
            with socket.create_connection((env.master_addr, env.master_port),
                                          timeout=max(0.05, min(left, 2.0))):
                return
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
        left = deadline - time.monotonic()
        if left <= 0:
            raise DistributedError(
                f"rank {env.rank} of {env.world_size} could not reach the master at {env.master} "
                f"within {seconds:g} s (is rank 0 running, are MASTER_ADDR/MASTER_PORT right?): "
                f"{reason}")
        time.sleep(min(pause, left))  # a retry with backoff, bounded by the deadline
        pause = min(pause * 2, 0.5)


#: TCPStore's wire protocol (torch/csrc/distributed/c10d/TCPStoreBackend.hpp): VALIDATE with
#: its magic number, then GETNUMKEYS, which every store answers with 8 bytes.
_STORE_HELLO = bytes([0]) + struct.pack("<I", 0x3C85F7CE) + bytes([7])


def store_problem(host: str, port: int, seconds: float) -> str | None:
    """Why ``host:port``, which accepts connections, is no torch store; None if it may be one.

    torch's client waits for the store's reply without a bound, so a port held by another
    service would hang it.  A refusal or a closed connection is left to torch to judge.
    """
    try:
        conn = socket.create_connection((host, port), timeout=max(0.05, seconds))
    except OSError:
        return None  # refused or unreachable: not this function's question
    reply = b""
    with conn:
        try:
            conn.settimeout(max(0.05, seconds))
            conn.sendall(_STORE_HELLO)
            while len(reply) < 8:
                chunk = conn.recv(8 - len(reply))
                if not chunk:
                    return None
                reply += chunk
        except TimeoutError:
            if not reply:
                return f"accepts connections but did not answer as a torch store within {seconds:g} s"
        except OSError:
            return None
    if len(reply) < 8 or struct.unpack("<q", reply)[0] < 0 or reply[4:] != bytes(4):
        return f"answered, but not as a torch store (reply {reply[:8]!r})"
    return None


def _store(dist: Any, env: Env, seconds: float) -> Any:
    """The rendezvous store torch's env:// would make, reached within ``seconds`` in all."""
    deadline = time.monotonic() + seconds
    # under torchrun the agent hosts the store and every rank is its client
    agent = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == str(True)
    master = env.rank == 0 and not agent
    if not master:
        _wait_for_master(env, deadline, seconds)
    left = max(1.0, deadline - time.monotonic())
    if master:
        store = dist.TCPStore(env.master_addr, env.master_port, env.world_size, True,
                              timedelta(seconds=left), multi_tenant=True)
    else:
        problem = store_problem(env.master_addr, env.master_port, left)
        if problem:
            raise DistributedError(f"rank {env.rank} of {env.world_size}: {env.master} {problem} "
                                   "(another service on MASTER_PORT?)")
        kwargs = {} if agent else {"multi_tenant": True}
        store = dist.TCPStore(env.master_addr, env.master_port, env.world_size, False,
                              timedelta(seconds=max(1.0, deadline - time.monotonic())), **kwargs)
    store.set_timeout(timedelta(seconds=seconds))
    return dist.PrefixStore("default_pg", store)  # the prefix env:// adds: same keys


def _init_group(dist: Any, backend_str: str, env: Env, seconds: float) -> None:
    """init_process_group on env://'s store, its failures turned into one-line DistributedErrors."""
    where = env.master
    me = f"rank {env.rank} of {env.world_size}"
    try:
        store = _store(dist, env, seconds)
        dist.init_process_group(backend=backend_str, store=store, rank=env.rank,
                                world_size=env.world_size, timeout=timedelta(seconds=seconds))
        return
    except DistributedError:
        raise
    except dist.DistStoreError as exc:
        text = first_line(exc)
        m = _JOINED_RE.search(text)
        if m:
            joined, total = int(m.group(1)), int(m.group(2))
            message = (f"{me}: only {joined} of {total} ranks reached the rendezvous at {where} "
                       f"within {seconds:g} s; {total - joined} rank(s) missing (never started, "
                       f"crashed, or launched with another MASTER_ADDR/MASTER_PORT)")
        else:
            message = f"{me}: rendezvous at {where} failed within {seconds:g} s: {text}"
        error = DistributedError(message)
    except dist.DistNetworkError as exc:
        text = first_line(exc)
        if "EADDRINUSE" in text or "address already in use" in text:
            message = (f"MASTER_PORT={env.master_port} on {env.master_addr} is already in use "
                       f"(another job or a stale process holds it); choose a free port")
        else:
            message = (f"{me} could not reach the master at {where} within {seconds:g} s "
                       f"(is rank 0 running, are MASTER_ADDR/MASTER_PORT right?): {text}")
        error = DistributedError(message)
    except (RuntimeError, ValueError, OSError) as exc:
        error = DistributedError(f"{me}: the process group ({backend_str}) could not be formed "
                                 f"at {where} within {seconds:g} s: {describe_peer_failure(exc)}")
    if dist.is_initialized():
        dist.destroy_process_group()
    raise error


def shutdown() -> None:
    """Destroy the process group hal created and forget the World; safe to call twice.

    Teardown order matters: the group is destroyed first, then cyclic garbage is collected so
    that objects still holding the group (a DistributedDataParallel's reducer is in a reference
    cycle) release it now, and its worker threads are joined while the interpreter is whole.
    Left to interpreter finalization, a gloo thread that needs the GIL to drop a tensor aborts
    the process (``terminate called without an active exception``).
    """
    s = STATE
    with s.lock:
        s.last_scatter.clear()  # checked for this world; a new one checks again
        owned, s.owns_group, s.world = s.owns_group, False, None
        if owned:
            try:
                import torch.distributed as dist

                if dist.is_initialized():
                    dist.destroy_process_group()
            except Exception:  # at exit, a dead peer must not turn cleanup into a traceback
                pass
    if s.made_group:
        gc.collect()


def _at_exit() -> None:
    """The implicit shutdown: runs before torch's own exit handlers (see ``init``)."""
    shutdown()


def ensure_group(w: World) -> None:
    """Give a world of one a real 1-rank group (in-memory store, no port) for DDP and meshes."""
    import torch.distributed as dist

    with STATE.lock:
        if dist.is_initialized():
            return
        store = dist.HashStore()  # type: ignore[attr-defined]
        dist.init_process_group(backend=w.backend, store=store, rank=0,
                                world_size=1, timeout=timedelta(seconds=w.timeout_s))
        STATE.owns_group = STATE.made_group = True
