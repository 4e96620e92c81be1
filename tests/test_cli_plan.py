"""``hal plan`` through real subprocesses: the report, JSON, the torch-free path, bad input."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hal.planner import estimate
from hal.planner.speed import engines

EXAMPLE = ["deepseek-r1-distill-qwen-14b", "--dtype", "int4", "--context", "32768"]


def hal_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HAL_DEVICE": "cpu"}
    return subprocess.run([sys.executable, "-m", "hal", "plan", *args], capture_output=True,
                          text=True, timeout=120, env=env)


def test_the_issue_example_prints_breakdown_local_fit_and_cards() -> None:
    out = hal_cli(*EXAMPLE, "--all")
    assert out.returncode == 0, out.stderr
    text = out.stdout
    for needle in ("weights", "weight scales", "kv cache", "activations", "overhead", "total",
                   "local devices", "cpu:0", "NVIDIA GeForce RTX 4090", "int4 *",
                   "decode tok/s (est.)", "efficiency factors", "assumptions",
                   "how each term is computed", "4.125 bits a weight"):
        assert needle in text, needle
    assert text.startswith("deepseek-r1-distill-qwen-14b (int4 weights, context 32,768")
    assert "\x1b[" not in text  # plain text when piped


def test_json_matches_the_api_and_says_how_much_context_fits() -> None:
    out = hal_cli(*EXAMPLE, "--json", "--all")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["schema"] == "hal.plan/3"
    api = estimate("deepseek-r1-distill-qwen-14b", dtype="int4", context=32768)
    assert data["estimate"]["total"] == api.total
    assert data["local"] and data["local"][0]["backend"] == "cpu"
    cells = {(c["card"], c["dtype"]): c for c in data["placements"]}
    cell = cells["rtx-4090", "int4"]
    assert cell["count"] == 1 and cell["max_context"] >= 32768
    assert cells["rtx-4090", "bf16"]["count"] == 2  # bf16 needs two 24 GB cards
    assert cells["h200-sxm", "bf16"]["count"] == 1
    assert data["answer"] and data["ranking"]["rows"]


def test_deepseek_r1_fp8_names_the_smallest_configuration_per_card() -> None:
    out = hal_cli("deepseek-r1", "--dtype", "fp8", "--context", "32768", "--no-local", "--all")
    assert out.returncode == 0, out.stderr
    rows = {line.split("  ")[1].strip(): line for line in out.stdout.splitlines()
            if line.startswith("  NVIDIA H")}
    assert "8 (TP 8)" in rows["NVIDIA H200 SXM 141GB"]
    assert "16 (TP 8 x PP 2)" in rows["NVIDIA H100 SXM 80GB"]
    data = json.loads(hal_cli("deepseek-r1", "--dtype", "fp8", "--context", "32768",
                              "--no-local", "--json", "--all").stdout)
    h200 = next(c for c in data["placements"] if c["card"] == "h200-sxm" and c["dtype"] == "fp8")
    assert h200["config"] == "8 x NVIDIA H200 SXM 141GB (TP 8)"
    assert [f["count"] for f in h200["fails"]] == [1, 2, 4]
    assert h200["speed"]["decode_tokens_s"] > 0 and h200["speed"]["prefill_s"] > 0


@pytest.mark.parametrize("by", ["speed", "power", "memory"])
def test_rank_prints_one_table_best_first_with_the_answer_on_top(by: str) -> None:
    out = hal_cli("deepseek-r1-distill-llama-70b", "--dtype", "int4", "--context", "8192",
                  "--rank", by, "--no-local", "--cards", "h100-sxm,a100-80gb-sxm,rtx-4090,mi300x",
                  "--all")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    first = {"speed": "fastest", "power": "most tokens a joule", "memory": "least memory"}[by]
    assert first in lines[0]
    assert any(line.startswith(f"ranking by {by}") for line in lines)
    assert "cards: how many" not in out.stdout
    ranked = [line for line in lines if line.startswith(("  1 ", "  2 ", "  3 ", "  4 "))]
    assert len(ranked) == 4


def test_contradictory_rank_flags_are_one_line_exit_2() -> None:
    out = hal_cli("13B", "--rank", "speed", "--no-local", "--cards", "none")
    assert out.returncode == 2
    assert len(out.stderr.strip().splitlines()) == 1 and "nothing to rank" in out.stderr


def test_plot_without_matplotlib_names_the_extra(tmp_path: Path) -> None:
    shadow = tmp_path / "shadow" / "matplotlib"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('no matplotlib here')\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "shadow")}
    out = subprocess.run([sys.executable, "-m", "hal", "plan", "13B", "--no-local", "--plot",
                          str(tmp_path / "x.png")], capture_output=True, text=True, timeout=120,
                         env=env)
    assert out.returncode == 2
    root = Path(__file__).resolve().parent.parent  # a checkout: the hint installs from it, quoted
    assert out.stderr.strip() in (f"hal: error: --plot needs matplotlib: pip install -e '{w}[plot]'"
                                  for w in (".", root))
    out = hal_cli("13B", "--no-local", "--plot", str(tmp_path / "x.gif"))
    assert out.returncode == 2 and ".png or .svg" in out.stderr


@pytest.mark.skipif(importlib.util.find_spec("matplotlib") is None,
                    reason="needs matplotlib (pip install torch-hal[plot])")
@pytest.mark.parametrize("suffix", [".png", ".svg"])
def test_plot_writes_a_picture(tmp_path: Path, suffix: str) -> None:
    target = tmp_path / f"plan{suffix}"
    out = hal_cli("deepseek-r1", "--dtype", "fp8", "--context", "32768", "--no-local",
                  "--rank", "speed", "--plot", str(target))
    assert out.returncode == 0, out.stderr
    data = target.read_bytes()
    if suffix == ".png":
        assert data.startswith(b"\x89PNG") and len(data) > 20_000
    else:
        text = data.decode()
        for needle in ("decode tokens/s a sequence", "context (tokens)", "GiB",
                       "upper bound", "KV cache", "hal plan deepseek-r1"):
            assert needle in text, needle


def test_no_local_answers_without_torch_or_a_device_probe() -> None:
    code = ("import sys, io, contextlib; from hal.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            f"    rc = main(['plan', *{EXAMPLE!r}, '--no-local'])\n"
            "assert rc == 0\n"
            "assert 'torch' not in sys.modules, 'torch imported'\n"
            "assert 'hal.selection' not in sys.modules, 'device probe ran'\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_train_and_tensor_parallel_flags() -> None:
    out = hal_cli("deepseek-r1-distill-llama-8b", "--train", "--checkpointing", "--json",
                  "--no-local", "--context", "2048", "--all")
    assert out.returncode == 0, out.stderr
    est = json.loads(out.stdout)["estimate"]
    assert est["mode"] == "train" and est["optimizer"] > 0 and est["kv_cache"] == 0
    tp = json.loads(hal_cli("deepseek-r1", "--dtype", "fp8", "--tensor-parallel", "8",
                            "--json", "--no-local", "--all").stdout)["estimate"]
    assert tp["tensor_parallel"] == 8


@pytest.mark.parametrize(("args", "named"), [
    (["13X"], "'13X'"),
    (["13B", "--batch", "-1"], "batch -1"),
    (["13B", "--context", "0"], "context 0"),
    (["13B", "--dtype", "fp7"], "'fp7'"),
    (["13B", "--kv-dtype", "q3"], "'q3'"),
    (["deepseek-r9"], "'deepseek-r9'"),
    (["13B", "--checkpointing"], "--train"),
])
def test_bad_input_is_one_line_exit_2(args: list[str], named: str) -> None:
    out = hal_cli(*args, "--no-local")
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and named in lines[0], out.stderr
    assert "Traceback" not in out.stderr


def test_bad_config_files_are_one_line_exit_2(tmp_path: Path) -> None:
    notjson = tmp_path / "config.json"
    notjson.write_text("{oops")
    out = hal_cli(str(notjson), "--no-local")
    assert out.returncode == 2 and "not JSON" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    lacking = tmp_path / "lacking.json"
    lacking.write_text(json.dumps({"hidden_size": 64, "num_hidden_layers": 2}))
    out = hal_cli(str(lacking), "--no-local")
    assert out.returncode == 2 and "num_attention_heads" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_efficiency_flags_and_variables_reach_the_estimate() -> None:
    # no fixed per-layer cost: the step is its memory read alone, so half the share is half
    args = ["deepseek-r1-distill-llama-8b", "--no-local", "--cards", "h100-sxm", "--json",
            "--all", "--layer-overhead", "0"]
    base = json.loads(hal_cli(*args).stdout)
    half = json.loads(hal_cli(*args, "--bw-efficiency", "0.3").stdout)
    shipped = engines()["serving"].factors.bandwidth  # the engine class's fitted share
    assert base["efficiency"]["bandwidth"] == shipped and half["efficiency"]["bandwidth"] == 0.3
    cell = lambda d: next(p for p in d["placements"] if p["dtype"] == "bf16")["speed"]  # noqa: E731
    assert cell(half)["decode_tokens_s"] == pytest.approx(
        cell(base)["decode_tokens_s"] * 0.3 / shipped, rel=0.01)
    assert cell(half)["decode_tokens_s_bound"] == cell(base)["decode_tokens_s_bound"]
    env = {**os.environ, "HAL_DEVICE": "cpu", "HAL_PLAN_LAYER_OVERHEAD": "bad"}
    out = subprocess.run([sys.executable, "-m", "hal", "plan", *args], capture_output=True,
                         text=True, timeout=120, env=env)
    assert out.returncode == 2 and "HAL_PLAN_LAYER_OVERHEAD" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_the_default_answer_fits_one_screen_and_explains_every_dash() -> None:
    out = hal_cli("deepseek-r1", "--no-local")  # native format: fp8
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("deepseek-r1: ") and "tok/s a sequence (estimate)" in lines[0]
    assert "fp8 weights" in lines[1]
    assert all(len(line) <= 100 for line in lines), max(lines, key=len)
    ranked = [line for line in lines if line[:5].strip().isdigit()]
    assert len(ranked) == 10 and "more with --all" in out.stdout
    assert len(lines) <= 25
    mixed = hal_cli("deepseek-r1-distill-qwen-14b", "--dtype", "int4", "--no-local", "--cards",
                    "ascend-910b,rtx-4090,dgx-spark", "--rank", "speed").stdout.splitlines()
    dashed = [line for line in mixed if line[:5].strip().isdigit() and " - " in line]
    assert dashed and all("no bandwidth figure" in line or "no TFLOPS figure" in line
                          for line in dashed)


def test_compact_json_of_a_7b_plan_is_small_and_all_is_everything() -> None:
    small = hal_cli("7B", "--no-local", "--json").stdout
    assert len(small.encode()) < 50_000
    data = json.loads(small)
    assert data["schema"] == "hal.plan/3" and len(data["ranking"]["rows"]) <= 10
    full = json.loads(hal_cli("7B", "--no-local", "--json", "--all").stdout)
    assert len(full["ranking"]["rows"]) == data["ranking"]["total"] > 10


def test_engine_picks_the_serving_class_and_an_unknown_one_is_one_line() -> None:
    from hal.planner.planning import plan

    def decode(engine: str | None) -> float:
        p = plan("deepseek-r1", batch=1, context=1024, local=False, cards=["h200-sxm"],
                 formats=("fp8",), engine=engine)
        s = p.placement("h200-sxm").speed
        assert s is not None and s.decode_tokens_s
        return s.decode_tokens_s

    fused, vllm = decode("serving"), decode(None)  # the default is vLLM's class
    assert decode("serving-vllm") == vllm
    # the same layout and bytes; only the fitted MoE-layer cost differs, in the 58 layers
    # that route (R1's first 3 of 61 are dense: first_k_dense_replace)
    gap = 58 * (engines()["serving-vllm"].factors.moe_layer_s
                - engines()["serving"].factors.moe_layer_s)
    assert 1 / vllm - 1 / fused == pytest.approx(gap, rel=0.01)
    dense = [plan("deepseek-r1-distill-llama-8b", local=False, cards=["h100-sxm"],
                  formats=("bf16",), engine=e).placement("h100-sxm").speed for e in
             (None, "serving-vllm")]
    assert dense[0] and dense[1] and dense[0].decode_tokens_s == dense[1].decode_tokens_s
    out = hal_cli("deepseek-r1", "--no-local", "--engine", "tgi")
    assert out.returncode == 2 and "serving, serving-vllm" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
