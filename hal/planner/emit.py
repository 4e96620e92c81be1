"""Launch lines for the engines people serve with: vLLM, SGLang and llama.cpp's server.

:func:`emit` turns a plain :class:`Launch` (devices, tensor/pipeline/expert/data parallel sizes,
context, memory share, weight format, offload) into the command of one engine, one line a node.
The flag names are the engines' own, checked against their released sources
(tests/data/engine_flags.json, written by scripts/engine_flags.py; docs/planner.md, "Launch
lines").  A configuration an engine cannot express is one-line :class:`EmitError`.
Nothing here imports torch or an engine.
"""

from __future__ import annotations

import math
import re
import shlex
from dataclasses import dataclass
from typing import Any

from hal.errors import ConfigError
from hal.planner import formats

ENGINES = ("vllm", "sglang", "llama.cpp")
#: hal weight format -> the engine's ``--quantization`` (None: no flag, the dtype flag instead).
_VLLM_QUANT = {"fp8": "fp8", "awq": "awq", "gptq": "gptq", "gptq-g32": "gptq", "int4": "gptq",
               "int8": "gptq", "w8a8": "compressed-tensors", "nvfp4": "modelopt_fp4",
               "mxfp4": "mxfp4"}
_SGLANG_QUANT = {**_VLLM_QUANT, "w8a8": "w8a8_int8"}
_DTYPE = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}
#: hal KV-cache dtype -> each engine's ``--kv-cache-dtype`` / ``--cache-type-k`` value; None:
#: no flag (SGLang has no fp16 choice: its "auto" is the model's 16-bit dtype).
_KV: dict[str, dict[str, str | None]] = {
       "vllm": {"fp8": "fp8", "bf16": "bfloat16", "fp16": "float16"},
       "sglang": {"fp8": "fp8_e4m3", "bf16": "bf16", "fp16": None},
       "llama.cpp": {"fp16": "f16", "bf16": "bf16", "fp32": "f32", "int8": "q8_0", "int4": "q4_0"}}
#: llama.cpp's tensor override that keeps routed experts in host memory (Unsloth's R1 recipe).
EXPERTS_ON_CPU = ".ffn_.*_exps.=CPU"
#: The head node's address in multi-node lines: replace it with the first node's IP.
HEAD = "HEAD_NODE_IP"


class EmitError(ConfigError):
    """A configuration the chosen engine cannot be launched with, in one line."""


@dataclass(frozen=True)
class Launch:
    """A configuration to launch, as plain values (no planner types).

    ``devices`` are accelerators in all, ``per_node`` of them a node; ``tp`` x ``pp`` x ``dp``
    must use them.  ``ep`` > 1 asks for expert parallelism over the ``tp`` x ``dp`` ranks (as
    vLLM and SGLang form it).  ``offload``: ``""``, ``"experts"`` (routed experts in host
    memory) or ``"layers"`` (only ``gpu_layers`` layers on the accelerators).
    """

    model: str
    quant: str
    devices: int = 1
    tp: int = 1
    pp: int = 1
    ep: int = 1
    dp: int = 1
    per_node: int = 8
    max_len: int | None = None
    mem_util: float | None = None
    kv_dtype: str | None = None
    offload: str = ""
    gpu_layers: int | None = None
    layers: int | None = None  # the model's layers (llama.cpp: all on the GPUs = layers + 1)
    split: str = ""  # llama.cpp --split-mode; "" picks layer (row when tp > 1)

    @property
    def nodes(self) -> int:
        """Nodes the devices take."""
        return max(1, math.ceil(self.devices / self.per_node))


