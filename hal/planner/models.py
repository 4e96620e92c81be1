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
    moe_layers: int = 0  # MoE: layers with routed experts (R1: 58 of 61; 0: every layer)
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


def _flag(cfg: Mapping[str, Any], fixed: bool | None, key: str) -> bool:
    return fixed if fixed is not None else bool(cfg.get(key, False))


def _norm_params(norm: str, hidden: int) -> int:
    return {"rms": hidden, "layer": 2 * hidden, "none": 0}[norm]


def from_config(cfg: Mapping[str, Any], name: str = "config", where: str = "config") -> ModelSpec:
    """Count parameters and KV-cache width from a Hugging Face ``config.json`` mapping.

    The family's implicit layout (biases, norms a layer, q/k norms, gated or plain MLP) comes
    from :mod:`hal.planner.families` by ``model_type``; MoE experts (Mixtral, Qwen-MoE,
    DeepSeek), multi-head latent attention (DeepSeek-V2/V3) and GPT-2 are counted too.  A
    structure hal does not count (state-space layers, encoders) is refused naming the field.
    """
    from hal.planner import families

    if not isinstance(cfg, Mapping):
        raise ConfigError(f"{where}: expected a JSON object, got {type(cfg).__name__}")
    notes: list[str] = []
    text_cfg = cfg.get("text_config")
    if isinstance(text_cfg, Mapping) and "hidden_size" not in cfg:
        others = sorted(k for k, v in cfg.items() if k.endswith("_config") and k != "text_config"
                        and isinstance(v, Mapping))
        if others:
            notes.append(f"only the language model (text_config) is counted, not {', '.join(others)}")
        cfg = text_cfg
    cfg = families.canonical(cfg)
    families.refuse_unsupported(cfg, where)
    if cfg.get("model_type") in ("gpt2", "gpt_bigcode", "gpt-sw3") \
            or ("n_embd" in cfg and "hidden_size" not in cfg):
        return _gpt2(cfg, name, where)
    fam, checked = families.family(cfg)
    model_type = str(cfg.get("model_type", ""))
    if not checked:
        notes.append(f"model_type {model_type or '(none)'!r} is not among the families hal's count "
                     "is checked against; counted as a Llama-style decoder (RMSNorm, gated MLP)")
    hidden = _need(cfg, "hidden_size", where)
    layers = _need(cfg, "num_hidden_layers", where)
    heads = _need(cfg, "num_attention_heads", where)
    vocab = _need(cfg, "vocab_size", where)
    inter = _opt_int(cfg, "intermediate_size", fam.inner_default * hidden)
    kv_heads = _opt_int(cfg, "num_key_value_heads", heads)
    if fam.falcon and not cfg.get("new_decoder_architecture"):
        kv_heads = 1 if cfg.get("multi_query", True) else heads
    head_dim = _opt_int(cfg, "head_dim", hidden // heads)
    tied = bool(cfg.get("tie_word_embeddings", fam.tied_default))
    norm = _norm_params(fam.norm, hidden)

    embed = vocab * hidden
    lm_head = 0 if tied else vocab * hidden
    lm_bias = fam.lm_head_bias if isinstance(fam.lm_head_bias, bool) \
        else bool(cfg.get(fam.lm_head_bias, False))
    if lm_bias and not tied:
        lm_head += vocab
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
        q_width = heads * head_dim
        kv_width = kv_heads * head_dim
        attn = hidden * q_width + 2 * hidden * kv_width + q_width * hidden
        if _flag(cfg, fam.qkv_bias, fam.bias_field):
            attn += q_width + 2 * kv_width
        if _flag(cfg, fam.o_bias, fam.o_bias_field or fam.bias_field):
            attn += hidden
        if fam.qk_norm and (not fam.qk_norm_field or cfg.get(fam.qk_norm_field)):
            attn += {"head": 2 * head_dim, "width": q_width + kv_width,
                     "head_bias": 4 * head_dim}[fam.qk_norm]
        kv_per_token_layer = 2 * kv_width
        attention = "mha" if kv_heads == heads else ("mqa" if kv_heads == 1 else "gqa")
        if attention != "mha":
            notes.append(f"{attention.upper()}: {kv_heads} KV heads for {heads} query heads; KV "
                         f"cache per token per layer = 2 x {kv_heads} x {head_dim} "
                         f"= {kv_per_token_layer} elements")
    layer_norms = fam.layer_norms
    if fam.falcon:
        two = cfg.get("num_ln_in_parallel_attn") == 2 or (
            cfg.get("num_ln_in_parallel_attn") is None and bool(cfg.get("new_decoder_architecture")))
        layer_norms = 2 if not cfg.get("parallel_attn", True) or two else 1
    elif model_type == "stablelm" and cfg.get("use_parallel_residual"):
        layer_norms = 1
    per_layer_norms = layer_norms * norm

    # -- MLP / experts, per layer
    mats = 3 if fam.mlp == "gated" else 2
    mlp_bias = _flag(cfg, fam.mlp_bias, fam.mlp_bias_field)
    dense_mlp = mats * hidden * inter + ((mats - 1) * inter + hidden if mlp_bias else 0)
    n_routed = _opt_int(cfg, "n_routed_experts", 0) or _opt_int(cfg, "num_local_experts", 0) \
        or _opt_int(cfg, "num_experts", 0)
    kind = "dense"
    top_k = routed = 0
    if n_routed > 1:
        kind = "moe"
        top_k_value = cfg.get("num_experts_per_tok")
        expert_inter = _opt_int(cfg, "moe_intermediate_size", inter)
        if expert_inter <= 0:
            raise ConfigError(f"{where}: field 'moe_intermediate_size' or 'intermediate_size' "
                              "is missing; expected a positive integer")
        if top_k_value is None:
            top_k = n_routed
            notes.append("num_experts_per_tok is null: active parameters counted with every "
                         "routed expert (an upper bound); give the model's top-k for the real figure")
        else:
            top_k = _need(cfg, "num_experts_per_tok", where)
        expert = mats * hidden * expert_inter
        n_shared = _opt_int(cfg, "n_shared_experts", 0)
        shared_inter = _opt_int(cfg, "shared_expert_intermediate_size", 0)
        shared = n_shared * expert + (3 * hidden * shared_inter + hidden if shared_inter else 0)
        router_bias = fam.router_bias or cfg.get("topk_method") == "noaux_tc"
        router = hidden * n_routed + (n_routed if router_bias else 0)
        first_dense = min(layers, _opt_int(cfg, "first_k_dense_replace", 0))
        step = max(1, _opt_int(cfg, "decoder_sparse_step", 1))
        mlp_only = cfg.get("mlp_only_layers") or []
        mlp_only = set(mlp_only) if isinstance(mlp_only, list) else set()
        moe_layers = sum(1 for i in range(first_dense, layers)
                         if i not in mlp_only and (i + 1) % step == 0)
        dense_layers = layers - moe_layers
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
                     + (f"; {dense_layers} of {layers} layers dense" if dense_layers else ""))
    else:
        if inter <= 0:
            raise ConfigError(f"{where}: field 'intermediate_size' is missing; expected a "
                              "positive integer")
        mlp_total = mlp_active = layers * dense_mlp
        moe_layers = 0
        active_inter = inter

    body_common = layers * (attn + per_layer_norms) + norm  # + the final norm
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
        routed_params=routed, moe_layers=moe_layers, source=where,
        notes=tuple(notes),
    )


