"""The reference engine: unchanged source on every backend, same tokens as plain torch."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest
import torch
from test_no_vendor_names import find_names

import hal

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
sys.path.insert(0, str(EXAMPLES))

from engine import (  # noqa: E402
    ByteTokenizer,
    Engine,
    ModelConfig,
    Sampling,
    Transformer,
    build_default,
    generate_batch,
)

SMALL = ModelConfig(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, hidden_dim=128,
                    max_seq_len=128)
PROMPTS = ["The quick brown fox", "hal", "Once upon a time, in a land far away,", "a", "xyz"]
DEVICE_WORDS = ("cuda", "npu", "xpu", "mps", "hip", "rocm", "ascend", "nccl", "hccl", "gloo",
                "nvidia", "amd", "intel", "huawei", "apple", "metal", "cpu", "privateuseone")


def engine_sources() -> list[Path]:
    return [*sorted((EXAMPLES / "engine").glob("*.py")), EXAMPLES / "generate.py"]


def test_engine_source_names_no_device_or_vendor() -> None:
    files = engine_sources()
    assert len(files) >= 5
    hits = [f"{p.name}:{line}: {word}" for p in files
            for line, word, _ in find_names(p.read_text(), DEVICE_WORDS)]
    assert not hits, hits


def test_device_word_check_would_fail() -> None:
    assert find_names("x = model.to('cpu')\n", DEVICE_WORDS)
    assert find_names("torch.cuda.synchronize()\n", DEVICE_WORDS)


# -- the plain-torch reference: same weights, no hal -------------------------------------


def reference_generate(model: Transformer, prompts: Sequence[Sequence[int]],
                       batches: Sequence[int], max_new: int, sampling: Sampling,
                       device: torch.device, dtype: torch.dtype,
                       pad_id: int = 256, eos_id: int = 258) -> list[list[int]]:
    """Plain torch on ``device`` in ``dtype``: left padding, KV cache, greedy or top-k/top-p."""
    model = model.to(device=device, dtype=dtype).eval()
    gen = (torch.Generator(device=device).manual_seed(sampling.seed)
           if sampling.temperature > 0 else None)
    amp = (torch.autocast(device_type=device.type, dtype=dtype)
           if dtype != torch.float32 else torch.autocast(device.type, enabled=False))
    out: list[list[int]] = []
    start = 0
    with torch.inference_mode(), amp:
        for size in batches:
            chunk = prompts[start:start + size]
            start += size
            width = max(len(p) for p in chunk)
            toks = torch.tensor([[pad_id] * (width - len(p)) + list(p) for p in chunk],
                                device=device)
            mask = torch.tensor([[False] * (width - len(p)) + [True] * len(p) for p in chunk],
                                device=device)
            keys = torch.ones((len(chunk), width + max_new), dtype=torch.bool, device=device)
            keys[:, :width] = mask
            pos = (mask.long().cumsum(-1) - 1).clamp(min=0)
            cache = model.new_cache(len(chunk), width + max_new)
            logits = model(toks, pos, keys, cache)
            rows: list[list[int]] = [[] for _ in chunk]
            finished = [False] * len(chunk)
            nxt_pos = pos[:, -1:] + 1
            for step in range(max_new):
                if sampling.temperature == 0:
                    nxt = logits.argmax(-1)
                else:
                    lg = logits.float() / sampling.temperature
                    if sampling.top_k:
                        kth = torch.topk(lg, sampling.top_k, dim=-1).values[:, -1:]
                        lg = lg.masked_fill(lg < kth, float("-inf"))
                    if sampling.top_p < 1.0:
                        s, order = torch.sort(lg, dim=-1, descending=True)
                        pr = torch.softmax(s, dim=-1)
                        s = s.masked_fill((pr.cumsum(-1) - pr) >= sampling.top_p, float("-inf"))
                        lg = torch.full_like(lg, float("-inf")).scatter(-1, order, s)
                    nxt = torch.multinomial(torch.softmax(lg, -1), 1, generator=gen).squeeze(-1)
                fed = []
                for i, tok in enumerate(nxt.tolist()):
                    if finished[i]:
                        fed.append(pad_id)
                    else:
                        rows[i].append(tok)
                        fed.append(tok)
                        finished[i] = tok == eos_id
                if all(finished) or step == max_new - 1:
                    break
                nxt = torch.tensor(fed, device=device)
                logits = model(nxt[:, None], nxt_pos, keys, cache)
                nxt_pos = nxt_pos + 1
            out.extend(rows)
    return out


def _ids(tok: ByteTokenizer) -> list[list[int]]:
    return [tok.encode(p) for p in PROMPTS]


@pytest.mark.parametrize("sampling", [Sampling(), Sampling(0.9, top_k=40, top_p=0.9, seed=3)],
                         ids=["greedy", "top-k-top-p"])
def test_tokens_equal_plain_torch_on_host(monkeypatch: pytest.MonkeyPatch,
                                          sampling: Sampling) -> None:
    monkeypatch.setenv("HAL_DEVICE", "cpu")
    tok = ByteTokenizer()
    engine = Engine(build_default(1, SMALL), tok, max_batch=3)
    assert engine.device == torch.device("cpu")
    result = engine.generate_ids(_ids(tok), max_new_tokens=12, sampling=sampling)
    assert sum(result.batches) == len(PROMPTS) and max(result.batches) <= 3
    expected = reference_generate(build_default(1, SMALL), _ids(tok), result.batches, 12,
                                  sampling, torch.device("cpu"), engine.dtype)
    assert result.tokens == expected
    assert all(len(t) >= 1 for t in result.tokens)
    assert result.new_tokens == sum(len(t) for t in result.tokens)
    assert result.tokens_per_second > 0


def test_engine_decision_comes_from_hal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HAL_DEVICE", "cpu")
    monkeypatch.setenv("HAL_PRECISION", "fp32")
    engine = Engine(build_default(1, SMALL), ByteTokenizer())
    policy = hal.precision.policy()
    assert engine.dtype == policy.compute_dtype == torch.float32
    assert engine.dtype_reason == policy.reason
    assert engine.device == hal.get_device()
    plan = engine.plan(5, 40)
    assert plan.batch_size == 5 and "free" in plan.batch_reason
    assert next(engine.model.parameters()).dtype == torch.float32


def test_batched_left_padding_matches_single_prompts() -> None:
    """In fp32, a padded batch gives each prompt the logits it gets alone (within rounding)."""
    model = build_default(2, SMALL)
    tok = ByteTokenizer()
    ids = _ids(tok)
    batched = generate_batch(model, ids, 6, Sampling(), pad_id=256, eos_id=258)
    alone = [generate_batch(model, [p], 6, Sampling(), pad_id=256, eos_id=258)[0] for p in ids]
    assert batched == alone


def test_kv_cache_matches_full_recompute() -> None:
    model = build_default(3, SMALL).eval()
    seq = torch.tensor([[257, *b"hello world"]])
    n = seq.shape[1]
    with torch.no_grad():
        full_cache = model.new_cache(1, n)
        full = model(seq, torch.arange(n)[None], torch.ones(1, n, dtype=torch.bool), full_cache,
                     last_only=False)
        cache = model.new_cache(1, n)
        keys = torch.ones(1, n, dtype=torch.bool)
        steps = [model(seq[:, :4], torch.arange(4)[None], keys, cache, last_only=False)]
        for i in range(4, n):
            steps.append(model(seq[:, i:i + 1], torch.tensor([[i]]), keys, cache,
                               last_only=False))
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-5)


def test_sampling_filters() -> None:
    """top-k 1 is greedy; top-p keeps the smallest set reaching p, never an empty one."""
    logits = torch.tensor([[0.0, 3.0, 1.0, 2.9], [5.0, 0.0, 0.0, 0.0]])
    gen = torch.Generator().manual_seed(0)
    from engine import sample

    for _ in range(20):
        assert sample(logits, Sampling(1.0, top_k=1), gen).tolist() == [1, 0]
        got = sample(logits, Sampling(1.0, top_p=0.5), gen).tolist()
        assert got[0] in (1, 3) and got[1] == 0
        assert sample(logits, Sampling(1.0, top_p=1e-6), gen).tolist() == [1, 0]
    assert math.isclose(Sampling().temperature, 0.0)


@pytest.mark.parametrize(("kwargs", "needle"), [
    ({"temperature": -1.0}, "temperature=-1.0"),
    ({"top_k": -2}, "top_k=-2"),
    ({"top_p": 0.0}, "top_p=0.0"),
    ({"top_p": 1.5}, "top_p=1.5"),
])
def test_bad_sampling(kwargs: dict[str, float], needle: str) -> None:
    with pytest.raises(ValueError, match=needle.replace(".", r"\.")):
        Sampling(**kwargs)  # type: ignore[arg-type]


def test_too_long_request(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HAL_DEVICE", "cpu")
    monkeypatch.setenv("HAL_PRECISION", "fp32")
    engine = Engine(build_default(1, SMALL), ByteTokenizer())
    with pytest.raises(ValueError, match="at most 128"):
        engine.generate(["x" * 100], max_new_tokens=40)


def _script(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("HAL_")}
    full.update(env or {})
    return subprocess.run([sys.executable, str(EXAMPLES / "generate.py"), *args],
                          capture_output=True, text=True, env=full, timeout=240)


def test_generate_script_default_model() -> None:
    proc = _script("-n", "4", "-p", "hello", "-p", "hal is", env={"HAL_PRECISION": "fp32"})
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "embedded default model" in out
    assert "device: cpu (" in out and "dtype:  float32 (HAL_PRECISION=fp32" in out
    assert "batch:  2 (" in out
    assert "tokens/s" in out and "'hello' -> " in out


def test_generate_script_bad_input() -> None:
    proc = _script("/nonexistent/model-dir")
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "no config.json" in proc.stderr
    proc = _script("--top-p", "2")
    assert proc.returncode == 2 and "top_p=2.0" in proc.stderr


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_same_file_runs_on_cuda() -> None:  # pragma: no cover - GPU machines only
    proc = _script("-n", "8")
    assert proc.returncode == 0, proc.stderr
    assert "device: cuda" in proc.stdout
    hal.reset()
    tok = ByteTokenizer()
    engine = Engine(build_default(1, SMALL), tok, max_batch=3)
    assert engine.device.type == "cuda"
    result = engine.generate_ids(_ids(tok), max_new_tokens=12)
    expected = reference_generate(build_default(1, SMALL), _ids(tok), result.batches, 12,
                                  Sampling(), engine.device, engine.dtype)
    assert result.tokens == expected
