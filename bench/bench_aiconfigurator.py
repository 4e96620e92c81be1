"""hal and NVIDIA's aiconfigurator side by side on every published row aiconfigurator can express.

aiconfigurator (PyPI ``aiconfigurator``; offline, measured per-operation data for NVIDIA
datacenter GPUs and vLLM/SGLang/TensorRT-LLM) runs in its own environment: its CLI is found as
``$HAL_AICONFIGURATOR`` or ``aiconfigurator`` on PATH (tox env ``aiconfigurator``).  Rows it can
express: decode rows of bench/published.json on H100/H200/A100/B200 at a TP or TP x PP layout.
For each, both errors against the published range; the goal is hal's error no worse than
aiconfigurator's on any row.  Without aiconfigurator the bench says so and exits 0 (skipped).

``python bench/bench_aiconfigurator.py`` prints a markdown table; exit 1 when hal is worse on a
row.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_published as pub

from hal.planner.models import PRESETS

#: hal catalogue ids -> aiconfigurator system names.
SYSTEMS = {"h100-sxm": "h100_sxm", "h200-sxm": "h200_sxm", "a100-80gb-sxm": "a100_sxm",
           "b200": "b200_sxm"}
#: Models aiconfigurator knows by Hub id without a download.
HUB = {"deepseek-r1": "deepseek-ai/DeepSeek-R1", "deepseek-v3": "deepseek-ai/DeepSeek-V3"}
#: hal weight formats -> aiconfigurator GEMM quantization (R1/V3: block-scaled fp8).
QUANT = {"fp8": "fp8", "bf16": "bfloat16", "int4": "int4_wo", "int8": "int8_wo"}


def cli() -> str | None:
    """The aiconfigurator executable, or None."""
    return os.environ.get("HAL_AICONFIGURATOR") or shutil.which("aiconfigurator")


def expressible(row: dict[str, Any]) -> bool:
    """A decode row on a card and layout aiconfigurator models."""
    lay = row.get("layout")
    return (row["kind"] == "decode" and row["card"] in SYSTEMS and "bpw" not in row
            and (lay is None or lay["kind"] == "tp") and row.get("dtype") in QUANT)


def model_path(name: str, models: dict[str, Any], tmp: Path) -> str:
    """A Hub id aiconfigurator knows, or a folder with the row's config.json."""
    if name in HUB:
        return HUB[name]
    cfg = dict(models[name]) if name in models else dict(PRESETS[name][0])
    arch = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM",
            "mistral": "MistralForCausalLM"}.get(cfg.get("model_type", ""), "LlamaForCausalLM")
    cfg.setdefault("architectures", [arch])
    cfg.setdefault("torch_dtype", "bfloat16")
    cfg.setdefault("rms_norm_eps", 1e-5)
    cfg.setdefault("head_dim", cfg["hidden_size"] // cfg["num_attention_heads"])
    folder = tmp / name
    folder.mkdir(exist_ok=True)
    (folder / "config.json").write_text(json.dumps(cfg))
    return str(folder)


def backend(row: dict[str, Any]) -> str:
    """aiconfigurator's backend for the engine that ran the row: TensorRT-LLM for NVIDIA NIM,
    SGLang for the SGLang runs of the fused-kernel serving class, else vLLM."""
    if "NIM" in row["source"]:
        return "trtllm"
    if "SGLang" in row["source"] and row.get("engine", "serving") == "serving":
        return "sglang"
    return "vllm"


def aic_decode(exe: str, row: dict[str, Any], layout: Any, path: str) -> float | None:
    """aiconfigurator's tokens/s a user for the row (static mode), or None when it refuses."""
    tp, pp = layout.tp, layout.pp
    # the published prompt and reply lengths where the row has them, else half and half
    isl = row.get("isl") or max(1, row["context"] // 2)
    args = [exe, "cli", "estimate", "--model-path", path, "--system", SYSTEMS[row["card"]],
            "--backend", backend(row),
            "--estimate-mode", "static", "--batch-size", str(row["batch"]), "--isl", str(isl),
            "--osl", str(row.get("osl") or max(1, row["context"] - isl)),
            "--tp-size", str(tp), "--pp-size", str(pp),
            "--gemm-quant-mode", "fp8_block" if row["model"] in HUB else QUANT[row["dtype"]],
            "--log-level", "ERROR"]
    if row["model"] in HUB:
        args += ["--moe-tp-size", str(tp), "--moe-ep-size", "1", "--moe-quant-mode", "fp8_block"]
    out = subprocess.run(args, capture_output=True, text=True, timeout=600, check=False)
    found = re.search(r"tokens/s/user:\s+([\d.]+)", out.stdout)
    return float(found.group(1)) if found else None


def main() -> int:
    """Both errors on every expressible row; exit 1 when hal's is worse on one."""
    exe = cli()
    if exe is None:
        print("skipped: aiconfigurator is not installed (pip install aiconfigurator, or set "
              "HAL_AICONFIGURATOR to its CLI)")
        return 0
    data = pub.load()
    worse = []
    print("| row | published | hal | error | aiconfigurator | error |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for row in data["rows"]:
            if not expressible(row):
                continue
            result = pub.evaluate(row, data["models"])
            layout = pub.layout_of(row) or _hal_layout(row, data["models"])
            theirs = aic_decode(exe, row, layout, model_path(row["model"], data["models"],
                                                             Path(tmp)))
            if theirs is None:
                print(f"| {row['id']} | {result.low:g}-{result.high:g} | {result.hal:.1f} | "
                      f"{result.error:+.0%} | refused | - |")
                continue
            their_err = pub.Result(row, theirs, result.low, result.high, layout.label).error
            if abs(result.error) > abs(their_err):
                worse.append(row["id"])
            print(f"| {row['id']} ({layout.label}) | {result.low:g}-{result.high:g} | "
                  f"{result.hal:.1f} | {result.error:+.0%} | {theirs:.1f} | {their_err:+.0%} |")
    print(f"\nhal worse than aiconfigurator on: {worse or 'none'}")
    return 1 if worse else 0


def _hal_layout(row: dict[str, Any], models: dict[str, Any]) -> Any:
    from hal.planner.models import from_config, resolve
    from hal.planner.planning import plan

    name = row["model"]
    spec = from_config(models[name], name=name) if name in models else resolve(name)
    p = plan(spec, row["dtype"], batch=row["batch"], context=row["context"], local=False,
             cards=[row["card"]], formats=(row["dtype"],))
    return p.placement(row["card"]).layout


if __name__ == "__main__":
    sys.exit(main())
