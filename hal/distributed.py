"""One collectives API on every backend: torch.distributed under torchrun, identities alone.

``init()`` reads the torchrun environment, builds the process-group backend string from the
selected hal backend (CPU's gloo always beside the accelerator's), sets the rank's device and
returns a ``World``.  Without a torchrun environment it is a world of one with no process group,
where every collective is an identity, so the same script runs in a notebook.  Failures (a rank
that never arrives, crashes or stalls; a busy port; an unreachable master) are one-line
``DistributedError``s within the timeout, never a hang.  Design notes: docs/distributed.md.
"""

from __future__ import annotations

import atexit
import os
import re
import threading
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, NoReturn

from hal.errors import ConfigError, DistributedError, HalError

if TYPE_CHECKING:
    import torch
    from torch.distributed.device_mesh import DeviceMesh
    from torch.nn.parallel import DistributedDataParallel

    from hal.contract import Backend

__all__ = [
    "DEFAULT_TIMEOUT_S",
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
    "recv",
    "reduce_scatter",
    "send",
    "shutdown",
    "world",
    "wrap",
]

#: Default for ``init(timeout=...)``: rendezvous and every collective fail after this long.
DEFAULT_TIMEOUT_S = 600.0
#: The reduction operations every backend offers through hal.
OPS = ("sum", "avg", "max", "min")
#: Variables torchrun sets that ``init()`` needs; RANK/WORLD_SIZE present means "distributed".
ENV_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


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

    @property
    def is_main(self) -> bool:
        """True on rank 0, the rank that logs, saves and prints."""
        return self.rank == 0


@dataclass(frozen=True)
class _Env:
    rank: int
    world_size: int
    local_rank: int
    master_addr: str
    master_port: int


def backend_string(backend: Backend) -> str:
    """The process-group backend for ``backend``: gloo on CPU, else CPU's gloo beside its own.

    Since torch 2.6 a bare accelerator backend only serves accelerator tensors, so CPU
    tensors (metrics, object collectives) would fail without the ``cpu:gloo`` half.
    """
    if backend.device_type == "cpu":
        return "gloo"
    return f"cpu:gloo,{backend.device_type}:{backend.dist_backend}"


def _int_var(environ: Mapping[str, str], name: str) -> int:
    value = environ[name]
    if not value.strip().isdigit():
        raise ConfigError(f"{name}={value!r} is not a non-negative integer")
    return int(value)


def read_env(environ: Mapping[str, str]) -> _Env | None:
    """The torchrun variables, or None when neither RANK nor WORLD_SIZE is set (a world of one)."""
    if "RANK" not in environ and "WORLD_SIZE" not in environ:
        return None
    missing = [v for v in ENV_VARS if not environ.get(v, "").strip()]
    if missing:
        raise ConfigError(
            f"distributed environment incomplete: {', '.join(missing)} not set (torchrun and "
            f"'hal run' set all of {', '.join(ENV_VARS)}; unset RANK and WORLD_SIZE for one process)"
        )
    env = _Env(
        rank=_int_var(environ, "RANK"),
        world_size=_int_var(environ, "WORLD_SIZE"),
        local_rank=_int_var(environ, "LOCAL_RANK"),
        master_addr=environ["MASTER_ADDR"].strip(),
        master_port=_int_var(environ, "MASTER_PORT"),
    )
    if env.world_size < 1 or env.rank >= env.world_size:
        raise ConfigError(
            f"RANK={env.rank} with WORLD_SIZE={env.world_size}: expected 0 <= RANK < WORLD_SIZE"
        )
    if not 0 < env.master_port < 65536:
        raise ConfigError(f"MASTER_PORT={env.master_port} is not a TCP port (1..65535)")
    return env


def _timeout_seconds(timeout: float | timedelta | None) -> float:
    if timeout is None:
        return DEFAULT_TIMEOUT_S
    seconds = timeout.total_seconds() if isinstance(timeout, timedelta) else float(timeout)
    if not seconds > 0:
        raise ConfigError(f"timeout={timeout!r} must be a positive number of seconds")
    return seconds


# -- process state -------------------------------------------------------------------------

