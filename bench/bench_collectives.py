"""hal.distributed collectives against torch.distributed called directly: 2 ranks, gloo, 127.0.0.1.

    python bench/bench_collectives.py [--rounds 7] [--max-mib 64]

For each collective and size (1 KiB to 64 MiB) both are timed in alternating rounds in the
same processes on the same tensors; the printed ratio is hal's best round over torch's best
(1.00 = no overhead; the goal is within 2 %).  Each round's time is the slower rank's; the best
round is the one least disturbed by other work on the machine.  The last line is hal's own
cost per call with the collective replaced by a no-op, which no machine load can blur.
"""

from __future__ import annotations

import argparse
import os
import socket
import time
from collections.abc import Callable

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from hal import distributed as hd

TARGET_S = 0.02  # seconds each timed block should last, so small sizes repeat many times


def _time(fn: Callable[[], object], iters: int) -> float:
    dist.barrier()
    start = time.perf_counter()
    for _ in range(iters):
        fn()
    elapsed = torch.tensor([time.perf_counter() - start], dtype=torch.float64)
    dist.all_reduce(elapsed, op=dist.ReduceOp.MAX)  # the slower rank decides
    return float(elapsed.item()) / iters


def _cases(nbytes: int, n: int) -> dict[str, tuple[Callable[[], object], Callable[[], object]]]:
    numel = nbytes // 4
    t = torch.ones(numel)
    gathered = torch.empty(n, numel)
    flat = gathered.view(-1)
    scatter_in = torch.ones(numel)
    scatter_out = torch.empty(numel // n)
    gather_single = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
    scatter_single = getattr(dist, "reduce_scatter_single", None) or dist.reduce_scatter_tensor
    return {
        "all_reduce": (lambda: dist.all_reduce(t), lambda: hd.all_reduce(t)),
        "all_gather": (lambda: gather_single(flat, t), lambda: hd.all_gather(t, out=flat)),
        "broadcast": (lambda: dist.broadcast(t, 0), lambda: hd.broadcast(t, 0)),
        "reduce_scatter": (lambda: scatter_single(scatter_out, scatter_in),
                           lambda: hd.reduce_scatter(scatter_in, out=scatter_out)),
    }


def _worker(rank: int, port: int, sizes: list[int], rounds: int) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2",
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), HAL_DEVICE="cpu")
    torch.set_num_threads(1)
    world = hd.init(timeout=300)
    if world.is_main:
        print(f"hal vs torch.distributed, {world.world_size} ranks, backend {world.backend}, "
              f"torch {torch.__version__}; best of {rounds} alternating rounds; "
              f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
        print("cells: hal time / torch time (torch's time per call)")
        print(f"{'size':>9} " + " ".join(f"{name:>15}" for name in _cases(1024, 2)))
    worst = 0.0
    for nbytes in sizes:
        cells = []
        for _name, (plain, ours) in _cases(nbytes, world.world_size).items():
            plain(), ours()  # warm up both paths
            once = _time(plain, 1)
            iters = max(1, min(2000, int(TARGET_S / max(once, 1e-7))))
            t_plain, t_hal = [], []
            for _ in range(rounds):
                t_plain.append(_time(plain, iters))
                t_hal.append(_time(ours, iters))
            ratio = min(t_hal) / min(t_plain)
            worst = max(worst, ratio)
            cells.append(f"{ratio:6.3f} ({min(t_plain) * 1e6:6.0f}us)")
        if world.is_main:
            label = f"{nbytes >> 20} MiB" if nbytes >= 1 << 20 else f"{nbytes >> 10} KiB"
            print(f"{label:>9} " + " ".join(f"{c:>15}" for c in cells), flush=True)
    if world.is_main:
        print(f"worst ratio: {worst:.3f} (goal: <= 1.02; on a shared machine these ratios carry "
              "the load's noise)")
        _layer_overhead()
    hd.shutdown()


def _layer_overhead() -> None:
    """hal's own cost per call, load-independent: collectives swapped for no-ops, both paths."""
    import types

    def noop(*args: object, **kwargs: object) -> None:
        return None

    null = types.SimpleNamespace(all_reduce=noop, broadcast=noop, all_gather_single=noop,
                                 reduce_scatter_single=noop, ReduceOp=dist.ReduceOp)
    saved = hd._dist, hd._gather, hd._scatter
    hd._dist, hd._gather, hd._scatter = null, noop, noop
    t = torch.ones(256)
    gathered = torch.empty(2, 256)
    flat = gathered.view(-1)
    out = torch.empty(128)
    calls = {"all_reduce": lambda: hd.all_reduce(t),
             "all_gather (torch's layout)": lambda: hd.all_gather(t, out=flat),
             "all_gather (stacked)": lambda: hd.all_gather(t, out=gathered),
             "broadcast": lambda: hd.broadcast(t, 0),
             "reduce_scatter": lambda: hd.reduce_scatter(t, out=out)}
    n = 20000
    try:
        parts = []
        for name, fn in calls.items():
            best = float("inf")
            for _ in range(5):
                start = time.perf_counter()
                for _ in range(n):
                    fn()
                mid = time.perf_counter()
                for _ in range(n):
                    noop(t, 0)
                best = min(best, (mid - start) - (time.perf_counter() - mid))
            parts.append(f"{name} {best / n * 1e6:.2f}us")
    finally:
        hd._dist, hd._gather, hd._scatter = saved
    print("hal layer cost per call (collective replaced by a no-op): " + ", ".join(parts))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--max-mib", type=int, default=64)
    args = parser.parse_args()
    sizes = []
    size = 1024
    while size <= args.max_mib << 20:
        sizes.append(size)
        size *= 4
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_worker, args=(port, sizes, args.rounds), nprocs=2)


if __name__ == "__main__":
    main()
