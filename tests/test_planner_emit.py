"""Launch lines: every line hal emits parses against the engine's flags, as its source declares them.

tests/data/engine_flags.json lists the flags hal emits with the file and line that declare them
in vLLM 0.34.0, SGLang 0.5.23 and llama.cpp (llama-cpp-python 0.3.36's vendored copy), written by
scripts/engine_flags.py from those releases.  An argparse parser is built from it per engine
(value or switch, choices where the source lists them, no abbreviations) and each emitted line
is parsed with it; the parsed values are then checked against the configuration.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from hal.planner.emit import EXPERTS_ON_CPU, EmitError, Launch, emit

FLAGS: dict[str, Any] = json.loads(
    (Path(__file__).parent / "data" / "engine_flags.json").read_text(encoding="utf-8"))


class _Refused(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # argparse exits; a test wants the message
        raise _Refused(message)


def parse(engine: str, line: str) -> tuple[argparse.Namespace, list[str]]:
    """Parse ``line`` with a parser holding exactly the engine's declared flags."""
    spec = FLAGS[engine]
    words = shlex.split(line)
    program = spec["program"].split()
    assert words[:len(program)] == program, (words, program)
    parser = _Parser(prog=spec["program"], allow_abbrev=False, add_help=False)
    if spec["positional"]:
        parser.add_argument(spec["positional"])
    for flag, meta in spec["flags"].items():
        if meta["value"]:
            parser.add_argument(flag, dest=flag, choices=meta.get("choices"))
        else:
            parser.add_argument(flag, dest=flag, action="store_true")
    return parser.parse_args(words[len(program):]), words


def value(ns: argparse.Namespace, *flags: str) -> Any:
    """The first of ``flags`` (aliases of one option) that was given."""
    return next((getattr(ns, f) for f in flags if getattr(ns, f, None) not in (None, False)), None)


CASES = [
    Launch("deepseek-ai/DeepSeek-R1", "fp8", devices=8, tp=8, max_len=8192, mem_util=0.9),
    Launch("deepseek-ai/DeepSeek-R1", "fp8", devices=16, tp=8, pp=2, max_len=4096),
    Launch("deepseek-ai/DeepSeek-R1", "fp8", devices=16, tp=8, dp=2, ep=16, kv_dtype="fp8"),
    Launch("deepseek-ai/DeepSeek-R1", "w8a8", devices=16, tp=16, per_node=8),
    Launch("Qwen/Qwen2.5-14B-Instruct-AWQ", "awq", max_len=32768, kv_dtype="fp16"),
    Launch("meta/llama-nvfp4", "nvfp4", devices=4, tp=4, mem_util=0.85),
    Launch("openai/gpt-oss-120b", "mxfp4", devices=2, tp=2),
    Launch("meta-llama/Llama-3.1-8B", "bf16", max_len=131072, kv_dtype="bf16"),
]
GGUF_CASES = [
    Launch("unsloth/DeepSeek-R1-GGUF", "ud-iq1_s", offload="experts", layers=61, max_len=8192),
    Launch("DeepSeek-R1-Q4_K_M.gguf", "q4_k_m", devices=8, pp=8, layers=61, max_len=4096),
    Launch("r1.gguf", "q4_k_m", devices=2, tp=2, layers=61),
    Launch("r1.gguf", "q2_k", offload="layers", gpu_layers=20, layers=61, kv_dtype="int8"),
]


@pytest.mark.parametrize("engine", ["vllm", "sglang"])
@pytest.mark.parametrize("launch", CASES, ids=lambda c: f"{c.quant}-{c.devices}x")
def test_serving_engine_lines_parse_and_carry_the_configuration(engine: str, launch: Launch) -> None:
    lines = emit(engine, launch)
    assert len(lines) == launch.nodes
    for rank, line in enumerate(lines):
        ns, _ = parse(engine, line)
        if engine == "vllm":
            assert ns.model == launch.model
            assert int(value(ns, "--tensor-parallel-size")) == launch.tp
            assert int(value(ns, "--pipeline-parallel-size") or 1) == launch.pp
            assert int(value(ns, "--data-parallel-size") or 1) == launch.dp
            assert bool(value(ns, "--enable-expert-parallel")) == (launch.ep > 1)
            limit = value(ns, "--max-model-len")
            memory = value(ns, "--gpu-memory-utilization")
            quant = value(ns, "--quantization") or value(ns, "--dtype")
        else:
            assert value(ns, "--model-path") == launch.model
            assert int(value(ns, "--tp-size")) == launch.tp
            assert int(value(ns, "--pp-size") or 1) == launch.pp
            assert int(value(ns, "--ep-size") or 1) == launch.ep
            assert bool(value(ns, "--enable-dp-attention")) == (launch.dp > 1)
            limit = value(ns, "--context-length")
            memory = value(ns, "--mem-fraction-static")
            quant = value(ns, "--quantization")
        assert (int(limit) if limit else None) == launch.max_len
        assert (float(memory) if memory else None) == launch.mem_util
        if launch.quant != "bf16":
            assert quant
        if launch.nodes > 1:
            assert int(value(ns, "--nnodes")) == launch.nodes and int(value(ns, "--node-rank")) == rank