_lock = threading.RLock()
_world: World | None = None
_owns_group = False
_atexit_registered = False
_dist: Any = None  # torch.distributed once init() ran: spares an import statement per call
_gather: Any = None  # all_gather_single where torch has it, else all_gather_into_tensor
_scatter: Any = None  # reduce_scatter_single where torch has it, else reduce_scatter_tensor


def is_initialized() -> bool:
    """Has ``init()`` run in this process (and ``shutdown()`` not since)?"""
    return _world is not None


def world() -> World:
    """The current World, initialising with the defaults on first use."""
    return _world or init()


def init(timeout: float | timedelta | None = None) -> World:
    """Join the job torchrun started (or become a world of one) and return this rank's World.

    Idempotent: later calls return the same World.  ``timeout`` (seconds, default 600) bounds
    the rendezvous and every collective; a missing or dead rank fails within it.
    """
    global _world, _owns_group, _atexit_registered, _dist, _gather, _scatter
    existing = _world
    if existing is not None:
        return existing
    with _lock:
        if _world is not None:
            return _world
        import torch.distributed as dist

        from hal.selection import select

        seconds = _timeout_seconds(timeout)
        env = read_env(os.environ)
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
                        f"{env.master_addr}:{env.master_port}" if env else None)
        elif env is None:
            new = World(0, 1, 0, device, backend_str, seconds)
        else:
            _init_group(dist, backend_str, env, seconds)
            _owns_group = True
            new = World(env.rank, env.world_size, env.local_rank, device, backend_str, seconds,
                        f"{env.master_addr}:{env.master_port}")
        if not _atexit_registered:
            atexit.register(shutdown)
            _atexit_registered = True
        _dist, _gather, _scatter = dist, _gather_fn(dist), _scatter_fn(dist)
        _world = new
        return new


_JOINED_RE = re.compile(r"(\d+)/(\d+) clients joined")


def _init_group(dist: Any, backend_str: str, env: _Env, seconds: float) -> None:
    """init_process_group over env://, its failures turned into one-line DistributedErrors."""
    where = f"{env.master_addr}:{env.master_port}"
    me = f"rank {env.rank} of {env.world_size}"
    try:
        dist.init_process_group(backend=backend_str, init_method="env://", rank=env.rank,
                                world_size=env.world_size, timeout=timedelta(seconds=seconds))
        return
    except dist.DistStoreError as exc:
        text = _first_line(exc)
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
        text = _first_line(exc)
        if "EADDRINUSE" in text or "address already in use" in text:
            message = (f"MASTER_PORT={env.master_port} on {env.master_addr} is already in use "
                       f"(another job or a stale process holds it); choose a free port")
        else:
            message = (f"{me} could not reach the master at {where} within {seconds:g} s "
                       f"(is rank 0 running, are MASTER_ADDR/MASTER_PORT right?): {text}")
        error = DistributedError(message)
    except (RuntimeError, ValueError, OSError) as exc:
        error = DistributedError(f"{me}: the process group ({backend_str}) could not be formed "
                                 f"at {where} within {seconds:g} s: {_describe_peer_failure(exc)}")
    if dist.is_initialized():
        dist.destroy_process_group()
    raise error


_GLOO_PREFIX_RE = re.compile(r"^\[[^\]]*\.(?:cc|cpp|h):\d+\]\s*")
_GLOO_ADVICE_RE = re.compile(r"\.? This is typically caused by .*$")


def _first_line(exc: BaseException) -> str:
    """The first line of a torch/gloo error without source locations or boilerplate advice."""
    lines = str(exc).strip().splitlines()
    line = _GLOO_PREFIX_RE.sub("", lines[0] if lines else type(exc).__name__)
    return _GLOO_ADVICE_RE.sub("", line)


def _describe_peer_failure(exc: BaseException) -> str:
    text = _first_line(exc)
    if "Timed out" in text or "timed out" in text:
        return f"a peer rank did not take part in time (stalled, crashed or never called it): {text}"
    if "Connection reset" in text or "Connection closed" in text or "closed by peer" in text:
        return f"a peer rank closed its connection (it crashed or exited): {text}"
    return text


_PEER_MARKERS = ("Timed out", "timed out", "Connection reset", "Connection closed",
                 "closed by peer", "Broken pipe", "Connection refused")