def _check(launch: Launch) -> formats.Format:
    for name in ("devices", "tp", "pp", "ep", "dp", "per_node"):
        value = getattr(launch, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise EmitError(f"launch {name} {value!r} is invalid; expected an integer >= 1")
    if launch.tp * launch.pp * launch.dp != launch.devices:
        raise EmitError(f"tp {launch.tp} x pp {launch.pp} x dp {launch.dp} is not the "
                        f"{launch.devices} devices; expected them to multiply to the count")
    if launch.mem_util is not None and not 0 < launch.mem_util <= 1:
        raise EmitError(f"memory utilisation {launch.mem_util!r} is invalid; expected 0 < u <= 1")
    if launch.offload not in ("", "experts", "layers"):
        raise EmitError(f"offload {launch.offload!r} is invalid; expected experts or layers")
    if not launch.model or any(c in launch.model for c in "\n\r\0"):
        raise EmitError("launch model is empty or holds a line break; expected a model id or path")
    return formats.get(launch.quant)


def _kv(engine: str, kv: str | None) -> str | None:
    if kv is None:
        return None
    if kv not in _KV[engine]:
        raise EmitError(f"KV-cache dtype {kv!r} has no {engine} equivalent; expected one of: "
                        f"{', '.join(_KV[engine])}")
    return _KV[engine][kv]


def _join(words: list[str]) -> str:
    return " ".join(shlex.quote(w) for w in words)


def _multinode(launch: Launch, engine: str) -> list[list[str]]:
    """Per-node extra words: one empty list for one node; else node rank and head address."""
    if launch.nodes == 1:
        return [[]]
    if engine == "vllm":
        return [["--nnodes", str(launch.nodes), "--node-rank", str(r), "--master-addr", HEAD]
                for r in range(launch.nodes)]
    return [["--nnodes", str(launch.nodes), "--node-rank", str(r), "--dist-init-addr",
             f"{HEAD}:5000"] for r in range(launch.nodes)]


def _vllm(launch: Launch, fmt: formats.Format) -> list[str]:
    if fmt.family in ("gguf", "dynamic"):
        raise EmitError(f"vLLM's --quantization has no GGUF method (vLLM 0.34) for {fmt.name!r}; "
                        "use --emit llama.cpp or --emit sglang, or an AWQ/GPTQ/fp8 checkpoint")
    words = ["vllm", "serve", launch.model, "--tensor-parallel-size", str(launch.tp)]
    if launch.pp > 1:
        words += ["--pipeline-parallel-size", str(launch.pp)]
    if launch.dp > 1:
        words += ["--data-parallel-size", str(launch.dp)]
    if launch.ep > 1:
        if launch.ep != launch.tp * launch.dp:
            raise EmitError(f"vLLM forms expert parallelism over tp x dp = {launch.tp * launch.dp} "
                            f"ranks; expert parallel {launch.ep} cannot be launched")
        words.append("--enable-expert-parallel")
    if launch.max_len:
        words += ["--max-model-len", str(launch.max_len)]
    if launch.mem_util is not None:
        words += ["--gpu-memory-utilization", f"{launch.mem_util:g}"]
    quant = _VLLM_QUANT.get(fmt.name)
    words += ["--quantization", quant] if quant else ["--dtype", _DTYPE[fmt.name]]
    kv = _kv("vllm", launch.kv_dtype)
    if kv:
        words += ["--kv-cache-dtype", kv]
    if launch.offload:
        raise EmitError("vLLM offloads whole weights (--cpu-offload-gb), not routed experts or "
                        "layers; use --emit llama.cpp for an offload layout")
    return [_join(words + extra) for extra in _multinode(launch, "vllm")]


def _sglang(launch: Launch, fmt: formats.Format) -> list[str]:
    words = ["python", "-m", "sglang.launch_server", "--model-path", launch.model,
             "--tp-size", str(launch.tp)]
    if launch.pp > 1:
        words += ["--pp-size", str(launch.pp)]
    if launch.dp > 1:
        words += ["--dp-size", str(launch.dp), "--enable-dp-attention"]
    if launch.ep > 1:
        words += ["--ep-size", str(launch.ep)]
    if launch.max_len:
        words += ["--context-length", str(launch.max_len)]
    if launch.mem_util is not None:
        words += ["--mem-fraction-static", f"{launch.mem_util:g}"]
    quant = "gguf" if fmt.family in ("gguf", "dynamic") else _SGLANG_QUANT.get(fmt.name)
    if quant:
        words += ["--quantization", quant]
    kv = _kv("sglang", launch.kv_dtype)
    if kv:
        words += ["--kv-cache-dtype", kv]
    if launch.offload:
        raise EmitError("SGLang has no routed-expert or layer offload flag; use --emit llama.cpp "
                        "for an offload layout")
    return [_join(words + extra) for extra in _multinode(launch, "sglang")]


def _llama_cpp(launch: Launch, fmt: formats.Format) -> list[str]:
    if fmt.family not in ("gguf", "dynamic", "float"):
        raise EmitError(f"llama.cpp runs GGUF files; {fmt.name!r} is not one; expected a GGUF "
                        "format (q4_k_m, q8_0, ud-iq1_s...) or bf16/fp16")
    if launch.nodes > 1:
        raise EmitError(f"{launch.devices} devices are {launch.nodes} nodes; llama-server runs on "
                        "one host (its RPC backend is not emitted)")
    model = launch.model
    if not model.endswith(".gguf"):
        stem = re.sub(r"[^A-Za-z0-9._-]+", "-", model.rstrip("/").split("/")[-1])
        model = f"{stem}-{fmt.name.upper().replace('-', '_')}.gguf"
    if launch.offload == "layers" and launch.gpu_layers is not None:
        ngl = launch.gpu_layers
    else:
        ngl = (launch.layers + 1) if launch.layers else 999  # every layer and the output
    words = ["llama-server", "-m", model, "--n-gpu-layers", str(ngl)]
    if launch.devices > 1:
        words += ["--split-mode", launch.split or ("row" if launch.tp > 1 else "layer")]
    if launch.max_len:
        words += ["--ctx-size", str(launch.max_len)]
    if launch.offload == "experts":
        words += ["--override-tensor", EXPERTS_ON_CPU]
    kv = _kv("llama.cpp", launch.kv_dtype)
    if kv:
        words += ["--cache-type-k", kv, "--cache-type-v", kv]
    return [_join(words)]


def emit(engine: str, launch: Launch) -> list[str]:
    """The command lines (one a node) that launch ``launch`` on ``engine``; EmitError otherwise."""
    fmt = _check(launch)
    key = engine.strip().lower().replace("llamacpp", "llama.cpp").replace("llama-cpp", "llama.cpp")
    if key == "vllm":
        return _vllm(launch, fmt)
    if key == "sglang":
        return _sglang(launch, fmt)
    if key == "llama.cpp":
        return _llama_cpp(launch, fmt)
    raise EmitError(f"engine {engine!r} is unknown; expected one of: {', '.join(ENGINES)}")


def model_id(model: str) -> str:
    """What an engine loads for ``hal plan MODEL``: a preset's Hugging Face id, else MODEL."""
    from hal.planner.models import PRESETS

    key = model.strip().lower()
    if key in PRESETS:
        m = re.search(r"huggingface\.co/([^/]+/[^/]+)/", PRESETS[key][1])
        if m:
            return m.group(1)
    from hal.planner.configfile import is_count

    if is_count(model):
        raise EmitError(f"model {model!r} is a parameter count; --emit needs a Hugging Face id, "
                        "a local checkpoint or a preset")
    return model


def launch_from_plan(plan: Any, model: str) -> tuple[Launch, str, str]:
    """The :class:`Launch` of a plan's top catalogue configuration, its description, and the
    conversion the checkpoint needs first ("" when none).

    Reads ``plan.ranking`` rows (``kind``, ``id``), ``plan.placements`` (``card.id``,
    ``dtype``, ``runs``, ``layout.tp/pp/count``), ``plan.request`` (``dtype``, ``context``,
    ``kv_dtype``, ``max_tp``) and ``plan.spec.num_layers``.
    """
    req = plan.request
    chosen = None
    for row in plan.ranking:
        if row.kind != "card":
            continue
        chosen = next((p for p in plan.placements if p.card.id == row.id and p.dtype == req.dtype
                       and p.layout is not None), None)
        if chosen is not None:
            break
    if chosen is None:
        raise EmitError("no catalogue configuration holds the model; nothing to emit (widen "
                        "--cards or choose a smaller --dtype)")
    lay = chosen.layout
    # Read when the planner has them (a memory cap, expert parallelism, offload layouts).
    mem_util = next((v for v in (getattr(req, n, None) for n in (
        "mem_util", "gpu_memory_utilization", "memory_utilization")) if v), None)
    launch = Launch(model=model_id(model), quant=chosen.runs, devices=lay.count, tp=lay.tp,
                    pp=lay.pp, ep=getattr(lay, "ep", 1) or 1, dp=getattr(lay, "dp", 1) or 1,
                    per_node=req.max_tp, max_len=req.context, mem_util=mem_util,
                    kv_dtype=req.kv_dtype, offload=getattr(lay, "offload", "") or "",
                    gpu_layers=getattr(lay, "gpu_layers", None), layers=plan.spec.num_layers)
    note = (f"{chosen.reason}: convert it first and point the command at the converted "
            "checkpoint") if chosen.converted_to else ""
    return launch, chosen.config, note
