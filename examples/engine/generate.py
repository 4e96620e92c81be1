"""The inference engine: batched prompts of different lengths, a KV cache, greedy and top-k/top-p
sampling, with device, precision, memory and batching decided by hal alone.

Nothing here names a device type or vendor: the same file runs wherever hal finds a device.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

import hal

from .model import KVCache, Transformer


class Tokenizer(Protocol):
    """What the engine needs from a tokenizer."""

    pad_id: int
    eos_id: int

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: Sequence[int]) -> str: ...


@dataclass(frozen=True)
class Sampling:
    """How the next token is picked: temperature 0 is greedy; top_k 0 and top_p 1.0 disable."""

    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ValueError(f"temperature={self.temperature} must be >= 0 (0 means greedy)")
        if self.top_k < 0:
            raise ValueError(f"top_k={self.top_k} must be >= 0 (0 disables it)")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p={self.top_p} must be in (0, 1] (1 disables it)")


@dataclass(frozen=True)
class Plan:
    """What the engine chose and why: device, dtype and batch size."""

    device: torch.device
    device_reason: str
    dtype: torch.dtype
    dtype_reason: str
    batch_size: int
    batch_reason: str

    def lines(self) -> list[str]:
        """Human-readable decision, one line per choice."""
        return [
            f"device: {self.device} ({self.device_reason})",
            f"dtype:  {str(self.dtype).removeprefix('torch.')} ({self.dtype_reason})",
            f"batch:  {self.batch_size} ({self.batch_reason})",
        ]


@dataclass(frozen=True)
class Result:
    """Generated token ids (prompt excluded) per prompt, in input order, with timing."""

    tokens: list[list[int]]
    texts: list[str]
    new_tokens: int
    seconds: float
    plan: Plan
    peak_memory: int | None = None
    batches: list[int] = field(default_factory=list)

    @property
    def tokens_per_second(self) -> float:
        """Generated tokens per wall-clock second."""
        return self.new_tokens / self.seconds if self.seconds > 0 else 0.0


def sample(logits: torch.Tensor, sampling: Sampling,
           generator: torch.Generator | None) -> torch.Tensor:
    """Pick one token per row of ``logits`` [B, V]: greedy, or temperature with top-k/top-p."""
    if sampling.temperature == 0.0:
        return logits.argmax(dim=-1)
    logits = logits.float() / sampling.temperature
    if sampling.top_k > 0:
        k = min(sampling.top_k, logits.shape[-1])
        kth = torch.topk(logits, k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if sampling.top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = torch.softmax(sorted_logits, dim=-1)
        # Drop a token when the tokens ranked above it already reach top_p (the first stays).
        drop = (probs.cumsum(dim=-1) - probs) >= sampling.top_p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    probs = torch.softmax(logits, dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def left_pad(prompts: Sequence[Sequence[int]], pad_id: int,
             device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad prompts to one length: (tokens [B, T], mask [B, T] True on real tokens)."""
    if not prompts or any(len(p) == 0 for p in prompts):
        raise ValueError("every prompt needs at least one token")
    width = max(len(p) for p in prompts)
    tokens = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.bool)
    for i, p in enumerate(prompts):
        tokens[i, width - len(p):] = torch.tensor(list(p), dtype=torch.long)
        mask[i, width - len(p):] = True
    return tokens.to(device), mask.to(device)


@torch.inference_mode()
def generate_batch(model: Transformer, prompts: Sequence[Sequence[int]], max_new_tokens: int,
                   sampling: Sampling, *, pad_id: int, eos_id: int,
                   generator: torch.Generator | None = None) -> list[list[int]]:
    """Generate for one batch of prompts with a KV cache; pure torch, on the model's device.

    Prompts are left-padded; padding is masked out of attention and positions start at each
    prompt's first real token. A row stops at ``eos_id`` (kept in its output).
    """
    device = model.lm_head.weight.device
    tokens, mask = left_pad(prompts, pad_id, device)
    b, t = tokens.shape
    cache: KVCache = model.new_cache(b, t + max_new_tokens)
    key_mask = torch.ones((b, t + max_new_tokens), dtype=torch.bool, device=device)
    key_mask[:, :t] = mask
    positions = (mask.long().cumsum(dim=-1) - 1).clamp(min=0)
    logits = model(tokens, positions, key_mask, cache)
    next_pos = positions[:, -1:] + 1
    out = torch.empty((b, 0), dtype=torch.long, device=device)
    done = torch.zeros(b, dtype=torch.bool, device=device)
    for step in range(max_new_tokens):
        nxt = sample(logits, sampling, generator)
        nxt = torch.where(done, torch.full_like(nxt, pad_id), nxt)
        out = torch.cat((out, nxt[:, None]), dim=1)
        done = done | (nxt == eos_id)
        if step == max_new_tokens - 1 or bool(done.all()):
            break
        logits = model(nxt[:, None], next_pos, key_mask, cache)
        next_pos = next_pos + 1
    rows: list[list[int]] = []
    for row in out.tolist():
        if eos_id in row:
            row = row[: row.index(eos_id) + 1]
        rows.append(row)
    return rows