def _peer_error(name: str, exc: RuntimeError) -> RuntimeError:
    """A collective's failure: a DistributedError naming rank and cause if a peer is at fault."""
    text = str(exc)
    if not any(m in text for m in _PEER_MARKERS) or isinstance(exc, HalError):
        return exc
    w = _world
    me = f"rank {w.rank} of {w.world_size}" if w else "this rank"
    timeout = f" (timeout {w.timeout_s:g} s)" if w else ""
    return DistributedError(f"{name} failed on {me}{timeout}: {_describe_peer_failure(exc)}")


def _reraise(name: str, exc: RuntimeError) -> NoReturn:
    error = _peer_error(name, exc)
    if error is exc:
        raise exc
    raise error from exc


def shutdown() -> None:
    """Destroy the process group hal created and forget the World; safe to call twice."""
    global _world, _owns_group
    with _lock:
        _last_scatter.clear()  # checked for this world; a new one checks again
        owned, _owns_group, _world = _owns_group, False, None
        if not owned:
            return
        try:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()
        except Exception:  # at exit, a dead peer must not turn cleanup into a traceback
            pass


def _ensure_group(w: World) -> None:
    """Give a world of one a real 1-rank group (in-memory store, no port) for DDP and meshes."""
    global _owns_group
    import torch.distributed as dist

    with _lock:
        if dist.is_initialized():
            return
        store = dist.HashStore()  # type: ignore[attr-defined]
        dist.init_process_group(backend=w.backend, store=store, rank=0,
                                world_size=1, timeout=timedelta(seconds=w.timeout_s))
        _owns_group = True


# -- dtype plans -----------------------------------------------------------------------------

# What gloo (the CPU half of every group) moves and reduces natively, measured on torch 2.13:
# it rejects int16, the unsigned types wider than a byte and every float8 with
# "Invalid scalar type", even for broadcast.  Plans are cached per (op, dtype).
_Plan = tuple[Any, Any]  # (torch ReduceOp, dtype to reduce in, or None for the tensor's own)
_plans: dict[tuple[str, Any], _Plan] = {}
_move_views: dict[Any, Any] = {}
#: [weakref(out), weakref(tensor), op, ReduceOp] of the last reduce_scatter that passed hal's
#: checks in this world (weak: the shortcut must not keep large buffers alive).
_last_scatter: list[Any] = []
_gloo_avg: list[bool] = []


def _native_dtypes() -> frozenset[Any]:
    import torch

    return frozenset({torch.bool, torch.uint8, torch.int8, torch.int32, torch.int64,
                      torch.float16, torch.bfloat16, torch.float32, torch.float64,
                      torch.complex64, torch.complex128})


def _gloo_has_avg() -> bool:
    """gloo reduces with AVG natively since torch 2.8; older ones get SUM then a division."""
    if not _gloo_avg:
        import torch

        major, minor = (int(p) for p in re.findall(r"\d+", torch.__version__)[:2])
        _gloo_avg.append((major, minor) >= (2, 8))
    return _gloo_avg[0]


def _refuse(name: str, op: str, dtype: Any, why: str) -> ConfigError:
    return ConfigError(f"{name}(op={op!r}) cannot reduce {dtype} tensors: {why}")