@pytest.mark.parametrize("launch", GGUF_CASES, ids=lambda c: f"{c.quant}-{c.devices}x-{c.offload}")
def test_llama_cpp_lines_parse_with_layers_split_and_expert_overrides(launch: Launch) -> None:
    (line,) = emit("llama.cpp", launch)
    ns, _ = parse("llama.cpp", line)
    model = value(ns, "-m", "--model")
    assert model.endswith(".gguf")
    ngl = int(value(ns, "-ngl", "--n-gpu-layers"))
    assert ngl == (launch.gpu_layers if launch.offload == "layers" else launch.layers + 1)
    split = value(ns, "-sm", "--split-mode")
    assert split == (None if launch.devices == 1 else ("row" if launch.tp > 1 else "layer"))
    assert value(ns, "-ot", "--override-tensor") == (EXPERTS_ON_CPU if launch.offload == "experts" else None)
    if launch.kv_dtype:
        assert value(ns, "-ctk", "--cache-type-k") == "q8_0"


@pytest.mark.parametrize("engine, launch, words", [
    ("vllm", Launch("r1.gguf", "q4_k_m"), "GGUF"),
    ("llama.cpp", Launch("deepseek-ai/DeepSeek-R1", "fp8", devices=8, tp=8), "GGUF"),
    ("llama.cpp", Launch("r1.gguf", "q4_k_m", devices=16, pp=16), "nodes"),
    ("vllm", Launch("m", "fp8", devices=8, tp=8, ep=4), "expert parallel"),
    ("vllm", Launch("m", "fp8", devices=8, tp=4), "multiply"),
    ("vllm", Launch("m", "fp8", offload="experts"), "llama.cpp"),
    ("sglang", Launch("m", "fp8", kv_dtype="int4"), "KV-cache"),
    ("tgi", Launch("m", "fp8"), "vllm, sglang, llama.cpp"),
    ("vllm", Launch("m", "fp8", mem_util=1.5), "utilisation"),
])
def test_what_an_engine_cannot_launch_is_one_line(engine: str, launch: Launch, words: str) -> None:
    with pytest.raises(EmitError) as err:
        emit(engine, launch)
    assert words in str(err.value) and "\n" not in str(err.value)


def test_the_flag_list_records_where_each_flag_is_declared() -> None:
    for engine, spec in FLAGS.items():
        assert spec["sha256"] and spec["source"]
        for flag, meta in spec["flags"].items():
            path, _, line = meta["declared"].rpartition(":")
            assert path and int(line) > 0, (engine, flag)
    assert "fp8" in FLAGS["vllm"]["flags"]["--quantization"]["choices"]
    assert "gguf" not in FLAGS["vllm"]["flags"]["--quantization"]["choices"]  # why vLLM refuses GGUF


def _hal(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hal", "plan", *args], capture_output=True,
                          text=True, timeout=60)


def test_cli_emit_prints_a_line_that_parses_and_refuses_in_one_line() -> None:
    out = _hal("deepseek-r1", "--dtype", "fp8", "--cards", "h100-sxm", "--no-local", "--emit", "vllm")
    assert out.returncode == 0, out.stderr
    lines = [x for x in out.stdout.splitlines() if not x.startswith("#")]
    assert len(lines) == 2  # 16 x H100 as deployed: two 8-GPU nodes, one line a node
    for rank, line in enumerate(lines):
        ns, _ = parse("vllm", line)
        assert ns.model == "deepseek-ai/DeepSeek-R1" and value(ns, "--quantization") == "fp8"
        assert value(ns, "--node-rank") == str(rank) and value(ns, "--nnodes") == "2"
    bad = _hal("deepseek-r1", "--dtype", "fp8", "--cards", "h100-sxm", "--no-local", "--emit",
               "llama.cpp")
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1
    assert "GGUF" in bad.stderr and "Traceback" not in bad.stderr
    count = _hal("7B", "--cards", "rtx-4090", "--no-local", "--emit", "sglang")
    assert count.returncode == 2 and "parameter count" in count.stderr
    assert len(count.stderr.strip().splitlines()) == 1
