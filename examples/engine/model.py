"""A compact decoder-only transformer in plain torch: RMSNorm, rotary positions, grouped-query
attention, SwiGLU and a preallocated KV cache.

Module names follow the Llama/Qwen2 layout of Hugging Face checkpoints, so their state dicts load
unchanged. Nothing here knows about devices or hal: the engine decides where and in what dtype.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class ModelConfig:
    """Shape of the model; the defaults are the small embedded model (byte vocabulary)."""

    vocab_size: int = 259
    dim: int = 256
    n_layers: int = 4
    n_heads: int = 8
    n_kv_heads: int = 2
    hidden_dim: int = 688
    head_dim: int = 0  # 0: dim // n_heads
    max_seq_len: int = 1024
    norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    qkv_bias: bool = False
    tie_embeddings: bool = False

    def __post_init__(self) -> None:
        if self.n_heads % self.n_kv_heads:
            raise ValueError(
                f"n_heads={self.n_heads} is not a multiple of n_kv_heads={self.n_kv_heads}"
            )
        if self.head_dim == 0:
            object.__setattr__(self, "head_dim", self.dim // self.n_heads)

    @classmethod
    def from_hf(cls, cfg: dict[str, Any]) -> ModelConfig:
        """Map a Llama/Qwen2-style ``config.json`` onto this config; unsupported features fail."""
        arch = ",".join(cfg.get("architectures") or [cfg.get("model_type", "?")])
        model_type = cfg.get("model_type", "")
        if model_type not in ("llama", "qwen2", "mistral"):
            raise ValueError(
                f"model_type {model_type!r} ({arch}) is not supported; accepted: llama, qwen2, "
                "mistral"
            )
        scaling = cfg.get("rope_scaling")
        if scaling and scaling.get("rope_type", scaling.get("type")) not in (None, "default"):
            raise ValueError(f"rope_scaling {scaling!r} is not supported; accepted: none")
        heads = int(cfg["num_attention_heads"])
        return cls(
            vocab_size=int(cfg["vocab_size"]),
            dim=int(cfg["hidden_size"]),
            n_layers=int(cfg["num_hidden_layers"]),
            n_heads=heads,
            n_kv_heads=int(cfg.get("num_key_value_heads") or heads),
            hidden_dim=int(cfg["intermediate_size"]),
            head_dim=int(cfg.get("head_dim") or int(cfg["hidden_size"]) // heads),
            max_seq_len=int(cfg.get("max_position_embeddings", 2048)),
            norm_eps=float(cfg.get("rms_norm_eps", 1e-6)),
            rope_theta=float(cfg.get("rope_theta", 10000.0)),
            qkv_bias=bool(cfg.get("attention_bias", model_type == "qwen2")),
            tie_embeddings=bool(cfg.get("tie_word_embeddings", False)),
        )

    def as_dict(self) -> dict[str, Any]:
        """Plain dict, for reports."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


class RMSNorm(nn.Module):
    """Root-mean-square norm, computed in float32 and cast back (as Llama does)."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * h.to(x.dtype)


class Rotary(nn.Module):
    """Rotary position tables (half-rotation layout), looked up per token position."""

    def __init__(self, head_dim: int, theta: float) -> None:
        super().__init__()
        inv = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))
        self.register_buffer("inv_freq", inv, persistent=False)

    def forward(self, positions: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
        freqs = positions[..., None].float() * self.inv_freq.float()  # [B, T, hd/2]
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos().to(dtype)[:, None], emb.sin().to(dtype)[:, None]  # [B, 1, T, hd]


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class KVCache:
    """Preallocated keys and values for every layer: [batch, kv_heads, max_len, head_dim]."""

    def __init__(self, cfg: ModelConfig, batch: int, max_len: int,
                 device: torch.device, dtype: torch.dtype) -> None:
        shape = (batch, cfg.n_kv_heads, max_len, cfg.head_dim)
        self.k = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(cfg.n_layers)]
        self.v = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(cfg.n_layers)]
        self.length = 0
        self.max_len = max_len

    @staticmethod
    def nbytes(cfg: ModelConfig, batch: int, max_len: int, dtype: torch.dtype) -> int:
        """Bytes a cache of this size takes, for batch-size planning."""
        itemsize = torch.empty((), dtype=dtype).element_size()
        return 2 * cfg.n_layers * batch * cfg.n_kv_heads * max_len * cfg.head_dim * itemsize


class Attention(nn.Module):
    """Grouped-query attention: n_heads query heads share n_kv_heads key/value heads."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        hd = cfg.head_dim
        self.q_proj = nn.Linear(cfg.dim, cfg.n_heads * hd, bias=cfg.qkv_bias)
        self.k_proj = nn.Linear(cfg.dim, cfg.n_kv_heads * hd, bias=cfg.qkv_bias)
        self.v_proj = nn.Linear(cfg.dim, cfg.n_kv_heads * hd, bias=cfg.qkv_bias)
        self.o_proj = nn.Linear(cfg.n_heads * hd, cfg.dim, bias=False)

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, ...], mask: torch.Tensor,
                cache: KVCache, layer: int) -> torch.Tensor:
        b, t, _ = x.shape
        cfg = self.cfg
        q = self.q_proj(x).view(b, t, cfg.n_heads, cfg.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, t, cfg.n_kv_heads, cfg.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, t, cfg.n_kv_heads, cfg.head_dim).transpose(1, 2)
        cos, sin = rope
        q = q * cos + _rotate_half(q) * sin
        k = k * cos + _rotate_half(k) * sin
        start, end = cache.length, cache.length + t
        cache.k[layer][:, :, start:end] = k
        cache.v[layer][:, :, start:end] = v
        keys = cache.k[layer][:, :, :end]
        values = cache.v[layer][:, :, :end]
        groups = cfg.n_heads // cfg.n_kv_heads
        if groups > 1:
            keys = keys.repeat_interleave(groups, dim=1)
            values = values.repeat_interleave(groups, dim=1)
        scores = (q @ keys.transpose(-1, -2)) * (1.0 / math.sqrt(cfg.head_dim))
        scores = scores.masked_fill(~mask, float("-inf"))
        probs = torch.softmax(scores.float(), dim=-1).to(q.dtype)
        out = (probs @ values).transpose(1, 2).reshape(b, t, cfg.n_heads * cfg.head_dim)
        return self.o_proj(out)


