"""Generate text with the reference engine: device, dtype and batch chosen by hal.

    python examples/generate.py                      # the embedded default model (no download)
    python examples/generate.py /path/to/hf-model    # a local Llama/Qwen2-style model directory

Prints what it chose and why, the generated text, and tokens per second.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

DEFAULT_PROMPTS = [
    "The quick brown fox",
    "Once upon a time, in a land far away,",
    "hal",
    "def fibonacci(n):",
]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("model", nargs="?", help="local Hugging Face model directory (default: "
                   "the embedded model built from a fixed seed)")
    p.add_argument("-p", "--prompt", action="append", help="a prompt (repeatable)")
    p.add_argument("-n", "--max-new-tokens", type=int, default=32)
    p.add_argument("--temperature", type=float, default=0.0, help="0 is greedy (default)")
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-batch", type=int, default=32)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from engine import ByteTokenizer, Engine, Sampling, build_default
    from engine.hf import ModelDirError, load_model_dir

    import hal

    try:
        sampling = Sampling(args.temperature, args.top_k, args.top_p, args.seed)
        if args.max_new_tokens < 1 or args.max_batch < 1:
            raise ValueError(f"--max-new-tokens={args.max_new_tokens} and "
                             f"--max-batch={args.max_batch} must be >= 1")
        start = time.perf_counter()
        if args.model:
            model, tokenizer, _ = load_model_dir(args.model)
            source = f"local model {args.model}"
        else:
            model, tokenizer = build_default(seed=0), ByteTokenizer()
            source = "embedded default model (seed 0)"
        engine = Engine(model, tokenizer, max_batch=args.max_batch)
        load_s = time.perf_counter() - start
        result = engine.generate(args.prompt or DEFAULT_PROMPTS, args.max_new_tokens, sampling)
    except (ModelDirError, ValueError, hal.HalError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    params = sum(p.numel() for p in engine.model.parameters())
    print(f"model:  {source}, {params / 1e6:.2f}M parameters (loaded in {load_s:.1f} s)")
    for line in result.plan.lines():
        print(line)
    print(f"memory: {hal.memory.summary()}")
    print()
    for prompt, text in zip(args.prompt or DEFAULT_PROMPTS, result.texts):
        print(f"{prompt!r} -> {text!r}")
    print()
    print(f"{result.new_tokens} tokens in {result.seconds:.3f} s: "
          f"{result.tokens_per_second:.1f} tokens/s (batches {result.batches})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
