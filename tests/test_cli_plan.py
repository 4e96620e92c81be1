"""``hal plan`` through real subprocesses: the report, JSON, the torch-free path, bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hal.planner import estimate

EXAMPLE = ["deepseek-r1-distill-qwen-14b", "--dtype", "int4", "--context", "32768"]


def hal_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HAL_DEVICE": "cpu"}
    return subprocess.run([sys.executable, "-m", "hal", "plan", *args], capture_output=True,
                          text=True, timeout=120, env=env)


def test_the_issue_example_prints_breakdown_local_fit_and_cards() -> None:
    out = hal_cli(*EXAMPLE)
    assert out.returncode == 0, out.stderr
    text = out.stdout
    for needle in ("weights", "weight scales", "kv cache", "activations", "overhead", "total",
                   "local devices", "cpu:0", "NVIDIA GeForce RTX 4090", "int4 *",
                   "how each term is computed", "4.125 bits a weight"):
        assert needle in text, needle
    assert "\x1b[" not in text  # plain text when piped


def test_json_matches_the_api_and_says_how_much_context_fits() -> None:
    out = hal_cli(*EXAMPLE, "--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["schema"] == "hal.plan/1"
    api = estimate("deepseek-r1-distill-qwen-14b", dtype="int4", context=32768)
    assert data["estimate"]["total"] == api.total
    assert data["local"] and data["local"][0]["backend"] == "cpu"
    cards = {c["id"]: c for c in data["catalogue"]}
    cell = cards["rtx-4090"]["formats"]["int4"]
    assert cell["fits"] and cell["max_context"] >= 32768
    assert not cards["rtx-4090"]["formats"]["bf16"]["fits"]
    assert cards["h200-sxm"]["formats"]["bf16"]["fits"]


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
                  "--no-local", "--context", "2048")
    assert out.returncode == 0, out.stderr
    est = json.loads(out.stdout)["estimate"]
    assert est["mode"] == "train" and est["optimizer"] > 0 and est["kv_cache"] == 0
    tp = json.loads(hal_cli("deepseek-r1", "--dtype", "fp8", "--tensor-parallel", "8",
                            "--json", "--no-local").stdout)["estimate"]
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