def _gpt2(cfg: Mapping[str, Any], name: str, where: str) -> ModelSpec:
    """GPT-2 and GPT-BigCode (its multi-query variant): learned positions, biases everywhere."""
    hidden = _need(cfg, "n_embd", where)
    layers = _need(cfg, "n_layer", where)
    heads = _need(cfg, "n_head", where)
    vocab = _need(cfg, "vocab_size", where)
    positions = _opt_int(cfg, "n_positions", 1024)
    inter = _opt_int(cfg, "n_inner", 4 * hidden)
    mqa = bool(cfg.get("multi_query", False)) and cfg.get("model_type") == "gpt_bigcode"
    kv_width = hidden // heads if mqa else hidden
    embed = vocab * hidden + positions * hidden
    qkv = hidden + 2 * kv_width
    per_layer = (4 * hidden  # two LayerNorms, weight and bias
                 + hidden * qkv + qkv + hidden * hidden + hidden  # attention
                 + 2 * hidden * inter + inter + hidden)  # MLP with biases
    total = embed + layers * per_layer + 2 * hidden
    return ModelSpec(
        name=name, kind="dense", params_total=total, params_active=total,
        embedding_params=embed, lm_head_params=0, num_layers=layers, hidden_size=hidden,
        intermediate_size=inter, vocab_size=vocab, num_heads=heads,
        num_kv_heads=1 if mqa else heads, head_dim=hidden // heads,
        attention="mqa" if mqa else "mha", kv_per_token_layer=2 * kv_width,
        full_layers=layers, max_context=positions, source=where,
        notes=("GPT-2: learned positions, tied lm_head, non-gated MLP"
               + (", one KV head (multi-query)" if mqa else ""),),
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