def _policy_dtype(policy: Any) -> tuple[torch.dtype, str]:
    """The compute dtype and reason from hal's precision policy."""
    return policy.compute_dtype, str(policy.reason)


class Engine:
    """Moves a model to hal's device in hal's dtype and generates with hal's batcher."""

    #: Fraction of the device's free memory the KV caches may take when planning the batch.
    MEMORY_FRACTION = 0.5

    def __init__(self, model: Transformer, tokenizer: Tokenizer, *,
                 dtype: torch.dtype | None = None, max_batch: int = 32) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch={max_batch} must be >= 1")
        selection = hal.select()
        self.device = hal.get_device()
        self.device_reason = selection.reason
        if dtype is None:
            dtype, self.dtype_reason = _policy_dtype(hal.precision.policy(self.device))
        else:
            self.dtype_reason = "asked for by the caller"
        self.dtype = dtype
        self.tokenizer = tokenizer
        self.max_batch = max_batch
        self.model = model.to(device=self.device, dtype=self.dtype).eval()

    def plan(self, n_prompts: int, max_len: int) -> Plan:
        """Batch size from the free memory hal reports and the KV cache one sequence needs."""
        cfg = self.model.cfg
        per_seq = KVCache.nbytes(cfg, 1, max_len, self.dtype)
        per_seq += 4 * (cfg.vocab_size + 4 * cfg.dim) * max_len  # logits and activations
        free = hal.memory.info().free
        cap = min(n_prompts, self.max_batch)
        if free > 0:
            fits = max(1, int(free * self.MEMORY_FRACTION) // per_seq)
            batch = min(cap, fits)
            why = (f"{n_prompts} prompt(s), at most {self.max_batch} a batch; one sequence of "
                   f"{max_len} tokens needs ~{per_seq / 2**20:.1f} MiB, "
                   f"{fits} fit in half of the {free / 2**30:.1f} GiB free")
        else:
            batch = cap
            why = f"{n_prompts} prompt(s), at most {self.max_batch} a batch; free memory unknown"
        return Plan(self.device, self.device_reason, self.dtype, self.dtype_reason, batch,
                    why + "; the batcher splits a batch that runs out of memory")

    def generate_ids(self, prompts: Sequence[Sequence[int]], max_new_tokens: int = 32,
                     sampling: Sampling | None = None) -> Result:
        """Generate for every prompt (token ids); outputs in input order."""
        sampling = sampling or Sampling()
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens={max_new_tokens} must be >= 1")
        longest = max(len(p) for p in prompts) + max_new_tokens
        if longest > self.model.cfg.max_seq_len:
            raise ValueError(f"prompt plus max_new_tokens is {longest} tokens; the model "
                             f"accepts at most {self.model.cfg.max_seq_len}")
        plan = self.plan(len(prompts), longest)
        generator = None
        if sampling.temperature > 0:
            generator = torch.Generator(device=self.device).manual_seed(sampling.seed)
        sizes: list[int] = []

        def run(batch: Sequence[Sequence[int]]) -> list[list[int]]:
            sizes.append(len(batch))
            with hal.autocast(self.dtype):
                return generate_batch(self.model, batch, max_new_tokens, sampling,
                                      pad_id=self.tokenizer.pad_id, eos_id=self.tokenizer.eos_id,
                                      generator=generator)

        hal.get_backend().synchronize()
        start = time.perf_counter()
        # No garbage collection around the block: it would cost more than a short generation.
        with hal.memory.track(collect=False) as tracked:
            outputs = list(self._batched(run, list(prompts), plan.batch_size))
        seconds = time.perf_counter() - start  # track() synchronised the device on exit
        texts = [self.tokenizer.decode(ids) for ids in outputs]
        return Result(outputs, texts, sum(len(o) for o in outputs), seconds, plan,
                      _peak(tracked), sizes)

    def generate(self, texts: Sequence[str], max_new_tokens: int = 32,
                 sampling: Sampling | None = None) -> Result:
        """Encode, generate and decode."""
        ids = [self.tokenizer.encode(t) for t in texts]
        return self.generate_ids(ids, max_new_tokens, sampling)

    def _batched(self, run: Any, prompts: list[Sequence[int]],
                 batch_size: int) -> Iterator[list[int]]:
        """Feed prompts through hal's adaptive batcher, one output per prompt, in order."""
        batcher = hal.batching.AdaptiveBatcher(run, start=batch_size, min=1, max=self.max_batch)
        yield from batcher.map(prompts)


def _peak(tracked: Any) -> int | None:
    peak = getattr(tracked, "peak", None)
    return int(peak) if peak is not None else None
