"""Hugging Face models: a local directory through the reference engine, and a transformers
causal LM driven by hal's device, autocast and batcher, both against plain torch."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import hal

transformers = pytest.importorskip("transformers")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))

from engine.hf import ModelDirError, load_model_dir  # noqa: E402

TINY = {"vocab_size": 300, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 256}


def _save(tmp_path: Path, kind: str) -> tuple[Path, torch.nn.Module]:
    cfg_cls, model_cls = {
        "llama": (transformers.LlamaConfig, transformers.LlamaForCausalLM),
        "qwen2": (transformers.Qwen2Config, transformers.Qwen2ForCausalLM),
    }[kind]
    torch.manual_seed(0)
    model = model_cls(cfg_cls(**TINY)).eval()
    path = tmp_path / kind
    model.save_pretrained(str(path))
    return path, model


@pytest.mark.parametrize("kind", ["llama", "qwen2"])
def test_model_dir_loads_into_engine_model(tmp_path: Path, kind: str) -> None:
    path, hf_model = _save(tmp_path, kind)
    model, tokenizer, cfg = load_model_dir(path)
    assert cfg.n_kv_heads == 2 and cfg.qkv_bias == (kind == "qwen2")
    assert type(tokenizer).__name__ == "ByteTokenizer"  # no tokenizer files saved
    ids = torch.tensor([[1, 5, 9, 22, 100, 7]])
    with torch.no_grad():
        expected = hf_model(ids).logits
        got = model(ids, torch.arange(6)[None], torch.ones(1, 6, dtype=torch.bool),
                    model.new_cache(1, 6), last_only=False)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


def test_generate_script_on_model_dir(tmp_path: Path) -> None:
    path, _ = _save(tmp_path, "llama")
    env = {k: v for k, v in os.environ.items() if not k.startswith("HAL_")}
    env["HAL_PRECISION"] = "fp32"
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / "generate.py"), str(path),
                           "-n", "4", "-p", "hi"], capture_output=True, text=True, env=env,
                          timeout=240)
    assert proc.returncode == 0, proc.stderr
    assert f"local model {path}" in proc.stdout and "tokens/s" in proc.stdout
    assert "device: cpu" in proc.stdout and "batch:  1" in proc.stdout


def test_model_dir_errors(tmp_path: Path) -> None:
    with pytest.raises(ModelDirError, match=r"no config\.json"):
        load_model_dir(tmp_path)
    (tmp_path / "config.json").write_text('{"model_type": "gpt2", "architectures": ["GPT2"]}')
    with pytest.raises(ValueError, match="model_type 'gpt2'"):
        load_model_dir(tmp_path)


def test_transformers_model_through_hal(monkeypatch: pytest.MonkeyPatch) -> None:
    """A third-party model: moved with hal.get_device(), run under hal.autocast() through
    hal.batching.AdaptiveBatcher, compared with the same model in plain torch."""
    monkeypatch.setenv("HAL_DEVICE", "cpu")
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(**TINY)
    reference = transformers.LlamaForCausalLM(cfg).eval()
    model = transformers.LlamaForCausalLM(cfg).eval()
    model.load_state_dict(reference.state_dict())

    device = hal.get_device()
    model.to(device)
    gen = torch.Generator().manual_seed(1)
    prompts = [torch.randint(0, 300, (12,), generator=gen) for _ in range(7)]
    sizes: list[int] = []

    def forward(batch: list[torch.Tensor]) -> list[torch.Tensor]:
        sizes.append(len(batch))
        with torch.inference_mode(), hal.autocast():
            logits = model(torch.stack(batch).to(device)).logits[:, -1]
        return [row.float() for row in logits]

    batcher = hal.batching.AdaptiveBatcher(forward, start=2, max=4)
    got = list(batcher.map(prompts))
    assert len(got) == 7 and sum(sizes) == 7

    policy = hal.precision.policy()
    amp = (torch.autocast(device_type="cpu", dtype=policy.autocast_dtype)
           if policy.autocast_dtype is not None else torch.autocast("cpu", enabled=False))
    with torch.inference_mode(), amp:
        expected = [reference(p[None]).logits[0, -1].float() for p in prompts]
    tol = 1e-5 if policy.autocast_dtype is None else 5e-2
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, atol=tol, rtol=tol)
    assert [int(g.argmax()) for g in got] == [int(e.argmax()) for e in expected]
