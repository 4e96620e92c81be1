"""Every hal collective on every dtype, checked against values computed locally; run per rank.

Run under torchrun/``hal run`` (``python checks.py``) or through spawn.py; each rank prints one
``HALCHECK {json}`` line with the number of checks passed and the failures, so one launch of
many processes covers everything (each process pays the torch import once).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

import torch

import hal
from hal import distributed as hd
from hal.distributed import plans

DTYPES = [
    torch.bool, torch.uint8, torch.int8, torch.int16, torch.uint16, torch.int32, torch.uint32,
    torch.int64, torch.uint64, torch.float16, torch.bfloat16, torch.float32, torch.float64,
    torch.complex64, torch.complex128, torch.float8_e4m3fn, torch.float8_e5m2,
]


def value(rank: int, dtype: torch.dtype, width: int = 3) -> torch.Tensor:
    """Rank ``rank``'s input: small integers every dtype holds exactly."""
    if dtype == torch.bool:
        return torch.tensor([rank == 0, True, False] * (width // 3 or 1))[:width]
    base = torch.tensor([rank + 1, 2 * rank + 1, 3] * (width // 3 or 1), dtype=torch.float64)
    return base[:width].to(dtype)


def expected(op: str, dtype: torch.dtype, n: int, width: int = 3) -> torch.Tensor:
    """The reduction of every rank's ``value`` computed in float64 (or complex128) here."""
    wide = torch.complex128 if dtype.is_complex else torch.float64
    stack = torch.stack([value(r, dtype, width).to(wide) for r in range(n)])
    if op == "sum":
        out = stack.sum(0)
    elif op == "avg":
        out = stack.sum(0) / n
    elif op == "max":
        out = stack.real.max(0).values.to(wide)
    else:
        out = stack.real.min(0).values.to(wide)
    return out.to(dtype)


class Checker:
    """Counts passed checks and records failures with a name."""

    def __init__(self) -> None:
        self.passed = 0
        self.refused = 0
        self.failures: list[str] = []

    def check(self, name: str, fn: Callable[[], Any]) -> None:
        try:
            ok = fn()
        except Exception as exc:
            self.failures.append(f"{name}: raised {type(exc).__name__}: {exc}")
            return
        if ok is True:
            self.passed += 1
        else:
            self.failures.append(f"{name}: {ok}")


def same(got: torch.Tensor, want: torch.Tensor) -> bool | str:
    if got.dtype != want.dtype or got.shape != want.shape:
        return f"got {got.dtype} {tuple(got.shape)}, want {want.dtype} {tuple(want.shape)}"
    if torch.equal(got.view(torch.uint8), want.view(torch.uint8)) if got.dtype.itemsize == 1 \
            else torch.equal(got, want):
        return True
    return f"got {got.tolist()}, want {want.tolist()}"


def run_checks(world: hd.World) -> Checker:
    """All collectives, dtypes and wrappers for this rank; every rank must call it alike."""
    c = Checker()
    n, rank = world.world_size, world.rank

    for dtype in DTYPES:
        for op in hd.OPS:
            try:
                hd.reduce_plan(op, dtype)
            except hal.ConfigError:
                c.refused += 1  # refused identically on every rank, before any communication
                continue
            t = value(rank, dtype)
            c.check(f"all_reduce {op} {dtype}",
                    lambda t=t, op=op, dtype=dtype: same(hd.all_reduce(t, op),
                                                          expected(op, dtype, n)))
        c.check(f"all_gather {dtype}", lambda dtype=dtype: same(
            hd.all_gather(value(rank, dtype)), torch.stack([value(r, dtype) for r in range(n)])))
        # out= takes the fast path (straight to torch); dtypes gloo cannot move fall back to
        # views, and both of torch's layouts are accepted
        want_stacked = torch.stack([value(r, dtype) for r in range(n)])
        c.check(f"all_gather out=stacked {dtype}", lambda dtype=dtype, w=want_stacked: same(
            hd.all_gather(value(rank, dtype), out=torch.empty(n, 3, dtype=dtype)), w))
        c.check(f"all_gather out=flat {dtype}", lambda dtype=dtype, w=want_stacked: same(
            hd.all_gather(value(rank, dtype), out=torch.empty(n * 3, dtype=dtype)),
            w.reshape(-1)))
        c.check(f"broadcast {dtype}", lambda dtype=dtype: same(
            hd.broadcast(value(rank, dtype), src=n - 1), value(n - 1, dtype)))
        for op in ("sum", "max", "avg"):
            try:
                hd.reduce_plan(op, dtype, "reduce_scatter")
            except hal.ConfigError:
                continue
            full = value(rank, dtype, 3 * n)
            want = expected(op, dtype, n, 3 * n)[3 * rank: 3 * rank + 3]
            c.check(f"reduce_scatter {op} {dtype}", lambda full=full, op=op, want=want: same(
                hd.reduce_scatter(full, op), want))
            c.check(f"reduce_scatter out= {op} {dtype}",
                    lambda full=full, op=op, want=want, dtype=dtype: same(
                        hd.reduce_scatter(full, op, out=torch.empty(3, dtype=dtype)), want))

        # point to point around a ring; even ranks send first so blocking calls cannot deadlock
        def ring(dtype: torch.dtype = dtype) -> bool | str:
            got = torch.zeros(3, dtype=dtype)
            if rank % 2 == 0:
                hd.send(value(rank, dtype), (rank + 1) % n)
                hd.recv(got, (rank - 1) % n)
            else:
                hd.recv(got, (rank - 1) % n)
                hd.send(value(rank, dtype), (rank + 1) % n)
            return same(got, value((rank - 1) % n, dtype))

        c.check(f"send/recv {dtype}", ring)

    c.check("all_reduce 0-d", lambda: same(hd.all_reduce(torch.tensor(float(rank))),
                                           torch.tensor(float(sum(range(n))))))
    c.check("all_gather non-contiguous", lambda: same(
        hd.all_gather(torch.arange(6.0).view(2, 3).t() + rank),
        torch.stack([torch.arange(6.0).view(2, 3).t() + r for r in range(n)])))
    c.check("all_gather out= non-contiguous input", lambda: same(
        hd.all_gather(torch.arange(6.0).view(2, 3).t() + rank, out=torch.empty(n, 3, 2)),
        torch.stack([torch.arange(6.0).view(2, 3).t() + r for r in range(n)])))
    c.check("all_gather bad out is a ConfigError on every rank", lambda: _bad_out(n))
    c.check("all_reduce avg cpu emulation", lambda: _emulated_avg(rank, n))
    c.check("all_reduce returns its argument", lambda: (lambda t: hd.all_reduce(t) is t)(
        torch.ones(2)))
    c.check("barrier", lambda: hd.barrier() is None)
    c.check("ddp", lambda: _ddp(rank, n))
    c.check("mesh + dtensor", lambda: _mesh(rank, n))
    return c


def _bad_out(n: int) -> bool | str:
    """A wrong out fails alike on every rank, before any communication, with hal's message."""
    for name, call in (("all_gather", lambda: hd.all_gather(torch.ones(3),
                                                            out=torch.empty(n + 1, 3))),
                       ("reduce_scatter", lambda: hd.reduce_scatter(torch.ones(3 * n),
                                                                    out=torch.empty(4)))):
        try:
            call()
        except hal.ConfigError as exc:
            if f"{name}: out has shape" not in str(exc):
                return f"{name}: unexpected message {exc}"
            continue
        return f"{name}: a wrong out was accepted"
    return True


def _emulated_avg(rank: int, n: int) -> bool | str:
    """The SUM-then-divide path used where gloo lacks AVG (torch < 2.8), forced on."""
    saved = list(plans.GLOO_AVG)
    plans.GLOO_AVG[:] = [False]
    try:
        got = hd.all_reduce(torch.full((4,), float(rank)), "avg")
        scattered = hd.reduce_scatter(torch.full((2 * n,), float(rank)), "avg")
    finally:
        plans.GLOO_AVG[:] = saved
    mean = sum(range(n)) / n
    ok = same(got, torch.full((4,), mean))
    return ok if ok is not True else same(scattered, torch.full((2,), mean))


def _ddp(rank: int, n: int) -> bool | str:
    torch.manual_seed(0)
    model = hd.wrap(torch.nn.Linear(3, 1, bias=False))
    x = torch.full((2, 3), float(rank + 1))
    model(x).sum().backward()
    grad = model.module.weight.grad
    assert grad is not None
    # DDP averages gradients: d/dw sum(x @ w) = column sums of x = 2 * (rank + 1), averaged.
    want = torch.full((1, 3), 2.0 * sum(r + 1 for r in range(n)) / n)
    return same(grad, want)


def _mesh(rank: int, n: int) -> bool | str:
    from torch.distributed.tensor import Shard, distribute_tensor

    m = hd.mesh((n,), ("dp",))
    if m.size() != n or m.mesh_dim_names != ("dp",):
        return f"mesh {m} has size {m.size()} names {m.mesh_dim_names}"
    if n % 2 == 0 and n > 2:
        m2 = hd.mesh((2, n // 2), ("dp", "tp"))
        if m2["tp"].size() != n // 2:
            return f"2-d mesh {m2} tp size {m2['tp'].size()}"
    full = torch.arange(2.0 * n)
    dt = distribute_tensor(full, m, [Shard(0)])
    ok = same(dt.to_local(), full[2 * rank: 2 * rank + 2])
    return ok if ok is not True else same(dt.full_tensor(), full)


def report(world: hd.World, c: Checker) -> str:
    """The HALCHECK line this rank prints."""
    return "HALCHECK " + json.dumps({
        "rank": world.rank, "world_size": world.world_size, "local_rank": world.local_rank,
        "backend": world.backend, "device": str(world.device), "passed": c.passed,
        "refused": c.refused, "failures": c.failures,
    })


def main() -> int:
    world = hd.init(timeout=60)
    c = run_checks(world)
    print(report(world, c), flush=True)
    hd.shutdown()
    return 1 if c.failures else 0


if __name__ == "__main__":
    sys.exit(main())
