"""Load a local Hugging Face Llama/Qwen2-style model directory into the engine's model.

Reads ``config.json`` and the weights (``*.safetensors`` or ``pytorch_model*.bin``) from disk,
never downloads. The tokenizer comes from ``transformers`` when it is installed and the
directory ships one; otherwise the byte tokenizer is used if the vocabulary covers it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from .model import ModelConfig, Transformer
from .tokenizer import ByteTokenizer, HFTokenizer

_TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json")


class ModelDirError(ValueError):
    """The directory is not a loadable local model; the message says what is missing."""


def _load_weights(path: Path) -> dict[str, torch.Tensor]:
    tensors: dict[str, torch.Tensor] = {}
    safetensors = sorted(path.glob("*.safetensors"))
    if safetensors:
        from safetensors.torch import load_file

        for f in safetensors:
            tensors.update(load_file(str(f)))
        return tensors
    bins = sorted(path.glob("pytorch_model*.bin"))
    for f in bins:
        tensors.update(torch.load(str(f), weights_only=True))
    if not tensors:
        raise ModelDirError(f"{path}: no *.safetensors or pytorch_model*.bin weights found")
    return tensors


def load_tokenizer(path: Path, vocab_size: int) -> Any:
    """The directory's own tokenizer (through transformers), else bytes if the vocab allows."""
    if any((path / f).exists() for f in _TOKENIZER_FILES):
        try:
            from transformers import AutoTokenizer
        except ImportError as exc:
            raise ModelDirError(f"{path} ships a tokenizer; install transformers to use it") \
                from exc
        return HFTokenizer(AutoTokenizer.from_pretrained(str(path), local_files_only=True))
    if vocab_size >= ByteTokenizer.vocab_size:
        return ByteTokenizer()
    raise ModelDirError(f"{path}: no tokenizer files and vocab_size={vocab_size} is too small "
                        f"for the byte tokenizer (needs {ByteTokenizer.vocab_size})")


def load_model_dir(path: str | Path) -> tuple[Transformer, Any, ModelConfig]:
    """(model in float32 on the host, tokenizer, config) from a local model directory."""
    root = Path(path)
    config_file = root / "config.json"
    if not config_file.is_file():
        raise ModelDirError(f"{root}: not a model directory (no config.json); expected a local "
                            "Hugging Face Llama/Qwen2-style directory")
    cfg = ModelConfig.from_hf(json.loads(config_file.read_text()))
    model = Transformer(cfg)
    state = _load_weights(root)
    state = {k: v for k, v in state.items() if not k.endswith("rotary_emb.inv_freq")}
    if cfg.tie_embeddings:
        state.pop("lm_head.weight", None)
    missing, unexpected = model.load_state_dict(
        {k: v.float() for k, v in state.items()}, strict=False
    )
    missing = [k for k in missing if not (cfg.tie_embeddings and k == "lm_head.weight")]
    if missing or unexpected:
        raise ModelDirError(f"{root}: weights do not match a {cfg.n_layers}-layer model "
                            f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    return model.eval(), load_tokenizer(root, cfg.vocab_size), cfg