class MLP(nn.Module):
    """SwiGLU feed-forward: down(silu(gate(x)) * up(x))."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(cfg.dim, cfg.hidden_dim, bias=False)
        self.up_proj = nn.Linear(cfg.dim, cfg.hidden_dim, bias=False)
        self.down_proj = nn.Linear(cfg.hidden_dim, cfg.dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    """Pre-norm transformer block."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.self_attn = Attention(cfg)
        self.post_attention_layernorm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.mlp = MLP(cfg)

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, ...], mask: torch.Tensor,
                cache: KVCache, layer: int) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x), rope, mask, cache, layer)
        return x + self.mlp(self.post_attention_layernorm(x))


class Decoder(nn.Module):
    """Embeddings, blocks and final norm (``model.*`` in Hugging Face checkpoints)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.dim, cfg.norm_eps)


class Transformer(nn.Module):
    """The decoder-only language model: ``forward`` runs new tokens against a KV cache."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.model = Decoder(cfg)
        self.rotary = Rotary(cfg.head_dim, cfg.rope_theta)
        self.lm_head = nn.Linear(cfg.dim, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight

    def new_cache(self, batch: int, max_len: int) -> KVCache:
        """An empty cache on this model's device and in its dtype."""
        p = self.lm_head.weight
        return KVCache(self.cfg, batch, max_len, p.device, p.dtype)

    def forward(self, tokens: torch.Tensor, positions: torch.Tensor, key_mask: torch.Tensor,
                cache: KVCache, last_only: bool = True) -> torch.Tensor:
        """Logits for ``tokens`` [B, T] at ``positions`` [B, T]; ``key_mask`` [B, cache+T] marks
        real (non-padding) keys. Appends to ``cache``; returns [B, V] (last_only) or [B, T, V]."""
        t = tokens.shape[1]
        start, end = cache.length, cache.length + t
        if end > cache.max_len:
            raise ValueError(f"sequence length {end} exceeds the cache's {cache.max_len}")
        x = self.model.embed_tokens(tokens)
        rope = self.rotary(positions, x.dtype)
        query_idx = torch.arange(start, end, device=tokens.device)[:, None]
        key_idx = torch.arange(end, device=tokens.device)[None, :]
        causal = key_idx <= query_idx  # [T, L]
        # A padding query may see only itself: a row with no visible key would turn into NaN.
        mask = (causal & key_mask[:, None, :end]) | (key_idx == query_idx)
        mask = mask[:, None]  # [B, 1, T, L]
        for i, layer in enumerate(self.model.layers):
            x = layer(x, rope, mask, cache, i)
        cache.length = end
        if last_only:
            x = x[:, -1]
        return self.lm_head(self.model.norm(x))


def build_default(seed: int = 0, cfg: ModelConfig | None = None) -> Transformer:
    """The embedded default model: built from a fixed seed on the host, in float32, no download.

    Weights are drawn with a local generator so the global RNG state is left alone.
    """
    cfg = cfg or ModelConfig()
    model = Transformer(cfg)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=gen))
            elif p.dim() == 1:
                p.copy_(0.02 * torch.randn(p.shape, generator=gen))
            else:
                std = 1.0 if "embed" in name else 1.0 / math.sqrt(p.shape[1])
                p.copy_(std * torch.randn(p.shape, generator=gen))
        if cfg.vocab_size >= 256 and cfg.dim > 1:
            _letter_prior(model)
    return model.eval()


#: Rough frequencies of characters in English text, for the embedded model's output prior.
_FREQ = {" ": 18.0, "e": 10.0, "t": 7.0, "a": 6.5, "o": 6.0, "i": 5.7, "n": 5.7, "s": 5.3,
         "h": 5.0, "r": 5.0, "d": 3.5, "l": 3.3, "u": 2.3, "c": 2.2, "m": 2.0, "f": 1.8,
         "w": 1.7, "g": 1.6, "y": 1.6, "p": 1.5, "b": 1.2, ",": 1.0, ".": 1.0, "v": 0.8,
         "k": 0.6, "T": 0.3, "A": 0.2, "I": 0.2, "x": 0.15, "j": 0.1, "q": 0.1, "z": 0.07}


def _letter_prior(model: Transformer) -> None:
    """Make the random model babble in letters rather than arbitrary bytes.

    Residual dimension 0 is held constant (every embedding has 1 there and no block writes to
    it), so after the final norm it is a fixed positive input to ``lm_head``; that column is set
    to a log-frequency prior over common characters and a large negative value elsewhere.
    """
    m = model.model
    m.embed_tokens.weight[:, 0] = 1.0
    for layer in m.layers:
        layer.self_attn.o_proj.weight[0, :] = 0.0
        layer.mlp.down_proj.weight[0, :] = 0.0
    m.norm.weight[0] = 1.0
    prior = torch.full((model.cfg.vocab_size,), -40.0)
    for ch, freq in _FREQ.items():
        prior[ord(ch)] = 0.8 * math.log(freq / 100.0)
    model.lm_head.weight[:, 0] = prior
