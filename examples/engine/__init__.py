"""A reference inference engine that uses only hal's public API for device, precision, memory
and batching; the model itself is plain torch (see ``model.py``)."""

from .generate import Engine, Plan, Result, Sampling, generate_batch, sample
from .model import KVCache, ModelConfig, Transformer, build_default
from .tokenizer import ByteTokenizer

__all__ = [
    "ByteTokenizer",
    "Engine",
    "KVCache",
    "ModelConfig",
    "Plan",
    "Result",
    "Sampling",
    "Transformer",
    "build_default",
    "generate_batch",
    "sample",
]