def reduce_plan(op: str, dtype: torch.dtype, name: str = "all_reduce") -> _Plan:
    """How hal reduces ``dtype`` with ``op``: native, through a wider dtype, or refused."""
    key = (op, dtype)
    plan = _plans.get(key)
    if plan is not None:
        return plan
    import torch
    import torch.distributed as dist

    if op not in OPS:
        raise ConfigError(f"{name}: op={op!r} is not one of {', '.join(OPS)}")
    red = {"sum": dist.ReduceOp.SUM, "avg": dist.ReduceOp.AVG,
           "max": dist.ReduceOp.MAX, "min": dist.ReduceOp.MIN}[op]
    native = dtype in _native_dtypes()
    compute = None
    if dtype == torch.bool:
        if op in ("sum", "avg"):
            raise _refuse(name, op, dtype, "use 'max' for logical any or 'min' for logical all")
    elif dtype.is_complex:
        if op in ("max", "min"):
            raise _refuse(name, op, dtype, "complex numbers have no order; use 'sum' or 'avg'")
        compute = None if native else torch.complex64
    elif dtype.is_floating_point:
        compute = None if native else torch.float32
    else:
        if op == "avg":
            raise _refuse(name, op, dtype, "integer averages round differently on each backend; "
                          "use 'sum' and divide, or a floating dtype")
        if not native:
            wider = {torch.int16: torch.int32, torch.uint16: torch.int32,
                     torch.uint32: torch.int64}.get(dtype)
            if wider is None and dtype == torch.uint64 and op == "sum":
                wider = torch.int64  # same bits, two's-complement sum is exact modulo 2**64
            if wider is None:
                raise _refuse(name, op, dtype, "no wider integer type holds it; accepted integer "
                              "dtypes: uint8, int8, int16, uint16, int32, uint32, int64 "
                              "(uint64 with 'sum' only)")
            compute = wider
    plan = (red, compute)
    _plans[key] = plan
    return plan


