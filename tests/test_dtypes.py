"""hal.dtypes: every spelling of a dtype that hal meets parses to one entry, and nothing else does."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest
import torch

from hal import dtypes
from hal.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
#: Where built-in backends and their fakes live (fakes may sit next to their vendor).
SOURCES = [ROOT / "backends", ROOT / "hal" / "testing", ROOT / "tests" / "plugins"]
TORCH_DTYPE_NAMES = {n for n in dir(torch) if isinstance(getattr(torch, n, None), torch.dtype)}


def _reported_names() -> set[str]:
    """Every torch dtype a backend or fake can name: ``torch.X`` attributes and "X" strings."""
    found: set[str] = set()
    for folder in SOURCES:
        for path in folder.rglob("*.py"):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            for node in ast.walk(tree):
                if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                        and node.value.id == "torch" and node.attr in TORCH_DTYPE_NAMES):
                    found.add(node.attr)
                elif isinstance(node, ast.Constant) and node.value in TORCH_DTYPE_NAMES:
                    found.add(str(node.value))
    return found


def test_every_dtype_a_backend_or_fake_reports_parses() -> None:
    names = _reported_names()
    # the scan really sees the backends' tables (MI300's fp8 and the accelerators' bf16)
    assert {"bfloat16", "float16", "float32", "float8_e4m3fn", "float8_e4m3fnuz"} <= names
    for name in sorted(names):
        entry = dtypes.parse(name)
        assert entry.torch_name is not None
        assert dtypes.to_torch(entry) == getattr(torch, name)


def test_every_catalogue_dtype_key_parses() -> None:
    text = resources.files("hal").joinpath("data/accelerators.json").read_text(encoding="utf-8")
    keys: set[str] = set()
    for card in json.loads(text)["accelerators"]:
        keys |= set(card.get("tflops") or {}) | set(card.get("native_dtypes") or ())
    assert keys
    for key in keys:
        dtypes.parse(key)


@pytest.mark.parametrize(("text", "short"), [
    ("bf16", "bf16"), ("BF16", "bf16"), ("bfloat16", "bf16"), ("torch.bfloat16", "bf16"),
    ("half", "fp16"), ("Float16", "fp16"), ("float", "fp32"), ("fp32", "fp32"),
    ("fp8", "fp8"), ("float8_e4m3fn", "fp8"), ("fp8_e4m3", "fp8"), ("FP8-E4M3FN", "fp8"),
    ("float8_e4m3fnuz", "fp8-e4m3fnuz"), ("fp8_e5m2", "fp8-e5m2"), ("e5m2fnuz", "fp8-e5m2fnuz"),
    ("int4", "int4"), ("4bit", "int4"), ("nf4", "nf4"), (" int8 ", "int8"), ("tf32", "tf32"),
])
def test_spellings(text: str, short: str) -> None:
    assert dtypes.parse(text).short == short


def test_fp8_variants_count_as_fp8() -> None:
    for name in ("float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz", "float8_e5m2fnuz"):
        entry = dtypes.parse(name, role=dtypes.WEIGHTS)
        assert (entry.kind, entry.bytes) == ("fp8", 1)
    assert dtypes.parse("int4").bytes == 0.5
    assert dtypes.parse("nf4").kind == "int4"


def test_a_torch_dtype_parses_and_round_trips() -> None:
    for entry in dtypes.REGISTRY:
        if entry.torch_name is None:
            continue
        dtype = dtypes.to_torch(entry.short)
        assert dtypes.parse(dtype) is entry
        assert dtypes.short(dtype) == entry.short
        if entry.bytes >= 1:
            assert dtype.itemsize == entry.bytes


def test_no_two_dtypes_share_a_spelling() -> None:
    seen: dict[str, str] = {}
    for entry in dtypes.REGISTRY:
        for name in {entry.short, *entry.aliases, *([entry.torch_name] if entry.torch_name else [])}:
            key = dtypes._key(name)
            assert seen.setdefault(key, entry.short) == entry.short, name


@pytest.mark.parametrize("bad", ["bogus", "", "fp7", "9" * 400, "float8_e4m3fnuzz", "bf 16 x"])
def test_unknown_names_are_one_line_errors_listing_the_accepted(bad: str) -> None:
    with pytest.raises(ConfigError) as info:
        dtypes.parse(bad, what="--dtype")
    text = str(info.value)
    assert "\n" not in text and len(text) < 400
    assert text.startswith("--dtype ") and "bf16" in text and "fp8" in text


def test_a_role_refuses_known_dtypes_that_do_not_play_it() -> None:
    with pytest.raises(ConfigError, match=r"'fp64' \(fp64\) is not a weight format; .*int4"):
        dtypes.parse("fp64", role=dtypes.WEIGHTS)
    with pytest.raises(ConfigError, match="not a mixed-precision compute dtype"):
        dtypes.parse("fp8", role=dtypes.COMPUTE)
    assert dtypes.names(dtypes.COMPUTE) == ["fp32", "fp16", "bf16"]
    assert dtypes.names(dtypes.AUTOCAST) == ["fp16", "bf16"]
    assert set(dtypes.names(dtypes.WEIGHTS)) >= {"fp32", "fp16", "bf16", "fp8", "int8", "int4"}


def test_packed_formats_have_no_torch_dtype() -> None:
    with pytest.raises(ConfigError, match="int4 has no torch storage dtype"):
        dtypes.to_torch("int4")


def test_the_registry_does_not_import_torch() -> None:
    code = ("import sys, hal.dtypes as d; d.parse('bf16'); d.parse('float8_e4m3fnuz'); "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False", out.stderr


def test_the_catalogue_loader_reads_dtype_names_through_the_registry() -> None:
    from hal.planner.catalogue import from_mapping

    acc = from_mapping({"id": "toy", "name": "Toy", "memory_bytes": 2**30, "backend": "toy",
                        "source": "tests", "tflops": {"bfloat16": 100.0, "float8_e4m3fnuz": 200},
                        "native_dtypes": ["bf16", "torch.float8_e4m3fnuz"]})
    assert acc.tflops == {"bf16": 100.0, "fp8": 200.0}
    assert acc.native_dtypes == ("bfloat16", "float8_e4m3fnuz")
    with pytest.raises(ConfigError, match="accelerator 'toy': tflops dtype 'warp9'"):
        from_mapping({"id": "toy", "name": "Toy", "memory_bytes": 1, "backend": "toy",
                      "source": "tests", "tflops": {"warp9": 1.0}})
