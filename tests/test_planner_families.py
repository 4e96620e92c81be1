"""hal's parameter count against transformers' own, for every decoder family hal lists.

Each family is built from transformers' default config on the meta device (no memory, no
weights) at two small layer counts; the difference checks hal's per-layer count and the rest
its embedding, head and final-norm count, exactly.  The reference is what a checkpoint stores:
unique parameters plus persistent buffers (DeepSeek-V3's per-expert score-correction bias is a
buffer in transformers and a tensor in the released safetensors).
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest

from hal.errors import ConfigError
from hal.planner.configfile import check_config
from hal.planner.families import FAMILIES
from hal.planner.models import from_config

transformers = pytest.importorskip("transformers")
torch = pytest.importorskip("torch")

#: Layer-count field of configs that use GPT-2's names.
_LAYER_KEY = {"gpt2": "n_layer", "gpt_bigcode": "n_layer", "gptj": "n_layer", "codegen": "n_layer"}
FAMILY_TYPES = [*sorted(FAMILIES), "gpt2", "gpt_bigcode"]


def _config(model_type: str, **overrides: Any) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return transformers.AutoConfig.for_model(model_type, **overrides)


def _stored(config: Any) -> tuple[int, int]:
    """(tensor elements a checkpoint of this model stores, input-embedding elements)."""
    logging.getLogger("transformers").setLevel(logging.ERROR)
    with warnings.catch_warnings(), torch.device("meta"):
        warnings.simplefilter("ignore")
        model = transformers.AutoModelForCausalLM.from_config(config)
    seen: set[int] = set()
    total = 0
    for tensor in model.state_dict(keep_vars=True).values():
        if id(tensor) not in seen:
            seen.add(id(tensor))
            total += tensor.numel()
    return total, model.get_input_embeddings().weight.numel()


@pytest.mark.parametrize("model_type", FAMILY_TYPES)
def test_parameter_count_is_exact_against_transformers(model_type: str) -> None:
    base = _config(model_type)
    first = getattr(base, "first_k_dense_replace", 0) or 0
    key = _LAYER_KEY.get(model_type, "num_hidden_layers")
    counts = {}
    for layers in (first + 1, first + 2):
        config = _config(model_type, **{key: layers})
        if model_type == "glm4_moe":  # its default: 96 heads over hidden 4096, head_dim null
            with pytest.raises(ConfigError, match="does not divide"):
                check_config(config.to_dict())
        else:
            check_config(config.to_dict())  # what hal plan PATH runs first
        spec = from_config(config.to_dict())
        stored, embedding = _stored(config)
        counts[layers] = (spec.params_total, stored)
        assert spec.num_layers == layers
        if model_type not in ("gpt2", "gpt_bigcode"):  # GPT-2 counts learned positions too
            assert spec.embedding_params == embedding
    (hal_a, tf_a), (hal_b, tf_b) = counts[first + 1], counts[first + 2]
    assert hal_b - hal_a == tf_b - tf_a, "per-layer count"
    assert hal_a == tf_a, "embeddings, head and final norm"


def test_the_families_cover_the_ones_the_issue_names() -> None:
    named = {"deepseek_v2", "deepseek_v3", "falcon", "gemma2", "gemma3_text", "qwen3", "qwen3_moe",
             "phi3", "gpt2", "mixtral", "llama", "mistral", "qwen2"}
    assert named <= set(FAMILY_TYPES)
    assert len(FAMILY_TYPES) >= 20


def test_deepseek_v2_default_with_null_top_k_counts_and_bounds_the_active_share() -> None:
    config = _config("deepseek_v2").to_dict()
    assert config["num_experts_per_tok"] is None  # transformers' default, as the issue says
    spec = from_config(config)
    assert spec.kind == "moe" and spec.params_active == spec.params_total
    assert any("num_experts_per_tok is null" in note for note in spec.notes)
    spec6 = from_config({**config, "num_experts_per_tok": 6})
    assert spec6.params_total == spec.params_total > spec6.params_active


def test_falcon_7b_as_released_counts_as_transformers_default() -> None:
    """tiiuae/falcon-7b's original config.json: RefinedWebModel names, n_head/n_layer."""
    released = {"model_type": "RefinedWebModel", "hidden_size": 4544, "n_head": 71, "n_layer": 32,
                "multi_query": True, "parallel_attn": True, "bias": False, "alibi": False,
                "vocab_size": 65024}
    spec = from_config(released)
    assert spec.params_total == _stored(_config("falcon"))[0] == 6_921_720_704
    assert spec.attention == "mqa" and spec.num_kv_heads == 1


@pytest.mark.parametrize("model_type, field", [
    ("bert", "type_vocab_size"), ("bart", "is_encoder_decoder"), ("mamba", "state_size"),
    ("qwen3_next", "linear_num_key_heads"), ("falcon_h1", "mamba_d_state")])
def test_a_family_hal_cannot_count_is_one_line_naming_the_field(model_type: str, field: str) -> None:
    with pytest.raises(ConfigError) as err:
        from_config(_config(model_type).to_dict())
    message = str(err.value)
    assert f"'{field}'" in message and "\n" not in message


def test_hal_plan_on_a_state_space_config_file_is_one_line_exit_2(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(_config("mamba").to_dict()), encoding="utf-8")
    out = subprocess.run([sys.executable, "-m", "hal", "plan", str(path), "--no-local"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "'state_size'" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_an_unlisted_family_is_counted_with_a_note_saying_so() -> None:
    config = {**_config("llama", num_hidden_layers=2).to_dict(), "model_type": "some_new_llama"}
    spec = from_config(config)
    assert spec.params_total == from_config(_config("llama", num_hidden_layers=2).to_dict()).params_total
    assert any("'some_new_llama' is not among the families" in note for note in spec.notes)
