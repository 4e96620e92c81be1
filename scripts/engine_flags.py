"""Write tests/data/engine_flags.json: the launch flags hal emits, found in each engine's source.

The contract test (tests/test_planner_emit.py) parses every line ``hal plan --emit`` prints
against that file.  This script makes the file from the engines' released sources, fetched with
pip (no engine is installed or imported)::

    pip download vllm==0.34.0 --no-deps -d /tmp/eng
    pip download sglang==0.5.23 --no-deps -d /tmp/eng
    pip download llama-cpp-python==0.3.36 --no-deps --no-binary :all: -d /tmp/eng
    python scripts/engine_flags.py /tmp/eng > tests/data/engine_flags.json

Each flag must appear in its source (quoted, as argparse or llama.cpp's ``common_arg`` declare
it); its line is recorded.  Choices (quantization methods, KV-cache dtypes, split modes) are
read from the source's own lists.  A flag missing from a new release fails the script.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
import tarfile
import zipfile
from pathlib import Path
from typing import Any

#: Per engine: the distribution, the files that declare its flags, and the flags hal emits
#: (name: takes a value).  sglang derives ``--tp-size`` from the field ``tp_size``.
ENGINES: dict[str, dict[str, Any]] = {
    "vllm": {
        "dist": "vllm", "files": ["vllm/engine/arg_utils.py"], "program": "vllm serve",
        "positional": "model",
        "flags": {"--tensor-parallel-size": True, "--pipeline-parallel-size": True,
                  "--data-parallel-size": True, "--enable-expert-parallel": False,
                  "--max-model-len": True, "--gpu-memory-utilization": True,
                  "--quantization": True, "--kv-cache-dtype": True, "--dtype": True,
                  "--tokenizer": True, "--nnodes": True, "--node-rank": True,
                  "--master-addr": True, "--master-port": True, "--cpu-offload-gb": True,
                  "--trust-remote-code": False},
        "choices": {"--quantization": ("vllm/model_executor/layers/quantization/__init__.py",
                                       r"QuantizationMethods\s*=\s*Literal\[(.*?)\]"),
                    "--kv-cache-dtype": ("vllm/config/cache.py", r"CacheDType\s*=\s*Literal\[(.*?)\]")},
    },
    "sglang": {
        "dist": "sglang", "program": "python -m sglang.launch_server",
        "files": ["sglang/srt/arg_groups/fields/parallel.py", "sglang/srt/arg_groups/fields/model.py",
                  "sglang/srt/arg_groups/fields/schedule.py", "sglang/srt/server_args.py"],
        "flags": {"--model-path": True, "--tp-size": True, "--pp-size": True, "--ep-size": True,
                  "--dp-size": True, "--enable-dp-attention": False, "--context-length": True,
                  "--mem-fraction-static": True, "--quantization": True, "--kv-cache-dtype": True,
                  "--nnodes": True, "--node-rank": True, "--dist-init-addr": True,
                  "--trust-remote-code": False},
        "choices": {"--quantization": ("sglang/srt/arg_groups/choices.py",
                                       r"QUANTIZATION_CHOICES\s*=\s*\[(.*?)\]"),
                    "--kv-cache-dtype": ("sglang/srt/arg_groups/fields/model.py",
                                         r"kv_cache_dtype:.*?choices=\[(.*?)\]")},
    },
    "llama.cpp": {
        "dist": "llama-cpp-python", "program": "llama-server",
        "files": ["vendor/llama.cpp/common/arg.cpp"],
        "flags": {"-m": True, "--model": True, "-ngl": True, "--n-gpu-layers": True,
                  "-sm": True, "--split-mode": True, "-ts": True, "--tensor-split": True,
                  "-c": True, "--ctx-size": True, "-ot": True, "--override-tensor": True,
                  "-ctk": True, "--cache-type-k": True, "-ctv": True, "--cache-type-v": True,
                  "-mg": True, "--main-gpu": True, "-np": True, "--parallel": True},
        "choices": {"--split-mode": ("vendor/llama.cpp/common/arg.cpp",
                                     r'\{"-sm", "--split-mode"\}, "\{(.*?)\}"')},
    },
}


def _sources(folder: Path, dist: str) -> tuple[str, dict[str, str]]:
    """(the archive's name, {path inside the package: text}) of ``dist`` in ``folder``."""
    stem = dist.replace("-", "_")
    archive = next(p for p in sorted(folder.iterdir()) if p.name.lower().startswith(stem))
    files: dict[str, str] = {}
    if archive.suffix == ".whl":
        with zipfile.ZipFile(archive) as z:
            for name in z.namelist():
                if name.endswith((".py", ".cpp")):
                    files[name] = z.read(name).decode("utf-8", "replace")
    else:
        with tarfile.open(archive) as t:
            for member in t.getmembers():
                if member.isfile() and member.name.endswith((".py", ".cpp")):
                    data = t.extractfile(member)
                    if data is not None:
                        files[member.name.split("/", 1)[1]] = data.read().decode("utf-8", "replace")
    return archive.name, files


def _declared(flag: str, text: str) -> int | None:
    """The line declaring ``flag``: quoted, or an sglang dataclass field of that name."""
    for i, line in enumerate(text.splitlines(), 1):
        if f'"{flag}"' in line:
            return i
    field = flag.lstrip("-").replace("-", "_")
    for i, line in enumerate(text.splitlines(), 1):
        if re.match(rf"\s+{field}\s*:\s*A\[", line):
            return i
    return None


def main(folder: str) -> int:
    """Print the JSON for the archives in ``folder``; 1 when a flag is not found."""
    out: dict[str, Any] = {}
    missing = []
    for engine, spec in ENGINES.items():
        archive, files = _sources(Path(folder), spec["dist"])
        flags: dict[str, Any] = {}
        for flag, takes_value in spec["flags"].items():
            where = None
            for path in spec["files"]:
                line = _declared(flag, files.get(path, ""))
                if line is not None:
                    where = f"{path}:{line}"
                    break
            if where is None:
                missing.append(f"{engine} {flag}")
                continue
            flags[flag] = {"value": takes_value, "declared": where}
        for flag, (path, pattern) in spec.get("choices", {}).items():
            m = re.search(pattern, files.get(path, ""), re.DOTALL)
            if m is None or flag not in flags:
                missing.append(f"{engine} {flag} choices")
                continue
            body = re.sub(r"#[^\n]*", "", m.group(1))
            flags[flag]["choices"] = re.findall(r'"([^"]+)"', body) or body.split(",")
        digest = hashlib.sha256((Path(folder) / archive).read_bytes()).hexdigest()
        out[engine] = {"program": spec["program"], "source": archive, "sha256": digest,
                       "positional": spec.get("positional"), "flags": flags}
    if missing:
        print("not found: " + ", ".join(missing), file=sys.stderr)
        return 1
    json.dump(out, sys.stdout, indent=1, sort_keys=True)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "."))