def _move_view(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` itself, or a same-size bit view gloo can move when it rejects the dtype."""
    dtype = tensor.dtype
    view = _move_views.get(dtype, False)
    if view is False:
        import torch

        if dtype in _native_dtypes():
            view = None
        else:
            size = dtype.itemsize
            view = {1: torch.uint8, 2: torch.float16, 4: torch.int32, 8: torch.int64}.get(size)
            if view is None:
                raise ConfigError(f"cannot move {dtype} tensors: element size {size} bytes "
                                  "(accepted: 1, 2, 4 or 8 bytes)")
        _move_views[dtype] = view
    return tensor if view is None else tensor.view(view)


def _run(name: str, call: Callable[[], Any]) -> None:
    try:
        call()
    except RuntimeError as exc:
        _reraise(name, exc)


# -- collectives -----------------------------------------------------------------------------


def all_reduce(tensor: torch.Tensor, op: str = "sum") -> torch.Tensor:
    """Reduce ``tensor`` across ranks in place with ``op`` (sum, avg, max, min); returns it."""
    w = _world or init()
    red, compute = _plans.get((op, tensor.dtype)) or reduce_plan(op, tensor.dtype)
    if w.world_size == 1:
        return tensor
    dist = _dist
    if compute is None and (op != "avg" or tensor.device.type != "cpu" or _gloo_has_avg()):
        try:
            dist.all_reduce(tensor, op=red)
        except RuntimeError as exc:
            _reraise("all_reduce", exc)
        return tensor
    work = tensor if compute is None else tensor.to(compute)
    if op == "avg" and (work.device.type != "cpu" or _gloo_has_avg()):
        _run("all_reduce", lambda: dist.all_reduce(work, op=red))
    else:
        _run("all_reduce", lambda: dist.all_reduce(
            work, op=dist.ReduceOp.SUM if op == "avg" else red))
        if op == "avg":
            work.div_(w.world_size)
    if work is not tensor:
        tensor.copy_(work)
    return tensor


def _gather_fn(dist: Any) -> Any:
    return getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor


def _scatter_fn(dist: Any) -> Any:
    return getattr(dist, "reduce_scatter_single", None) or dist.reduce_scatter_tensor


def _scatter_shapes_ok(out: Sequence[int], full: Sequence[int], n: int) -> bool:
    """Is ``out`` one rank's slice of ``full`` along dim 0?  (Sizes only: torch checks the rest.)"""
    return len(full) > 0 and len(out) == len(full) and out[0] * n == full[0] \
        and out[1:] == full[1:]


def _bad_out(name: str, out: torch.Tensor, dtype: torch.dtype, *shapes: tuple[int, ...]) -> None:
    raise ConfigError(f"{name}: out has shape {tuple(out.shape)} and {out.dtype}; expected a "
                      f"contiguous {dtype} tensor of shape {' or '.join(map(str, shapes))}")


def all_gather(tensor: torch.Tensor, *, out: torch.Tensor | None = None) -> torch.Tensor:
    """Every rank's ``tensor`` stacked along a new first dim: ``result[i]`` is rank i's.

    ``out`` may be that stacked shape or torch's concatenated one, ``(world * dim0, ...)``,
    which is handed to torch as it is (the zero-overhead form); ``out`` is returned.
    """
    w = _world or init()
    n = w.world_size
    if out is not None and n > 1:
        # Fast path: torch checks sizes itself, so hand the tensors straight over and only
        # explain a failure afterwards (each extra tensor call right after a collective runs
        # with cold caches and showed up as several percent of a small gloo call).
        try:
            _gather(out, tensor)
            return out
        except (RuntimeError, ValueError, TypeError) as exc:
            if isinstance(exc, RuntimeError) and _peer_error("all_gather", exc) is not exc:
                _reraise("all_gather", exc)
            # a dtype gloo cannot move, a non-contiguous input or a bad out: the path below
    src = tensor.contiguous() if tensor.dim() else tensor.reshape(1)
    if out is None:
        import torch

        flat = torch.empty((n * src.shape[0], *src.shape[1:]), dtype=src.dtype,
                           device=src.device)
        out = flat.view(n, *tensor.shape)
    else:
        # torch's layout goes straight through (torch checks the trailing dims itself)
        if (out.dim() == src.dim() and out.numel() == n * src.numel()
                and out.dtype == src.dtype and out.is_contiguous()):
            flat = out
        else:
            stacked = (n, *tensor.shape)
            if tuple(out.shape) != stacked or out.dtype != src.dtype or not out.is_contiguous():
                _bad_out("all_gather", out, tensor.dtype, stacked,
                         (n * src.shape[0], *src.shape[1:]))
            flat = out.view(n * src.shape[0], *src.shape[1:])
    if n == 1:
        flat.copy_(src)
        return out
    try:
        _gather(_move_view(flat), _move_view(src))
    except RuntimeError as exc:
        _reraise("all_gather", exc)
    return out


def reduce_scatter(tensor: torch.Tensor, op: str = "sum", *,
                   out: torch.Tensor | None = None) -> torch.Tensor:
    """Reduce ``tensor`` across ranks and keep this rank's slice of dim 0 (size dim0 / world)."""
    w = _world or init()
    n = w.world_size
    last = _last_scatter
    if out is not None and last and last[0]() is out and last[1]() is tensor and last[2] == op:
        # the same buffers as the last call that passed the checks (the common loop): skip
        # them, each a cold C++ call right after a collective
        try:
            _scatter(out, tensor, op=last[3])
            return out
        except (RuntimeError, ValueError, TypeError) as exc:
            _last_scatter.clear()  # resized or re-typed in place: check everything again
            if isinstance(exc, RuntimeError) and _peer_error("reduce_scatter", exc) is not exc:
                _reraise("reduce_scatter", exc)
    red, compute = _plans.get((op, tensor.dtype)) or reduce_plan(op, tensor.dtype,
                                                                "reduce_scatter")
    # Fast path, as in all_gather, but with the shape checked first: gloo's own check of a
    # reduce_scatter shape is a fatal-level CHECK, not an ordinary error.
    if (out is not None and n > 1 and compute is None and (op != "avg" or _gloo_has_avg())
            and _scatter_shapes_ok(out.shape, tensor.shape, n)):
        try:
            _scatter(out, tensor, op=red)
            _last_scatter[:] = [weakref.ref(out), weakref.ref(tensor), op, red]
            return out
        except (RuntimeError, ValueError, TypeError) as exc:
            if isinstance(exc, RuntimeError) and _peer_error("reduce_scatter", exc) is not exc:
                _reraise("reduce_scatter", exc)
    shape = tensor.shape
    if not shape or shape[0] % n:
        raise ConfigError(f"reduce_scatter: tensor of shape {tuple(shape)} cannot be split "
                          f"evenly over {n} ranks along dim 0")
    if out is None:
        import torch

        out = torch.empty((shape[0] // n, *shape[1:]), dtype=tensor.dtype, device=tensor.device)
    elif (out.shape[0] * n != shape[0] or out.shape[1:] != shape[1:]
          or len(out.shape) != len(shape) or out.dtype != tensor.dtype
          or not out.is_contiguous()):
        _bad_out("reduce_scatter", out, tensor.dtype, (shape[0] // n, *shape[1:]))
    if n == 1:
        return out.copy_(tensor)
    src = tensor.contiguous()
    emulate_avg = op == "avg" and src.device.type == "cpu" and not _gloo_has_avg()
    if compute is None and not emulate_avg:
        try:
            _scatter(out, src, op=red)
        except RuntimeError as exc:
            _reraise("reduce_scatter", exc)
        return out
    dist = _dist
    work_in = src if compute is None else src.to(compute)
    work_out = out if compute is None else out.to(compute)
    real_op = dist.ReduceOp.SUM if emulate_avg else red
    _run("reduce_scatter", lambda: _scatter(work_out, work_in, op=real_op))
    if emulate_avg:
        work_out.div_(n)
    if work_out is not out:
        out.copy_(work_out)
    return out


def broadcast(tensor: torch.Tensor, src: int = 0) -> torch.Tensor:
    """Overwrite ``tensor`` on every rank with rank ``src``'s, in place; returns it."""
    w = _world or init()
    if not 0 <= src < w.world_size:
        raise ConfigError(f"broadcast: src={src} is not a rank of this world "
                          f"(0..{w.world_size - 1})")
    if w.world_size == 1:
        return tensor
    try:
        _dist.broadcast(_move_view(tensor), src)
    except RuntimeError as exc:
        _reraise("broadcast", exc)
    return tensor


def barrier() -> None:
    """Wait until every rank arrives (bounded by the World's timeout)."""
    w = _world or init()
    if w.world_size == 1:
        return
    import torch.distributed as dist

    _run("barrier", lambda: dist.barrier())


def _peer(name: str, arg: str, peer: int, w: World) -> None:
    if not 0 <= peer < w.world_size or peer == w.rank:
        raise ConfigError(f"{name}: {arg}={peer} is not another rank of this world "
                          f"(rank {w.rank} of {w.world_size})")


def send(tensor: torch.Tensor, dst: int) -> None:
    """Send ``tensor`` to rank ``dst`` (blocks until it is handed over)."""
    w = _world or init()
    _peer("send", "dst", dst, w)
    import torch.distributed as dist

    data = tensor.contiguous()
    _run("send", lambda: dist.send(data, dst))


def recv(tensor: torch.Tensor, src: int) -> torch.Tensor:
    """Receive into ``tensor`` from rank ``src``, in place; returns it."""
    w = _world or init()
    _peer("recv", "src", src, w)
    import torch.distributed as dist

    _run("recv", lambda: dist.recv(tensor, src))
    return tensor


# -- parallel wrappers -----------------------------------------------------------------------


def wrap(model: torch.nn.Module, **ddp_kwargs: Any) -> DistributedDataParallel:
    """``model`` on this rank's device inside DistributedDataParallel (device_ids per backend).

    A world of one gets a real DDP over a 1-rank in-memory group, so ``model.module`` and
    state-dict keys are the same as in a multi-rank run.
    """
    from torch.nn.parallel import DistributedDataParallel

    w = _world or init()
    _ensure_group(w)
    model = model.to(w.device)
    device_ids = None if w.device.type == "cpu" else [w.device.index or 0]
    return DistributedDataParallel(model, device_ids=device_ids, **ddp_kwargs)


def mesh(shape: int | Sequence[int], names: str | Sequence[str] | None = None) -> DeviceMesh:
    """A DeviceMesh of ``shape`` over all ranks on the selected device type (for DTensor/TP)."""
    from torch.distributed.device_mesh import init_device_mesh

    w = _world or init()
    dims = (shape,) if isinstance(shape, int) else tuple(shape)
    dim_names = (names,) if isinstance(names, str) else (None if names is None else tuple(names))
    total = 1
    for d in dims:
        if not isinstance(d, int) or d < 1:
            raise ConfigError(f"mesh: shape {dims} must hold positive integers")
        total *= d
    if total != w.world_size:
        raise ConfigError(f"mesh: shape {dims} holds {total} ranks but the world has "
                          f"{w.world_size}")
    if dim_names is not None and len(dim_names) != len(dims):
        raise ConfigError(f"mesh: {len(dim_names)} names {dim_names} for {len(dims)} dims {dims}")
    _ensure_group(w)
    return init_device_mesh(w.device.type, dims, mesh_dim_names=dim_names)
