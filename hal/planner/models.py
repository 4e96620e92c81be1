"""Model shapes for the planner: parameter counts, Hugging Face config.json files and presets.

Everything here is arithmetic on published config figures; nothing imports torch.  A
:class:`ModelSpec` holds what the memory estimate needs: parameter totals (all and active per
token), the embedding and output-head sizes (left unquantized by most formats), and the
KV-cache width per token and layer, with sliding-window layers counted apart.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from hal.errors import ConfigError

#: A Hugging Face model id: ``org/name`` (letters, digits, ``-``, ``_``, ``.``).
_HUB_ID = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.-]{0,95}\Z")
#: Hidden size per layer assumed when only a parameter count is known (Llama-2 7B/13B ratio).
ASPECT = 128


@dataclass(frozen=True)
class ModelSpec:
    """The figures of one model that decide its memory; counts are parameters, not bytes."""

    name: str
    kind: str  # "count" (a bare parameter count), "dense" or "moe"
    params_total: int
    params_active: int
    embedding_params: int  # input embeddings (+ learned positions), kept in 16-bit when quantized
    lm_head_params: int  # 0 when tied to the input embeddings
    num_layers: int
    hidden_size: int
    intermediate_size: int  # the widest per-token MLP width that runs (active experts summed)
    vocab_size: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    attention: str  # "mha", "gqa", "mqa", "mla" or "assumed"
    kv_per_token_layer: int  # cached elements per token per layer (K and V together)
    full_layers: int  # layers that cache every token
    window_layers: int = 0  # layers that cache only the last ``sliding_window`` tokens
    sliding_window: int | None = None
    max_context: int | None = None
    routed_experts: int = 0  # MoE: experts a token is routed among (0: dense)
    experts_per_token: int = 0  # MoE: routed experts a token uses
    routed_params: int = 0  # MoE: parameters of all routed experts, every layer
    source: str = ""
    notes: tuple[str, ...] = field(default=())

    @property
    def quantizable_params(self) -> int:
        """Parameters a weight-quantization format converts (all but embeddings and lm_head)."""
        return self.params_total - self.embedding_params - self.lm_head_params

    def kv_elements_per_token(self, context: int) -> int:
        """Cached elements for one sequence of ``context`` tokens, summed over layers."""
        window = min(context, self.sliding_window or context)
        return self.kv_per_token_layer * (self.full_layers * context + self.window_layers * window)


def parse_count(text: str) -> int:
    """``"13B"`` -> 13_000_000_000; also K, M, T and decimals (``"1.5B"``); bounded."""
    from hal.planner.configfile import parse_count as checked

    return checked(text, hint=", a path to config.json, a Hugging Face id (org/name), or one of: "
                   + ", ".join(sorted(PRESETS)))


def from_count(params: int, name: str | None = None) -> ModelSpec:
    """A bare parameter count: every parameter is a weight, the shape is assumed (MHA).

    Layers L and hidden size h follow params ~ 12 L h^2 with h = 128 L (the Llama-2 7B/13B
    aspect), so KV cache and activations have a figure; the notes say it is assumed.
    """
    layers = max(1, round((params / (12 * ASPECT**2)) ** (1 / 3)))
    hidden = ASPECT * layers
    heads = max(1, hidden // 128)
    return ModelSpec(
        name=name or _format_count(params), kind="count", params_total=params,
        params_active=params, embedding_params=0, lm_head_params=0, num_layers=layers,
        hidden_size=hidden, intermediate_size=4 * hidden, vocab_size=32000, num_heads=heads,
        num_kv_heads=heads, head_dim=hidden // heads, attention="assumed",
        kv_per_token_layer=2 * hidden, full_layers=layers,
        source="parameter count",
        notes=(f"shape assumed from the count: {layers} layers, hidden {hidden}, full multi-head "
               "attention (an upper bound on KV cache); give a config.json for the real shape",),
    )


def _format_count(n: int) -> str:
    for unit, scale in (("T", 10**12), ("B", 10**9), ("M", 10**6), ("K", 10**3)):
        if n >= scale:
            return f"{n / scale:g}{unit}"
    return str(n)


def _need(cfg: Mapping[str, Any], key: str, where: str) -> int:
    value = cfg.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        got = "missing" if key not in cfg else f"{value!r}"
        raise ConfigError(f"{where}: field {key!r} is {got}; expected a positive integer")
    return value


def _opt_int(cfg: Mapping[str, Any], key: str, default: int) -> int:
    value = cfg.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def from_config(cfg: Mapping[str, Any], name: str = "config", where: str = "config") -> ModelSpec:
    """Count parameters and KV-cache width from a Hugging Face ``config.json`` mapping.

    Handles Llama-style decoders (Llama, Qwen2, Mistral: grouped-query attention, gated MLP),
    GPT-2, Mixtral/Qwen-MoE experts, and DeepSeek-V2/V3 (multi-head latent attention, MoE).
    """
    if not isinstance(cfg, Mapping):
        raise ConfigError(f"{where}: expected a JSON object, got {type(cfg).__name__}")
    text_cfg = cfg.get("text_config")
    if isinstance(text_cfg, Mapping) and "hidden_size" not in cfg:
        cfg = text_cfg
    if cfg.get("model_type") == "gpt2" or ("n_embd" in cfg and "hidden_size" not in cfg):
        return _gpt2(cfg, name, where)
    hidden = _need(cfg, "hidden_size", where)
    layers = _need(cfg, "num_hidden_layers", where)
    heads = _need(cfg, "num_attention_heads", where)
    vocab = _need(cfg, "vocab_size", where)
    inter = _opt_int(cfg, "intermediate_size", 0)
    kv_heads = _opt_int(cfg, "num_key_value_heads", heads)
    head_dim = _opt_int(cfg, "head_dim", hidden // heads)
    tied = bool(cfg.get("tie_word_embeddings", False))
    model_type = str(cfg.get("model_type", ""))
    notes: list[str] = []

    embed = vocab * hidden
    lm_head = 0 if tied else vocab * hidden
    norms = hidden  # final norm
    mla = "kv_lora_rank" in cfg and cfg.get("kv_lora_rank") is not None

    # -- attention, per layer
    if mla:
        rank = _need(cfg, "kv_lora_rank", where)
        rope = _need(cfg, "qk_rope_head_dim", where)
        nope = _need(cfg, "qk_nope_head_dim", where)
        v_dim = _opt_int(cfg, "v_head_dim", nope)
        q_rank = cfg.get("q_lora_rank")
        qk = nope + rope
        if isinstance(q_rank, int) and q_rank > 0:
            q = hidden * q_rank + q_rank + q_rank * heads * qk
        else:
            q = hidden * heads * qk
        attn = q + hidden * (rank + rope) + rank + rank * heads * (nope + v_dim)
        attn += heads * v_dim * hidden
        kv_per_token_layer = rank + rope
        attention = "mla"
        q_width = heads * qk
        notes.append(f"MLA: KV cache per token per layer = kv_lora_rank + qk_rope_head_dim "
                     f"= {rank} + {rope} = {kv_per_token_layer} elements")
    else:
        bias = bool(cfg.get("attention_bias", model_type in ("qwen2", "qwen2_moe")))
        q_width = heads * head_dim
        kv_width = kv_heads * head_dim
        attn = hidden * q_width + 2 * hidden * kv_width + q_width * hidden
        if bias:
            attn += q_width + 2 * kv_width
        kv_per_token_layer = 2 * kv_width
        attention = "mha" if kv_heads == heads else ("mqa" if kv_heads == 1 else "gqa")
        if attention != "mha":
            notes.append(f"{attention.upper()}: {kv_heads} KV heads for {heads} query heads; KV "
                         f"cache per token per layer = 2 x {kv_heads} x {head_dim} "
                         f"= {kv_per_token_layer} elements")
    per_layer_norms = 2 * hidden

    # -- MLP / experts, per layer
    dense_mlp = 3 * hidden * inter
    n_routed = _opt_int(cfg, "n_routed_experts", 0) or _opt_int(cfg, "num_local_experts", 0) \
        or _opt_int(cfg, "num_experts", 0)
    kind = "dense"
    top_k = routed = 0
    if n_routed > 1:
        kind = "moe"
        top_k = _need(cfg, "num_experts_per_tok", where)
        expert_inter = _opt_int(cfg, "moe_intermediate_size", inter)
        if expert_inter <= 0:
            raise ConfigError(f"{where}: field 'moe_intermediate_size' or 'intermediate_size' "
                              "is missing; expected a positive integer")
        expert = 3 * hidden * expert_inter
        n_shared = _opt_int(cfg, "n_shared_experts", 0)
        shared_inter = _opt_int(cfg, "shared_expert_intermediate_size", 0)
        shared = n_shared * expert + (3 * hidden * shared_inter + hidden if shared_inter else 0)
        router = hidden * n_routed + (n_routed if "n_routed_experts" in cfg else 0)
        dense_layers = min(layers, _opt_int(cfg, "first_k_dense_replace", 0))
        moe_layers = layers - dense_layers
        if dense_layers and inter <= 0:
            raise ConfigError(f"{where}: field 'intermediate_size' is missing; expected a "
                              "positive integer for the dense layers")
        routed = moe_layers * n_routed * expert
        mlp_total = dense_layers * dense_mlp + moe_layers * (n_routed * expert + shared + router)
        mlp_active = dense_layers * dense_mlp + moe_layers * (top_k * expert + shared + router)
        active_inter = max(inter if dense_layers else 0,
                           (top_k + n_shared) * expert_inter + shared_inter)
        notes.append(f"MoE: {n_routed} routed experts, {top_k} active per token"
                     + (f", {n_shared} shared" if n_shared else "")
                     + (f"; first {dense_layers} layers dense" if dense_layers else ""))
    else:
        if inter <= 0:
            raise ConfigError(f"{where}: field 'intermediate_size' is missing; expected a "
                              "positive integer")
        mlp_total = mlp_active = layers * dense_mlp
        active_inter = inter

    body_common = layers * (attn + per_layer_norms) + norms
    total = embed + lm_head + body_common + mlp_total
    active = embed + lm_head + body_common + mlp_active

    # -- sliding-window layers
    window_layers = 0
    window = cfg.get("sliding_window")
    window = window if isinstance(window, int) and window > 0 else None
    layer_types = cfg.get("layer_types")
    if isinstance(layer_types, list) and layer_types and window:
        window_layers = sum(1 for t in layer_types if t == "sliding_attention")
    elif window and "use_sliding_window" in cfg:  # Qwen2: layers from max_window_layers on
        if cfg.get("use_sliding_window"):
            start = _opt_int(cfg, "max_window_layers", layers)
            window_layers = max(0, layers - start)
    elif window:  # Mistral: every layer
        window_layers = layers
    if window_layers:
        notes.append(f"sliding window: {window_layers} of {layers} layers cache at most "
                     f"{window} tokens")
    return ModelSpec(
        name=name, kind=kind, params_total=total, params_active=active,
        embedding_params=embed, lm_head_params=lm_head, num_layers=layers, hidden_size=hidden,
        intermediate_size=active_inter, vocab_size=vocab, num_heads=heads,
        num_kv_heads=kv_heads if not mla else 1, head_dim=q_width // heads,
        attention=attention, kv_per_token_layer=kv_per_token_layer,
        full_layers=layers - window_layers, window_layers=window_layers,
        sliding_window=window if window_layers else None,
        max_context=_opt_int(cfg, "max_position_embeddings", 0) or None,
        routed_experts=n_routed if kind == "moe" else 0, experts_per_token=top_k,
        routed_params=routed, source=where, notes=tuple(notes),
    )


def _gpt2(cfg: Mapping[str, Any], name: str, where: str) -> ModelSpec:
    hidden = _need(cfg, "n_embd", where)
    layers = _need(cfg, "n_layer", where)
    heads = _need(cfg, "n_head", where)
    vocab = _need(cfg, "vocab_size", where)
    positions = _opt_int(cfg, "n_positions", 1024)
    inter = _opt_int(cfg, "n_inner", 4 * hidden)
    embed = vocab * hidden + positions * hidden
    per_layer = (4 * hidden  # two LayerNorms, weight and bias
                 + hidden * 3 * hidden + 3 * hidden + hidden * hidden + hidden  # attention
                 + 2 * hidden * inter + inter + hidden)  # MLP with biases
    total = embed + layers * per_layer + 2 * hidden
    return ModelSpec(
        name=name, kind="dense", params_total=total, params_active=total,
        embedding_params=embed, lm_head_params=0, num_layers=layers, hidden_size=hidden,
        intermediate_size=inter, vocab_size=vocab, num_heads=heads, num_kv_heads=heads,
        head_dim=hidden // heads, attention="mha", kv_per_token_layer=2 * hidden,
        full_layers=layers, max_context=positions, source=where,
        notes=("GPT-2: learned positions, tied lm_head, non-gated MLP",),
    )


def load_config(path: str) -> ModelSpec:
    """Read a ``config.json`` file (or a folder holding one) into a :class:`ModelSpec`.

    Read through :mod:`hal.planner.configfile`: regular files only, size and nesting capped,
    impossible shapes refused with one line naming the field.
    """
    from hal.planner.configfile import check_config, read_json_config

    data = read_json_config(path)
    if os.path.isdir(path):
        path = os.path.join(path, "config.json")
    check_config(data, where=path)
    name = os.path.basename(os.path.dirname(os.path.abspath(path))) or path
    return from_config(data, name=name, where=path)


# -- presets --------------------------------------------------------------------------------

_HF = "https://huggingface.co/{}/blob/main/config.json"


def _qwen2(hidden: int, inter: int, layers: int, heads: int, kv: int, vocab: int,
           tied: bool, max_pos: int, window_layers: int) -> dict[str, Any]:
    return {"model_type": "qwen2", "hidden_size": hidden, "intermediate_size": inter,
            "num_hidden_layers": layers, "num_attention_heads": heads,
            "num_key_value_heads": kv, "vocab_size": vocab, "tie_word_embeddings": tied,
            "max_position_embeddings": max_pos, "max_window_layers": window_layers,
            "use_sliding_window": False, "sliding_window": max_pos}


def _llama(hidden: int, inter: int, layers: int, heads: int, kv: int) -> dict[str, Any]:
    return {"model_type": "llama", "hidden_size": hidden, "intermediate_size": inter,
            "num_hidden_layers": layers, "num_attention_heads": heads,
            "num_key_value_heads": kv, "vocab_size": 128256, "tie_word_embeddings": False,
            "max_position_embeddings": 131072, "attention_bias": False}


_DEEPSEEK_V3: dict[str, Any] = {
    "model_type": "deepseek_v3", "hidden_size": 7168, "intermediate_size": 18432,
    "moe_intermediate_size": 2048, "num_hidden_layers": 61, "first_k_dense_replace": 3,
    "n_routed_experts": 256, "n_shared_experts": 1, "num_experts_per_tok": 8,
    "num_attention_heads": 128, "num_key_value_heads": 128, "q_lora_rank": 1536,
    "kv_lora_rank": 512, "qk_nope_head_dim": 128, "qk_rope_head_dim": 64, "v_head_dim": 128,
    "vocab_size": 129280, "tie_word_embeddings": False, "max_position_embeddings": 163840,
}

#: Built-in presets: the published config.json figures of each model (source in ``source``).
#: The DeepSeek-R1 distills keep their base models' shapes (Qwen2.5-Math-1.5B/7B,
#: Qwen2.5-14B/32B, Llama-3.1-8B, Llama-3.3-70B-Instruct); their released configs untie the
#: 1.5B's embeddings.
_DISTILLS: tuple[tuple[str, dict[str, Any]], ...] = (  # deepseek-ai/DeepSeek-R1-Distill-<name>
    ("Qwen-1.5B", _qwen2(1536, 8960, 28, 12, 2, 151936, False, 131072, 21)),
    ("Qwen-7B", _qwen2(3584, 18944, 28, 28, 4, 152064, False, 131072, 28)),
    ("Qwen-14B", _qwen2(5120, 13824, 48, 40, 8, 152064, False, 131072, 48)),
    ("Qwen-32B", _qwen2(5120, 27648, 64, 40, 8, 152064, False, 131072, 64)),
    ("Llama-8B", _llama(4096, 14336, 32, 32, 8)),
    ("Llama-70B", _llama(8192, 28672, 80, 64, 8)),
)
PRESETS: dict[str, tuple[dict[str, Any], str]] = {
    "deepseek-v3": (_DEEPSEEK_V3, _HF.format("deepseek-ai/DeepSeek-V3")),
    "deepseek-r1": (_DEEPSEEK_V3, _HF.format("deepseek-ai/DeepSeek-R1")),
    **{f"deepseek-r1-distill-{name.lower()}": (config, _HF.format(f"deepseek-ai/DeepSeek-R1-Distill-{name}"))
       for name, config in _DISTILLS},
}


def preset(name: str) -> ModelSpec:
    """A built-in preset by name (case-insensitive)."""
    key = name.strip().lower()
    if key not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; expected one of: {', '.join(sorted(PRESETS))}")
    cfg, source = PRESETS[key]
    return from_config(cfg, name=key, where=source)


def resolve(model: str | int | ModelSpec | Mapping[str, Any]) -> ModelSpec:
    """Turn what a user passes (count, path, preset name, config mapping, spec) into a spec."""
    if isinstance(model, ModelSpec):
        return model
    if isinstance(model, bool):
        raise ConfigError(f"model {model!r} is not a parameter count")
    if isinstance(model, int):
        if model <= 0:
            raise ConfigError(f"model {model!r}: a parameter count must be positive")
        return from_count(model)
    if isinstance(model, Mapping):
        from hal.planner.configfile import check_config

        check_config(model)
        return from_config(model)
    if not isinstance(model, str):
        raise ConfigError(f"model {model!r} is not a count, path, preset or config mapping")
    from hal.planner.configfile import check_config, is_count

    key = model.strip().lower()
    if key in PRESETS:
        return preset(key)
    if model.endswith(".json") or os.path.exists(model):
        return load_config(model)
    if _HUB_ID.match(model.strip()) and not model.startswith(("./", "../")):
        from hal.planner.hub import hub_config

        cfg, where = hub_config(model.strip())
        check_config(cfg, where=where)
        return from_config(cfg, name=model.strip().split("/")[-1], where=where)
    if os.path.sep in model:
        return load_config(model)
    if is_count(model):
        return from_count(parse_count(model), name=model.strip().upper())
    if key.startswith("deepseek"):
        return preset(model)  # a misspelled preset: name the presets
    parse_count(model)  # raises with the list of accepted forms
    raise AssertionError("unreachable")  # pragma: no cover
