"""Decoder families: the per-layer shape facts a config.json leaves implicit, by ``model_type``.

A Hugging Face config gives widths and counts but not which projections carry biases, how many
norms a layer has, whether q and k are normalised, or whether the MLP is gated: those live in
each family's modeling code.  This module holds them as data, read from transformers' modeling
files and checked by tests/test_planner_families.py, which builds every family listed here on
the meta device and compares its parameter count with :func:`hal.planner.models.from_config`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from hal.errors import ConfigError

Norm = Literal["rms", "layer", "none"]  # weight only, weight and bias, no parameters
QKNorm = Literal["", "head", "width", "head_bias"]


@dataclass(frozen=True)
class Family:
    """How one decoder family lays out a layer, beyond what its config.json states.

    A ``None`` bias takes the config's ``bias_field`` (``attention_bias`` unless named).
    ``qk_norm``: ``"head"`` one head_dim weight each for q and k, ``"width"`` weights over the
    whole q and kv widths, ``"head_bias"`` a head_dim LayerNorm (weight and bias) each.
    """

    mlp: Literal["gated", "plain"] = "gated"
    norm: Norm = "rms"
    layer_norms: int = 2  # 2: pre-attention and pre-MLP; 1: a parallel block; 4: sandwich norms
    qk_norm: QKNorm = ""
    qk_norm_field: str = ""  # config flag that switches qk_norm on (empty: always on)
    qkv_bias: bool | None = None
    o_bias: bool | None = None
    mlp_bias: bool | None = None
    bias_field: str = "attention_bias"
    o_bias_field: str = ""  # the output projection's own flag (empty: bias_field)
    mlp_bias_field: str = "mlp_bias"
    lm_head_bias: bool | str = False  # a bool, or the config flag that says
    router_bias: bool = False  # a per-expert score-correction bias stored with the router
    inner_default: int = 0  # MLP width as a multiple of hidden when the config gives none
    falcon: bool = False  # Falcon's fused QKV and norm layout (multi_query, new_decoder_architecture)
    tied_default: bool = False  # tie_word_embeddings when the config does not say (the class default)


LLAMA = Family()
#: Families counted and checked against transformers (tests/test_planner_families.py).
FAMILIES: dict[str, Family] = {
    # Llama-style: RMSNorm x2, gated MLP, biases from attention_bias / mlp_bias
    **{name: LLAMA for name in (
        "llama", "mistral", "mixtral", "granite", "granitemoe", "granitemoeshared", "internlm3",
        "helium", "smollm3", "ernie4_5", "exaone", "minicpm3", "ministral3",
        "vaultgemma", "phi3", "deepseek_v2", "youtu")},
    "gemma": Family(tied_default=True),
    "qwen2": Family(qkv_bias=True, o_bias=False),
    "qwen2_moe": Family(qkv_bias=True, o_bias=False),
    "qwen3": Family(qk_norm="head"),
    "qwen3_moe": Family(qk_norm="head"),
    "exaone4": Family(qk_norm="head"),
    "gemma2": Family(layer_norms=4, tied_default=True),
    "gemma3_text": Family(layer_norms=4, qk_norm="head", tied_default=True),
    "seed_oss": Family(o_bias_field="attention_out_bias"),
    "glm": Family(o_bias=False),
    "glm4": Family(layer_norms=4, o_bias=False),
    "deepseek_v3": Family(router_bias=True),
    "glm4_moe": Family(router_bias=True, o_bias=False),
    "olmo": Family(norm="none"),
    "olmo2": Family(qk_norm="width"),
    "olmo3": Family(qk_norm="width"),
    "flex_olmo": Family(qk_norm="width"),
    "olmoe": Family(qk_norm="width"),
    "cohere": Family(layer_norms=1, qk_norm="width", qk_norm_field="use_qk_norm",
                     tied_default=True),
    "cohere2": Family(layer_norms=1, qk_norm="width", qk_norm_field="use_qk_norm",
                      tied_default=True),
    "stablelm": Family(norm="layer", qk_norm="width", qk_norm_field="qk_layernorm",
                       bias_field="use_qkv_bias", o_bias=False),
    "phimoe": Family(norm="layer", lm_head_bias="lm_head_bias"),
    "starcoder2": Family(mlp="plain", norm="layer", bias_field="use_bias", mlp_bias_field="use_bias",
                         tied_default=True),
    "gpt_neox": Family(mlp="plain", norm="layer", mlp_bias=True),
    "phi": Family(mlp="plain", norm="layer", layer_norms=1, qkv_bias=True, o_bias=True,
                  mlp_bias=True, lm_head_bias=True, qk_norm="head_bias", qk_norm_field="qk_layernorm"),
    "gptj": Family(mlp="plain", norm="layer", layer_norms=1, qkv_bias=False, o_bias=False,
                   mlp_bias=True, lm_head_bias=True, inner_default=4),
    "codegen": Family(mlp="plain", norm="layer", layer_norms=1, qkv_bias=False, o_bias=False,
                      mlp_bias=True, lm_head_bias=True, inner_default=4),
    "falcon": Family(mlp="plain", norm="layer", bias_field="bias", mlp_bias_field="bias",
                     inner_default=4, falcon=True, tied_default=True),
}
#: Other spellings of the same fields (GPT-J/CodeGen, Falcon's original release, GPT-NeoX).
ALIASES: dict[str, str] = {
    "n_embd": "hidden_size", "n_layer": "num_hidden_layers", "n_head": "num_attention_heads",
    "n_inner": "intermediate_size", "n_positions": "max_position_embeddings",
    "ffn_hidden_size": "intermediate_size", "num_kv_heads": "num_key_value_heads",
}
#: Falcon's first release named its model type after its dataset.
MODEL_TYPE_ALIASES = {"RefinedWeb": "falcon", "RefinedWebModel": "falcon"}

#: Fields that mean a structure hal does not count; refused with one line naming the field.
_STATE_SPACE = ("ssm_state_size", "state_size", "mamba_d_state", "mamba_d_ssm",
                "hybrid_override_pattern", "attn_layer_indices", "linear_num_key_heads")
_ATTENTION_TYPES = frozenset({"full_attention", "sliding_attention"})


def canonical(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """``cfg`` with alias names (``n_embd``, ``ffn_hidden_size``...) under their usual names.

    GPT-2's own names are left alone (its counter reads them); Falcon's ``num_kv_heads`` counts
    only with ``new_decoder_architecture``, so :func:`hal.planner.models.from_config` reads it.
    """
    out = dict(cfg)
    model_type = str(out.get("model_type", ""))
    out["model_type"] = MODEL_TYPE_ALIASES.get(model_type, model_type)
    if out["model_type"] in ("gpt2", "gpt_bigcode", "gpt-sw3", "openai-gpt") \
            or ("n_embd" in out and out["model_type"] not in FAMILIES and "hidden_size" not in out):
        return out
    for alias, name in ALIASES.items():
        if out.get(name) is None and out.get(alias) is not None:
            out[name] = out[alias]
    return out


def refuse_unsupported(cfg: Mapping[str, Any], where: str) -> None:
    """Refuse, naming the field, a config whose structure hal's count does not cover."""
    if cfg.get("is_encoder_decoder") is True or "encoder_layers" in cfg:
        key = "is_encoder_decoder" if cfg.get("is_encoder_decoder") is True else "encoder_layers"
        raise ConfigError(f"{where}: field {key!r}: an encoder-decoder model; hal plans "
                          "decoder-only models")
    if "type_vocab_size" in cfg:
        raise ConfigError(f"{where}: field 'type_vocab_size': an encoder (BERT-style) model; hal "
                          "plans decoder-only models")
    for key in _STATE_SPACE:
        if cfg.get(key) is not None:
            raise ConfigError(f"{where}: field {key!r}: state-space or linear-attention layers, "
                              "which hal does not count; expected a transformer decoder")
    layer_types = cfg.get("layer_types")
    if isinstance(layer_types, list):
        other = sorted({str(t) for t in layer_types} - _ATTENTION_TYPES)
        if other:
            raise ConfigError(f"{where}: field 'layer_types' holds {', '.join(map(repr, other[:3]))}"
                              ", layers hal does not count; expected full_attention or "
                              "sliding_attention")


def family(cfg: Mapping[str, Any]) -> tuple[Family, bool]:
    """The family of a canonical config, and whether hal's count is checked for it."""
    found = FAMILIES.get(str(cfg.get("model_type", "")))
    return (found, True) if found is not None else (LLAMA, False)
