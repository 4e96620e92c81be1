"""Bench: a CUDA-only training/inference loop under the cuda-compat mode against the same loop
written with hal.get_device() and hal.autocast().

Goal (issue 23): the mapped loop runs at >= 0.98 of the hal-native one (ratio = native time /
mapped time, so 1.0 means free).  The two alternate in one process, round by round (the mode is
enabled for the mapped rounds only), and each figure is the median of its rounds, so load on a
shared machine lands on both.  Prints one line per workload and the ratio.

    python bench/bench_cuda_compat.py [--rounds N] [--steps N]
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn as nn

import hal
from hal import cuda_compat


def mlp(width: int) -> nn.Module:
    return nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width),
                         nn.GELU(), nn.Linear(width, 10))


# -- the same loop twice: as CUDA-only code writes it, and as hal-native code writes it -----------

def cuda_train(model: nn.Module, opt: Any, x: torch.Tensor, y: torch.Tensor, steps: int) -> None:
    """CUDA-only: "cuda" strings, .cuda(), torch.cuda.amp, torch.cuda.synchronize."""
    for _ in range(steps):
        xb, yb = x.to("cuda", non_blocking=True), y.cuda()
        opt.zero_grad(set_to_none=True)
        with torch.cuda.amp.autocast():
            loss = nn.functional.cross_entropy(model(xb).float(), yb)
        loss.backward()
        opt.step()
    torch.cuda.synchronize()


def hal_train(model: nn.Module, opt: Any, x: torch.Tensor, y: torch.Tensor, steps: int) -> None:
    """hal-native: hal.get_device(), hal.autocast(), the backend's synchronize."""
    device = hal.get_device()
    for _ in range(steps):
        xb, yb = x.to(device, non_blocking=True), y.to(device)
        opt.zero_grad(set_to_none=True)
        with hal.autocast():
            loss = nn.functional.cross_entropy(model(xb).float(), yb)
        loss.backward()
        opt.step()
    hal.get_backend().synchronize()


def cuda_infer(model: nn.Module, x: torch.Tensor, steps: int) -> None:
    with torch.no_grad():
        for _ in range(steps):
            model(torch.empty_like(x, device="cuda").copy_(x))
    torch.cuda.synchronize()


def hal_infer(model: nn.Module, x: torch.Tensor, steps: int) -> None:
    device = hal.get_device()
    with torch.no_grad():
        for _ in range(steps):
            model(torch.empty_like(x, device=device).copy_(x))
    hal.get_backend().synchronize()


def timed(fn: Callable[[], None], mapped: bool) -> float:
    if mapped:
        cuda_compat.enable(quiet=True)
    gc.collect()  # enable()/disable() make garbage: collect it outside the timed part, both ways
    try:
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start
    finally:
        if mapped:
            cuda_compat.disable()


def compare(name: str, native: Callable[[], None], mapped: Callable[[], None],
            rounds: int) -> float:
    timed(native, False)
    timed(mapped, True)  # warm-up of both paths
    t_native, t_mapped = [], []
    for i in range(rounds):
        order = [(native, False, t_native), (mapped, True, t_mapped)]
        for fn, on, out in order if i % 2 == 0 else order[::-1]:
            out.append(timed(fn, on))
    n, m = statistics.median(t_native), statistics.median(t_mapped)
    ratio = n / m
    print(f"{name}: hal-native {n * 1e3:.1f} ms, cuda-compat {m * 1e3:.1f} ms; "
          f"ratio {ratio:.3f} (goal >= 0.98)")
    return ratio


def main(argv: list[str] | None = None) -> None:
    """Measure and print each workload's ratio."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    print(f"device: {hal.get_device()} ({hal.select().backend.name}); "
          f"precision: {hal.precision.policy().name}; torch {torch.__version__}; "
          f"threads {torch.get_num_threads()}")
    for width, batch in ((128, 32), (512, 64)):
        model = mlp(width)
        opt = torch.optim.SGD(model.parameters(), lr=1e-3)
        x, y = torch.randn(batch, width), torch.randint(0, 10, (batch,))
        compare(f"train mlp width {width} batch {batch} x{args.steps} steps",
                lambda m=model, o=opt, x=x, y=y: hal_train(m, o, x, y, args.steps),
                lambda m=model, o=opt, x=x, y=y: cuda_train(m, o, x, y, args.steps), args.rounds)
    layer = nn.TransformerEncoderLayer(256, 4, 1024, batch_first=True).eval()
    tokens = torch.randn(8, 64, 256)
    compare(f"infer transformer layer 8x64x256 x{args.steps} steps",
            lambda: hal_infer(layer, tokens, args.steps),
            lambda: cuda_infer(layer, tokens, args.steps), args.rounds)


if __name__ == "__main__":
    main()
