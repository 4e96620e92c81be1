"""Reference engine: tokens/s through hal against the same model in plain torch (same dtype, same
device), and the dtype hal's precision policy chose against fp32 on this machine.

    python bench/bench_engine.py [--prompts 8] [--new-tokens 32] [--repeats 5] [--threads 1]

Runs are interleaved (hal, plain, hal, ...) and the best of each is compared, so a busy
neighbour slows both alike. Goal: hal within 1 % of plain torch (ratio >= 0.99).
"""

from __future__ import annotations

import argparse
import sys
import time
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


def compare(dtype: torch.dtype | None, ids: list[list[int]], new: int,
            repeats: int) -> tuple[Engine, float, float]:
    """(engine, best hal tokens/s, best plain tokens/s) for one dtype (None: the policy's)."""
    engine = Engine(build_default(0), ByteTokenizer(), dtype=dtype, max_batch=len(ids))
    plain_model = build_default(0).to(device=engine.device, dtype=engine.dtype).eval()
    engine.generate_ids(ids, 4)  # warm-up both
    plain_torch(plain_model, ids, 4, engine.dtype, engine.device)
    hal_best = plain_best = 0.0
    for _ in range(repeats):
        r = engine.generate_ids(ids, new)
        hal_best = max(hal_best, r.tokens_per_second)
        n, s = plain_torch(plain_model, ids, new, engine.dtype, engine.device)
        plain_best = max(plain_best, n / s)
    return engine, hal_best, plain_best


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--prompts", type=int, default=8)
    p.add_argument("--new-tokens", type=int, default=32)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    tok = ByteTokenizer()
    ids = [tok.encode(PROMPTS[i % len(PROMPTS)]) for i in range(args.prompts)]

    engine, hal_tps, plain_tps = compare(None, ids, args.new_tokens, args.repeats)
    print(f"device {engine.device}, {torch.get_num_threads()} thread(s), {args.prompts} prompts "
          f"x {args.new_tokens} new tokens, best of {args.repeats}")
    print(f"policy dtype: {engine.dtype} ({engine.dtype_reason})")
    print(f"engine via hal   : {hal_tps:9.1f} tokens/s")
    print(f"plain torch      : {plain_tps:9.1f} tokens/s")
    print(f"hal / plain      : {hal_tps / plain_tps:9.3f}  (goal >= 0.99)")

    if engine.dtype != torch.float32:
        _, fp32_hal, fp32_plain = compare(torch.float32, ids, args.new_tokens, args.repeats)
        print(f"fp32 via hal     : {fp32_hal:9.1f} tokens/s (plain torch fp32 {fp32_plain:.1f})")
        print(f"policy / fp32    : {hal_tps / fp32_hal:9.3f}  ({engine.dtype} vs float32, "
              "through hal)")
    else:
        print("policy chose float32: nothing to compare against")
    print(f"selected backend : {hal.backend().name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
