"""The memory planner's arithmetic: rule-of-thumb weights, KV cache, MoE, training, fit."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from hal.errors import ConfigError
from hal.planner import estimate, kv_cache_bytes, preset, resolve
from hal.planner.catalogue import find
from hal.planner.estimate import WEIGHT_FORMATS
from hal.planner.fit import fits, max_batch, max_context
from hal.planner.models import from_config, load_config

MIXTRAL_8X7B = {  # mistralai/Mixtral-8x7B-v0.1 config.json
    "model_type": "mixtral", "hidden_size": 4096, "intermediate_size": 14336,
    "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
    "vocab_size": 32000, "num_local_experts": 8, "num_experts_per_tok": 2,
    "tie_word_embeddings": False, "sliding_window": None,
}
LLAMA_8B = preset("deepseek-r1-distill-llama-8b")


@pytest.mark.parametrize(("dtype", "expected"), [
    ("fp32", 52_000_000_000), ("fp16", 26_000_000_000), ("bf16", 26_000_000_000),
    ("int8", 13_000_000_000), ("int4", 6_500_000_000),
])
def test_rule_of_thumb_weights_for_13b_come_out_exactly(dtype: str, expected: int) -> None:
    assert estimate("13B", dtype=dtype).weights == expected


def test_quantization_scales_are_stated_separately() -> None:
    est = estimate("13B", dtype="int4")
    assert est.weight_scales == 13_000_000_000 * 16 // 128 // 8  # one fp16 per 128 weights
    assert WEIGHT_FORMATS["int4"].bits_per_weight == 4.125
    assert estimate("13B", dtype="fp16").weight_scales == 0
    assert any("4.125 bits a weight" in n for n in est.notes)


def test_quantized_formats_leave_embeddings_and_lm_head_in_16_bit() -> None:
    spec = LLAMA_8B
    kept = spec.embedding_params + spec.lm_head_params
    assert kept == 2 * 128256 * 4096
    assert estimate(spec, dtype="int4").weights == (spec.params_total - kept) // 2 + kept * 2


def test_kv_cache_per_token_of_a_gqa_model_from_its_config() -> None:
    # 32 layers x (K and V) x 8 KV heads x 128 head dim x 2 bytes
    assert kv_cache_bytes(LLAMA_8B, batch=1, context=1, kv_dtype="fp16") == 32 * 2 * 8 * 128 * 2
    assert kv_cache_bytes(LLAMA_8B, batch=3, context=1000, kv_dtype="fp8") == \
        3 * 1000 * 32 * 2 * 8 * 128


def test_kv_cache_per_token_of_an_mla_model_from_its_config() -> None:
    v3 = preset("deepseek-v3")
    assert v3.attention == "mla"
    # 61 layers x (kv_lora_rank 512 + qk_rope_head_dim 64) x 2 bytes
    assert kv_cache_bytes(v3, batch=1, context=1, kv_dtype="bf16") == 61 * (512 + 64) * 2


def test_sliding_window_layers_cache_only_the_window() -> None:
    mistral = from_config({**MIXTRAL_8X7B, "num_local_experts": 0, "sliding_window": 4096})
    full = from_config({**MIXTRAL_8X7B, "num_local_experts": 0})
    assert kv_cache_bytes(mistral, 1, 8192) == kv_cache_bytes(full, 1, 4096)
    assert kv_cache_bytes(mistral, 1, 2048) == kv_cache_bytes(full, 1, 2048)
    qwen = {"model_type": "qwen2", "hidden_size": 512, "intermediate_size": 1024,
            "num_hidden_layers": 8, "num_attention_heads": 8, "num_key_value_heads": 2,
            "vocab_size": 1000, "sliding_window": 100, "max_window_layers": 6}
    on = from_config({**qwen, "use_sliding_window": True})
    off = from_config({**qwen, "use_sliding_window": False})
    assert (on.window_layers, on.full_layers) == (2, 6)
    per_layer = 2 * 2 * 64 * 2
    assert kv_cache_bytes(on, 1, 1000) == per_layer * (6 * 1000 + 2 * 100)
    assert kv_cache_bytes(off, 1, 1000) == per_layer * 8 * 1000


def test_moe_totals_mixtral_total_and_active() -> None:
    spec = from_config(MIXTRAL_8X7B)
    assert spec.kind == "moe"
    assert spec.params_total == pytest.approx(46.7e9, rel=0.005)  # published 46.7B
    assert spec.params_active == pytest.approx(12.9e9, rel=0.005)  # published 12.9B


def test_deepseek_v3_and_r1_presets_are_671b_with_37b_active() -> None:
    for name in ("deepseek-v3", "deepseek-r1"):
        spec = preset(name)
        assert spec.params_total == pytest.approx(671e9, rel=0.002)
        assert spec.params_active == pytest.approx(37e9, rel=0.03)
        assert spec.moe_layers == 58  # first_k_dense_replace 3: the first 3 of 61 are dense
    assert from_config(MIXTRAL_8X7B).moe_layers == 32  # every layer routes


@pytest.mark.parametrize(("name", "published"), [
    ("deepseek-r1-distill-qwen-1.5b", 1.78e9), ("deepseek-r1-distill-qwen-7b", 7.62e9),
    ("deepseek-r1-distill-qwen-14b", 14.8e9), ("deepseek-r1-distill-qwen-32b", 32.8e9),
    ("deepseek-r1-distill-llama-8b", 8.03e9), ("deepseek-r1-distill-llama-70b", 70.6e9),
])
def test_distill_presets_match_published_parameter_counts(name: str, published: float) -> None:
    assert preset(name).params_total == pytest.approx(published, rel=0.005)


def test_mixed_precision_adam_is_16_bytes_a_parameter_before_activations() -> None:
    for dtype in ("bf16", "fp16", "fp32"):
        est = estimate("1B", dtype=dtype, mode="train", context=128)
        assert est.weights + est.gradients + est.optimizer == 16 * 10**9
        assert est.kv_cache == 0 and est.activations > 0


def test_training_totals_and_checkpointing() -> None:
    plain = estimate(LLAMA_8B, dtype="bf16", mode="train", batch=4, context=4096)
    ckpt = estimate(LLAMA_8B, dtype="bf16", mode="train", batch=4, context=4096,
                    checkpointing=True)
    assert plain.total == sum(plain.terms.values())
    assert ckpt.activations < plain.activations / 4
    assert ckpt.weights + ckpt.gradients + ckpt.optimizer == 16 * LLAMA_8B.params_total
    with pytest.raises(ConfigError, match="int4"):
        estimate(LLAMA_8B, dtype="int4", mode="train")


def test_total_is_the_sum_and_grows_with_batch_and_context() -> None:
    a = estimate(LLAMA_8B, batch=1, context=1024)
    assert a.total == sum(a.terms.values())
    assert estimate(LLAMA_8B, batch=2, context=1024).total > a.total
    assert estimate(LLAMA_8B, batch=1, context=2048).total > a.total


def test_materialized_attention_adds_two_score_matrices_on_the_attention_side() -> None:
    gpt2 = {"model_type": "gpt2", "n_embd": 768, "n_layer": 12, "n_head": 12,
            "vocab_size": 50257, "n_positions": 1024}
    fused = estimate(gpt2, dtype="fp32", batch=4, context=512, runtime_bytes=0)
    eager = estimate(gpt2, dtype="fp32", batch=4, context=512, runtime_bytes=0,
                     attention="materialized")
    h, tokens, logits = 768, 4 * 512, 4 * 50257 * 8
    mlp, attn = tokens * (2 * h + 16 * h) * 4, tokens * (3 * h + 3 * h + h) * 4
    scores = 4 * 12 * 512 * 512 * (4 + 4)  # batch x heads x query x key, scores + softmax
    assert fused.activations == max(mlp, attn) + logits
    assert eager.activations == max(mlp, attn + scores) + logits
    assert eager.kv_cache == fused.kv_cache and eager.weights == fused.weights


def test_tensor_parallel_is_per_device() -> None:
    one = estimate(LLAMA_8B, dtype="bf16", context=8192, runtime_bytes=0)
    two = estimate(LLAMA_8B, dtype="bf16", context=8192, tensor_parallel=2, runtime_bytes=0)
    assert two.weights == one.weights // 2
    assert two.kv_cache == one.kv_cache // 2
    v3 = estimate("deepseek-v3", dtype="fp8", context=8192, tensor_parallel=8)
    assert v3.kv_cache == estimate("deepseek-v3", dtype="fp8", context=8192).kv_cache  # replicated


def test_fits_and_max_batch_and_max_context_agree_with_estimate() -> None:
    card = find("rtx-4090")
    est = estimate("deepseek-r1-distill-qwen-14b", dtype="int4", context=32768)
    assert fits(est, card).fits_total
    assert not fits(estimate("deepseek-r1-distill-qwen-14b", dtype="bf16"), card).fits_total
    n = max_context("deepseek-r1-distill-qwen-14b", card, dtype="int4")
    assert estimate("deepseek-r1-distill-qwen-14b", dtype="int4", context=n).total \
        <= card.memory_bytes
    assert estimate("deepseek-r1-distill-qwen-14b", dtype="int4", context=n + 1).total \
        > card.memory_bytes
    b = max_batch(LLAMA_8B, card, context=4096, dtype="int4")
    assert b >= 1
    assert estimate(LLAMA_8B, dtype="int4", batch=b, context=4096).total <= card.memory_bytes
    assert estimate(LLAMA_8B, dtype="int4", batch=b + 1, context=4096).total > card.memory_bytes
    assert max_batch("deepseek-v3", card, dtype="int4") == 0


@pytest.mark.parametrize(("model", "kwargs", "named"), [
    ("13X", {}, "'13X'"), ("13B", {"batch": -1}, "batch -1"), ("13B", {"context": 0},
    "context 0"), ("13B", {"dtype": "fp7"}, "'fp7'"), ("13B", {"kv_dtype": "q3"}, "'q3'"),
    ("deepseek-r9", {}, "deepseek-r1-distill-qwen-14b"), ("0B", {}, "'0B'"),
    ("13B", {"attention": "flash"}, "'flash'"),
])
def test_bad_input_is_a_one_line_config_error(model: str, kwargs: dict[str, object],
                                              named: str) -> None:
    with pytest.raises(ConfigError) as info:
        estimate(model, **kwargs)  # type: ignore[arg-type]
    assert named in str(info.value) and "\n" not in str(info.value)


def test_config_files_that_are_not_json_or_lack_fields(tmp_path: Path) -> None:
    bad = tmp_path / "config.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="not JSON"):
        load_config(str(bad))
    bad.write_text(json.dumps({"hidden_size": 512, "num_attention_heads": 8}))
    with pytest.raises(ConfigError, match="num_hidden_layers"):
        resolve(str(bad))
    with pytest.raises(ConfigError, match="cannot be read"):
        resolve(str(tmp_path / "missing" / "config.json"))
    good = tmp_path / "m"
    good.mkdir()
    (good / "config.json").write_text(json.dumps(MIXTRAL_8X7B))
    assert resolve(str(good)).kind == "moe"


def test_planner_and_catalogue_do_not_import_torch() -> None:
    code = ("import sys, hal.planner, hal.planner.fit, hal.planner.catalogue as c;"
            "hal.planner.estimate('deepseek-r1', dtype='int4');"
            "assert len(c.catalogue(plugins=False)) >= 20;"
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


@pytest.mark.parametrize(("dtype", "published_gb"), [("fp16", 28.0), ("int4", 9.0)])
def test_seed_figures_for_13b_on_an_a100_at_batch_4(dtype: str, published_gb: float) -> None:
    # "an A100 serving 13B in fp16 at batch 4 needs about 28 GB, about 9 GB in 4-bit": at
    # context 512 (prompt + reply of a chat turn), GB = 10^9 bytes, runtime context included
    est = estimate("13B", dtype=dtype, batch=4, context=512)
    assert est.total / 1e9 == pytest.approx(published_gb, rel=0.10)
    assert est.total <= find("a100-40gb-sxm").memory_bytes


def test_every_dtype_name_the_registry_sizes_parses_for_the_planner() -> None:
    from hal import dtypes

    for name in dtypes.names(dtypes.WEIGHTS):
        assert estimate("1B", dtype=name).dtype in WEIGHT_FORMATS
    assert estimate("7B", dtype="float8_e4m3fnuz").dtype == "fp8"
    assert estimate("7B", dtype="torch.bfloat16").dtype == "bf16"
