"""Reference engine: tokens/s through hal against the same model in plain torch (same dtype, same
device), and the dtype hal's precision policy chose against fp32 on this machine.

    python bench/bench_engine.py [--prompts 8] [--new-tokens 64] [--pairs 21] [--threads 1]

Runs come in pairs, one through hal (Engine.generate_ids) and one in plain torch, the order
swapping from pair to pair, so a busy neighbour and thermal drift fall on both alike.  The ratio
is the median of the per-pair ratios of tokens/s (hal / plain), with their interquartile range,
so noise shows as a wide range rather than as a cost.  Goal: hal within 1 % (ratio >= 0.99).
One torch thread by default: on a small shared host more threads contend with the neighbours and
widen the range several-fold.  The last lines time hal's fixed cost per generate_ids call, part
by part, against a run's length.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))

from engine import ByteTokenizer, Engine, Sampling, build_default, generate_batch

import hal

PROMPTS = ["The quick brown fox", "hal", "Once upon a time, in a land far away,", "a",
           "def fibonacci(n):", "Hello, world", "0123456789", "lorem ipsum dolor sit amet"]


def plain_torch(model: torch.nn.Module, ids: list[list[int]], new: int, dtype: torch.dtype,
                device: torch.device) -> tuple[int, float]:
    """The same model and loop with no hal in the path: torch.autocast and one batch."""
    amp = (torch.autocast(device_type=device.type, dtype=dtype) if dtype != torch.float32
           else torch.autocast(device.type, enabled=False))
    if device.type != "cpu":
        torch.accelerator.synchronize()
    start = time.perf_counter()
    with amp:
        out = generate_batch(model, ids, new, Sampling(), pad_id=256, eos_id=258)  # type: ignore[arg-type]
    if device.type != "cpu":
        torch.accelerator.synchronize()
    return sum(len(o) for o in out), time.perf_counter() - start


def quartiles(values: list[float]) -> tuple[float, float, float]:
    """(lower quartile, median, upper quartile)."""
    q1, q2, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, q2, q3


def compare(dtype: torch.dtype | None, ids: list[list[int]], new: int,
            pairs: int) -> tuple[Engine, list[float], list[float], list[float], list[float]]:
    """For one dtype (None: the policy's): the engine, then per pair the ratio hal/plain of
    tokens/s as the engine reports it, of whole generate_ids calls, and both tokens/s."""
    engine = Engine(build_default(0), ByteTokenizer(), dtype=dtype, max_batch=len(ids))
    plain_model = build_default(0).to(device=engine.device, dtype=engine.dtype).eval()
    for _ in range(2):  # warm up both
        engine.generate_ids(ids, new)
        plain_torch(plain_model, ids, new, engine.dtype, engine.device)
    ratios, call_ratios, hal_tps, plain_tps = [], [], [], []
    for k in range(pairs):
        if k % 2:
            n, s = plain_torch(plain_model, ids, new, engine.dtype, engine.device)
        start = time.perf_counter()
        r = engine.generate_ids(ids, new)
        whole = time.perf_counter() - start
        if not k % 2:
            n, s = plain_torch(plain_model, ids, new, engine.dtype, engine.device)
        if r.new_tokens != n:
            raise SystemExit(f"hal made {r.new_tokens} tokens, plain torch {n}: not the same work")
        ratios.append(r.tokens_per_second / (n / s))
        call_ratios.append(s / whole)
        hal_tps.append(r.tokens_per_second)
        plain_tps.append(n / s)
    return engine, ratios, call_ratios, hal_tps, plain_tps


def per_call_us(fn: Callable[[], object], n: int = 300) -> float:
    """Median microseconds per call of ``fn`` over 7 rounds of ``n``."""
    fn()
    rounds = []
    for _ in range(7):
        start = time.perf_counter()
        for _ in range(n):
            fn()
        rounds.append((time.perf_counter() - start) / n)
    return statistics.median(rounds) * 1e6


def fixed_costs(engine: Engine, ids: list[list[int]]) -> dict[str, float]:
    """Microseconds hal adds to one generate_ids call, part by part, beyond the model's work."""

    def tracked() -> None:
        with hal.memory.track(collect=False):
            pass

    def autocast() -> None:
        with hal.autocast(engine.dtype):
            pass

    def plain_autocast() -> None:
        dtype = engine.dtype
        with (torch.autocast(engine.device.type, dtype=dtype) if dtype != torch.float32
              else torch.autocast(engine.device.type, enabled=False)):
            pass

    def batcher() -> None:
        b = hal.batching.AdaptiveBatcher(lambda batch: list(batch), start=len(ids), min=1,
                                         max=engine.max_batch)
        list(b.map(ids))

    return {
        "memory.track() enter+exit": per_call_us(tracked),
        "plan() (memory.info)": per_call_us(lambda: engine.plan(len(ids), 64)),
        "AdaptiveBatcher + map": per_call_us(batcher),
        "hal.autocast (torch.autocast alone: "
        f"{per_call_us(plain_autocast):.0f} us)": per_call_us(autocast),
        "backend().synchronize()": per_call_us(lambda: hal.get_backend().synchronize()),
    }


def decode_arguments(doc: str, *, new_tokens: int, pairs: int) -> argparse.Namespace:
    """The flags every paired decode bench takes (bench_engine, bench_chat); sets torch's threads."""
    p = argparse.ArgumentParser(description=doc.split("\n")[0])
    p.add_argument("--prompts", type=int, default=8)
    p.add_argument("--new-tokens", type=int, default=new_tokens)
    p.add_argument("--pairs", type=int, default=pairs)
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (0: torch's default); one keeps a shared 2-core host quiet")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    return args


def main() -> int:
    args = decode_arguments(__doc__ or "", new_tokens=64, pairs=21)
    tok = ByteTokenizer()
    ids = [tok.encode(PROMPTS[i % len(PROMPTS)]) for i in range(args.prompts)]

    engine, ratios, call_ratios, hal_tps, plain_tps = compare(None, ids, args.new_tokens,
                                                              args.pairs)
    q1, med, q3 = quartiles(ratios)
    c1, cmed, c3 = quartiles(call_ratios)
    print(f"device {engine.device}, {torch.get_num_threads()} thread(s), {args.prompts} prompts "
          f"x {args.new_tokens} new tokens, {args.pairs} alternating pairs")
    print(f"policy dtype: {engine.dtype} ({engine.dtype_reason})")
    print(f"engine via hal   : {statistics.median(hal_tps):9.1f} tokens/s (median)")
    print(f"plain torch      : {statistics.median(plain_tps):9.1f} tokens/s (median)")
    print(f"hal / plain      : {med:9.3f}  [IQR {q1:.3f}-{q3:.3f}] median of per-pair ratios, "
          "the engine's own tokens/s (goal >= 0.99)")
    print(f"whole call       : {cmed:9.3f}  [IQR {c1:.3f}-{c3:.3f}] generate_ids timed from "
          "outside (adds plan() and decoding)")

    run_us = statistics.median(plain_tps) and 1e6 * len(ids) * args.new_tokens / statistics.median(
        plain_tps)
    costs = fixed_costs(engine, ids)
    total = sum(costs.values())
    print(f"hal's fixed cost per generate_ids call: {total:.0f} us = "
          f"{100 * total / run_us:.2f} % of a {run_us / 1e3:.0f} ms run:")
    for name, us in costs.items():
        print(f"  {name:<48} {us:8.1f} us")

    if engine.dtype != torch.float32:
        _, _, _, fp32_hal, fp32_plain = compare(torch.float32, ids, args.new_tokens,
                                                max(3, args.pairs // 3))
        fp32 = statistics.median(fp32_hal)
        print(f"fp32 via hal     : {fp32:9.1f} tokens/s (plain torch fp32 "
              f"{statistics.median(fp32_plain):.1f})")
        print(f"policy / fp32    : {statistics.median(hal_tps) / fp32:9.3f}  ({engine.dtype} vs "
              "float32, through hal)")
    else:
        print("policy chose float32: nothing to compare against")
    print(f"selected backend : {hal.get_backend().name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
