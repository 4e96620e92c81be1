"""bf16 vs fp32 on this CPU (matmul, small transformer) and hal.autocast vs torch.autocast.

Run: python bench/bench_precision.py.  Prints times and ratios measured in this run; the CPU
precision policy (hal.precision.policy) follows the same kind of measurement.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

import torch

import hal


def best_of(fn: Callable[[], object], repeats: int = 7, inner: int = 3) -> float:
    """Best mean seconds per call over ``repeats`` rounds of ``inner`` calls (after a warm-up)."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(inner):
            fn()
        best = min(best, (time.perf_counter() - start) / inner)
    return best


def interleaved(fns: Mapping[str, Callable[[], object]], rounds: int = 7,
                inner: int = 3) -> dict[str, float]:
    """Best time of each function, measured in alternation so background load hits all alike."""
    for fn in fns.values():
        fn()
    best = dict.fromkeys(fns, float("inf"))
    names = list(fns)
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:  # no fixed order bias
            fn = fns[name]
            start = time.perf_counter()
            for _ in range(inner):
                fn()
            best[name] = min(best[name], (time.perf_counter() - start) / inner)
    return best


def matmul() -> None:
    print("matmul (square, this CPU):")
    for n in (256, 512, 1024):
        a = torch.randn(n, n)
        fns = {name: (lambda m: lambda: m @ m)(a.to(dtype)) for name, dtype in
               (("fp32", torch.float32), ("bf16", torch.bfloat16), ("fp16", torch.float16))}
        t = interleaved(fns, rounds=7, inner=2)
        print(f"  n={n:5d}  fp32 {t['fp32'] * 1e3:8.2f} ms  bf16 {t['bf16'] * 1e3:8.2f} ms  "
              f"fp16 {t['fp16'] * 1e3:8.2f} ms  speedup bf16 {t['fp32'] / t['bf16']:.2f}x  "
              f"fp16 {t['fp32'] / t['fp16']:.2f}x")


def transformer() -> None:
    torch.manual_seed(0)
    layer = torch.nn.TransformerEncoderLayer(256, 4, 1024, batch_first=True)
    model = torch.nn.TransformerEncoder(layer, 2, enable_nested_tensor=False).eval()
    x = torch.randn(8, 64, 256)

    def fp32() -> None:
        model(x)

    def torch_bf16() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            model(x)

    def hal_bf16() -> None:
        with hal.autocast(torch.bfloat16):
            model(x)

    with torch.inference_mode():
        t = interleaved({"fp32": fp32, "torch": torch_bf16, "hal": hal_bf16}, rounds=25)
    print("small transformer forward (2 layers, d=256, batch 8 x 64 tokens):")
    print(f"  fp32 {t['fp32'] * 1e3:.2f} ms  autocast bf16 {t['torch'] * 1e3:.2f} ms  "
          f"speedup bf16 {t['fp32'] / t['torch']:.2f}x")
    print(f"  hal.autocast / torch.autocast (forward, best of 25 alternating rounds): "
          f"{t['hal'] / t['torch']:.3f} (goal <= 1.02)")


def autocast_entry() -> None:
    n = 2000

    def torch_ctx() -> None:
        for _ in range(n):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                pass

    def hal_ctx() -> None:
        for _ in range(n):
            with hal.autocast():
                pass

    t = interleaved({"torch": torch_ctx, "hal": hal_ctx}, rounds=5, inner=1)
    print(f"autocast context entry+exit alone: torch {t['torch'] / n * 1e6:.2f} us, "
          f"hal {t['hal'] / n * 1e6:.2f} us (ratio {t['hal'] / t['torch']:.2f}; the policy "
          "is cached, the difference is a few dict lookups)")


def dtype_names() -> None:
    """hal.dtypes.parse against the dict lookup it replaced (precision's old _ALIASES)."""
    from hal import dtypes

    old = {"bf16": "bf16", "bfloat16": "bf16", "fp16": "fp16", "half": "fp16", "fp32": "fp32"}
    names = ["bf16", "BFloat16", "torch.float16", "float8_e4m3fnuz", "half"] * 200

    def registry() -> None:
        for name in names:
            dtypes.parse(name)

    def table() -> None:
        for name in names:
            old.get(name.strip().lower())

    t = interleaved({"registry": registry, "table": table}, rounds=5, inner=3)
    per = t["registry"] / len(names) * 1e6
    print(f"dtype name parse: hal.dtypes.parse {per:.2f} us/name, {t['registry'] / t['table']:.1f}x "
          "a bare dict lookup (parsed once per policy/flag, never per tensor)")


def bench_sweep(threads: int) -> None:
    """`hal bench`'s matmul sweep on this CPU: each size's rate as a share of the best."""
    from hal.commands import bench

    torch.set_num_threads(threads)
    try:
        start = time.perf_counter()
        data = bench.measure(["fp32", "bf16"])
        wall = time.perf_counter() - start
    finally:
        torch.set_num_threads(1)
    print(f"hal bench sweep ({threads} threads, {bench.BUDGET_S} s a size; whole measure() "
          f"{wall:.1f} s):")
    for row in data["matmul"]:
        best = row["tflops"] or 0.0
        shares = ", ".join(f"{s['n']}: {s['tflops'] / best:.2f}" for s in row["sizes"])
        print(f"  {row['dtype']}: best {best:.3f} TFLOPS at {row['n']}; rate / best by size: "
              f"{shares}")


def main() -> None:
    torch.set_grad_enabled(False)
    default_threads = torch.get_num_threads()
    # One thread: on a shared, busy machine OpenMP contention swamps the dtype's effect.
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"cpu capability {torch.backends.cpu.get_cpu_capability()}")
    matmul()
    transformer()
    autocast_entry()
    dtype_names()
    bench_sweep(default_threads)
    pol = hal.precision.policy()
    print(f"hal.precision.policy(): {pol.name} (scaler: {pol.needs_scaler}) - {pol.reason}")


if __name__ == "__main__":
    main()
