"""Weight formats: bits a weight against published file sizes and format specs; conversions."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from hal.errors import ConfigError
from hal.planner.catalogue import catalogue
from hal.planner.estimate import dtype_name, estimate
from hal.planner.formats import (
    FORMATS,
    PUBLISHED,
    FormatError,
    bytes_for,
    for_card,
    get,
    model_bytes,
    native_on,
)
from hal.planner.models import preset
from hal.planner.planning import plan

R1 = preset("deepseek-r1")
CARDS = {a.id: a for a in catalogue(plugins=False)}


def test_r1_q4_k_m_weights_come_out_as_published_not_one_int4_figure() -> None:
    published, _ = PUBLISHED[("deepseek-r1", "q4_k_m")]
    got = model_bytes("q4_k_m", R1).total
    assert abs(got / published - 1) < 0.02  # 402.6 GB against 404 GB
    assert model_bytes("int4", R1).total < 0.9 * published  # the old single "int4" figure


@pytest.mark.parametrize("name", ["ud-iq1_s", "ud-iq1_m", "ud-iq2_xxs", "ud-q2_k_xl"])
def test_unsloth_dynamic_r1_quants_match_their_published_sizes(name: str) -> None:
    published, _ = PUBLISHED[("deepseek-r1", name)]
    got = model_bytes(name, R1).total
    assert abs(got / published - 1) < 0.08, (name, got / 2**30)


@pytest.mark.parametrize("model, name, published_gb", [
    ("deepseek-r1-distill-llama-8b", "q4_k_m", 4.92),  # Llama-3.1-8B, bartowski's GGUF card
    ("deepseek-r1-distill-llama-8b", "q8_0", 8.54),
    ("deepseek-r1-distill-llama-8b", "q6_k", 6.60),
    ("deepseek-r1-distill-llama-70b", "q4_k_m", 42.52),  # Llama-3.3-70B, bartowski's GGUF card
])
def test_gguf_mixes_match_published_files_of_dense_models(model: str, name: str,
                                                          published_gb: float) -> None:
    got = model_bytes(name, preset(model)).total / 1e9
    assert abs(got / published_gb - 1) < 0.05, got


@pytest.mark.parametrize("name, bits", [
    ("fp8", 8 + 32 / (128 * 128)),  # e4m3 + one fp32 scale per 128x128 block
    ("awq", 4 + (16 + 4) / 128),  # int4 + fp16 scale and 4-bit zero per 128
    ("gptq-g32", 4 + (16 + 4) / 32),
    ("nvfp4", 4 + 8 / 16),  # e2m1 + e4m3 scale per 16
    ("mxfp4", 4 + 8 / 32),  # e2m1 + e8m0 scale per 32
    ("q8_0", 8.5), ("q4_0", 4.5), ("int8", 8 + 16 / 128), ("w8a8", 8.0),
])
def test_fixed_structure_formats_take_their_spec_bits(name: str, bits: float) -> None:
    assert get(name).bits_per_weight == pytest.approx(bits)


def test_quantized_formats_keep_embeddings_but_gguf_quantizes_them() -> None:
    awq = bytes_for("awq", 1000, kept=200)
    assert awq.weights == pytest.approx(800 * 4 / 8 + 200 * 2)
    gguf = bytes_for("q8_0", 1000, kept=200)
    assert gguf.weights == pytest.approx(1000 * 8.5 / 8)
    ud = bytes_for("ud-iq1_s", 1000, kept=100, routed=800)
    assert ud.weights == pytest.approx(100 * 5.5 / 8 + 800 * get("ud-iq1_s").bits_per_weight / 8
                                       + 100 * 5.5 / 8)


def test_every_format_has_a_source_and_parses_in_any_spelling() -> None:
    for f in FORMATS.values():
        assert f.source, f.name
        assert dtype_name(f.name) == f.name
        assert dtype_name(f.name.upper().replace("-", "_")) == f.name
    assert dtype_name("UD-IQ1_S") == "ud-iq1_s" and dtype_name("float8_e4m3fn") == "fp8"


def test_an_unknown_format_is_one_line_naming_the_formats() -> None:
    with pytest.raises(ConfigError) as err:
        dtype_name("q9_k")
    assert "q4_k_m" in str(err.value) and "\n" not in str(err.value)


def test_estimate_sizes_r1_in_q4_k_m_and_splits_it_over_tensor_parallel() -> None:
    one = estimate(R1, dtype="q4_k_m")
    assert abs(one.weights + one.weight_scales - model_bytes("q4_k_m", R1).total) < 1
    eight = estimate(R1, dtype="q4_k_m", tensor_parallel=8)
    assert eight.weights == pytest.approx(one.weights / 8, rel=1e-6)


@pytest.mark.parametrize("card, fmt, native", [
    ("h100-sxm", "fp8", True), ("mi300x", "fp8", True), ("a100-80gb-sxm", "fp8", False),
    ("ascend-910b3", "fp8", False), ("b200", "nvfp4", True), ("mi355x", "mxfp4", True),
    ("h100-sxm", "nvfp4", False), ("v100-sxm2-32gb", "bf16", False), ("v100-sxm2-32gb", "w8a8", False),
    ("rtx-3090", "q4_k_m", True), ("ascend-910b3", "awq", True), ("a100-80gb-sxm", "w8a8", True),
])
def test_native_on_reads_the_cards_native_dtypes(card: str, fmt: str, native: bool) -> None:
    assert native_on(fmt, CARDS[card]) is native


def test_fp8_on_a_card_without_fp8_is_converted_with_the_reason() -> None:
    to_int8 = for_card("fp8", CARDS["ascend-910b3"])
    assert to_int8.converted and to_int8.used == "w8a8" and "no fp8 compute" in to_int8.reason
    to_16 = for_card("fp8", CARDS["v100-sxm2-32gb"])  # no fp8, no int8, no bf16
    assert to_16.used == "fp16" and "twice the bytes" in to_16.reason
    assert not for_card("fp8", CARDS["h100-sxm"]).converted
    fp4 = for_card("nvfp4", CARDS["h100-sxm"])  # weight-only kernels: same checkpoint
    assert not fp4.converted
    with pytest.raises(FormatError) as err:
        for_card("fp8", CARDS["a100-80gb-sxm"], convert=False)
    assert "w8a8" in str(err.value) and "native fp8" in str(err.value)


def test_plan_rows_say_which_cards_convert_and_refuse_with_no_convert() -> None:
    p = plan("deepseek-r1", "fp8", local=False, cards=["a100-80gb-sxm", "h100-sxm"],
             formats=("fp8",))
    rows = {pl.card.id: pl for pl in p.placements}
    assert rows["a100-80gb-sxm"].converted_to == "w8a8" and rows["a100-80gb-sxm"].config.endswith("as w8a8")
    assert rows["h100-sxm"].converted_to == ""
    assert any("a100-80gb-sxm" in line and "w8a8" in line for line in p.assumptions)
    strict = plan("deepseek-r1", "fp8", local=False, cards=["a100-80gb-sxm", "h100-sxm"],
                  formats=("fp8",), convert=False)
    rows = {pl.card.id: pl for pl in strict.placements}
    assert not rows["a100-80gb-sxm"].feasible and "--no-convert" in rows["a100-80gb-sxm"].reason
    assert rows["h100-sxm"].feasible


def test_cli_no_convert_on_a_card_without_fp8_is_one_line_exit_2() -> None:
    out = subprocess.run([sys.executable, "-m", "hal", "plan", "deepseek-r1", "--dtype", "fp8",
                          "--cards", "a100-80gb-sxm", "--no-local", "--no-convert"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "w8a8" in lines[0] and "Traceback" not in out.stderr
    ok = subprocess.run([sys.executable, "-m", "hal", "plan", "deepseek-r1", "--dtype", "Q4_K_M",
                         "--cards", "rtx-3090", "--no-local", "--json"],
                        capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["estimate"]["dtype"] == "q4_k_m"
