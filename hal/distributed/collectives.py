"""The collectives: all_reduce, all_gather, reduce_scatter, broadcast, barrier, send, recv.

Each runs on the default (whole-world) group, follows the dtype plan of ``plans`` and turns a
peer's failure into a one-line DistributedError (``faults``).  A world of one short-circuits
to identities after the same input checks, so a notebook fails where the cluster would.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from hal.distributed.faults import peer_error, reraise
from hal.distributed.plans import PLANS, gloo_has_avg, move_view, reduce_plan
from hal.distributed.state import STATE, World, init
from hal.errors import ConfigError

if TYPE_CHECKING:
    import torch


def _run(w: World, name: str, call: Callable[[], Any]) -> None:
    try:
        call()
    except RuntimeError as exc:
        reraise(name, exc, w)


def all_reduce(tensor: torch.Tensor, op: str = "sum") -> torch.Tensor:
    """Reduce ``tensor`` across ranks in place with ``op`` (sum, avg, max, min); returns it."""
    w = STATE.world or init()
    red, compute = PLANS.get((op, tensor.dtype)) or reduce_plan(op, tensor.dtype)
    if w.world_size == 1:
        return tensor
    dist = STATE.dist
    if compute is None and (op != "avg" or tensor.device.type != "cpu" or gloo_has_avg()):
        try:
            dist.all_reduce(tensor, op=red)
        except RuntimeError as exc:
            reraise("all_reduce", exc, w)
        return tensor
    work = tensor if compute is None else tensor.to(compute)
    if op == "avg" and (work.device.type != "cpu" or gloo_has_avg()):
        _run(w, "all_reduce", lambda: dist.all_reduce(work, op=red))
    else:
        _run(w, "all_reduce", lambda: dist.all_reduce(
            work, op=dist.ReduceOp.SUM if op == "avg" else red))
        if op == "avg":
            work.div_(w.world_size)
    if work is not tensor:
        tensor.copy_(work)
    return tensor


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
    w = STATE.world or init()
    n = w.world_size
    if out is not None and n > 1:
        # Fast path: torch checks sizes itself, so hand the tensors straight over and only
        # explain a failure afterwards (each extra tensor call right after a collective runs
        # with cold caches and showed up as several percent of a small gloo call).
        try:
            STATE.gather(out, tensor)
            return out
        except (RuntimeError, ValueError, TypeError) as exc:
            if isinstance(exc, RuntimeError) and peer_error("all_gather", exc, w) is not exc:
                reraise("all_gather", exc, w)
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
        STATE.gather(move_view(flat), move_view(src))
    except RuntimeError as exc:
        reraise("all_gather", exc, w)
    return out


def reduce_scatter(tensor: torch.Tensor, op: str = "sum", *,
                   out: torch.Tensor | None = None) -> torch.Tensor:
    """Reduce ``tensor`` across ranks and keep this rank's slice of dim 0 (size dim0 / world)."""
    w = STATE.world or init()
    n = w.world_size
    last = STATE.last_scatter
    if out is not None and last and last[0]() is out and last[1]() is tensor and last[2] == op:
        # the same buffers as the last call that passed the checks (the common loop): skip
        # them, each a cold C++ call right after a collective
        try:
            STATE.scatter(out, tensor, op=last[3])
            return out
        except (RuntimeError, ValueError, TypeError) as exc:
            STATE.last_scatter.clear()  # resized or re-typed in place: check everything again
            if isinstance(exc, RuntimeError) and peer_error("reduce_scatter", exc, w) is not exc:
                reraise("reduce_scatter", exc, w)
    red, compute = PLANS.get((op, tensor.dtype)) or reduce_plan(op, tensor.dtype,
                                                                "reduce_scatter")
    # Fast path, as in all_gather, but with the shape checked first: gloo's own check of a
    # reduce_scatter shape is a fatal-level CHECK, not an ordinary error.
    if (out is not None and n > 1 and compute is None and (op != "avg" or gloo_has_avg())
            and _scatter_shapes_ok(out.shape, tensor.shape, n)):
        try:
            STATE.scatter(out, tensor, op=red)
            STATE.last_scatter[:] = [weakref.ref(out), weakref.ref(tensor), op, red]
            return out
        except (RuntimeError, ValueError, TypeError) as exc:
            if isinstance(exc, RuntimeError) and peer_error("reduce_scatter", exc, w) is not exc:
                reraise("reduce_scatter", exc, w)
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
    emulate_avg = op == "avg" and src.device.type == "cpu" and not gloo_has_avg()
    if compute is None and not emulate_avg:
        try:
            STATE.scatter(out, src, op=red)
        except RuntimeError as exc:
            reraise("reduce_scatter", exc, w)
        return out
    dist = STATE.dist
    work_in = src if compute is None else src.to(compute)
    work_out = out if compute is None else out.to(compute)
    real_op = dist.ReduceOp.SUM if emulate_avg else red
    _run(w, "reduce_scatter", lambda: STATE.scatter(work_out, work_in, op=real_op))
    if emulate_avg:
        work_out.div_(n)
    if work_out is not out:
        out.copy_(work_out)
    return out


def broadcast(tensor: torch.Tensor, src: int = 0) -> torch.Tensor:
    """Overwrite ``tensor`` on every rank with rank ``src``'s, in place; returns it."""
    w = STATE.world or init()
    if not 0 <= src < w.world_size:
        raise ConfigError(f"broadcast: src={src} is not a rank of this world "
                          f"(0..{w.world_size - 1})")
    if w.world_size == 1:
        return tensor
    try:
        STATE.dist.broadcast(move_view(tensor), src)
    except RuntimeError as exc:
        reraise("broadcast", exc, w)
    return tensor


def barrier() -> None:
    """Wait until every rank arrives (bounded by the World's timeout)."""
    w = STATE.world or init()
    if w.world_size == 1:
        return
    import torch.distributed as dist

    _run(w, "barrier", lambda: dist.barrier())


def _peer(name: str, arg: str, peer: int, w: World) -> None:
    if not 0 <= peer < w.world_size or peer == w.rank:
        raise ConfigError(f"{name}: {arg}={peer} is not another rank of this world "
                          f"(rank {w.rank} of {w.world_size})")


def send(tensor: torch.Tensor, dst: int) -> None:
    """Send ``tensor`` to rank ``dst`` (blocks until it is handed over)."""
    w = STATE.world or init()
    _peer("send", "dst", dst, w)
    import torch.distributed as dist

    data = tensor.contiguous()
    _run(w, "send", lambda: dist.send(data, dst))


def recv(tensor: torch.Tensor, src: int) -> torch.Tensor:
    """Receive into ``tensor`` from rank ``src``, in place; returns it."""
    w = STATE.world or init()
    _peer("recv", "src", src, w)
    import torch.distributed as dist

    _run(w, "recv", lambda: dist.recv(tensor, src))
    return tensor
