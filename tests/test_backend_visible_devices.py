"""One table of visible-devices cases (tests/data/visible_devices_cases.json), checked three ways.

torch's own parser on the installed torch is the reference; hal's CUDA and ROCm backends and the
fake torch.cuda are each checked against the same table, so a mistake shared by two copies of a
parser cannot pass unseen.  Where torch knowingly differs from the runtime, the table says why.
"""

from __future__ import annotations

import json
import pathlib
from typing import Any
from unittest import mock

import pytest
import torch

from hal.backends.cuda import CudaBackend
from hal.backends.cuda import testing as fc
from hal.backends.cuda.backend import ID_PREFIXES
from hal.backends.rocm import RocmBackend
from hal.contract import parse_visible, resolve_visible

TABLE = json.loads((pathlib.Path(__file__).parent / "data" / "visible_devices_cases.json").read_text())
CASES: list[dict[str, Any]] = TABLE["cases"]
VARIABLES = ("CUDA_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES")
IDS = [c["id"] for c in CASES]


def devices(case: dict[str, Any]) -> tuple[list[fc.GpuSpec], list[str], list[str]]:
    """Specs, UUIDs as the runtime's library prints them (NVML: GPU-…; amd-smi: bare), and bare."""
    spec = fc.SPECS["H100" if case["runtime"] == "cuda" else "MI300X"]
    specs = [spec] * case["physical"]
    printed = [fc.device_uuid(s, i) for i, s in enumerate(specs)]
    return specs, printed, [u.removeprefix("GPU-") for u in printed]


def environment(case: dict[str, Any], bare: list[str]) -> dict[str, str]:
    names = {f"u{i}": u for i, u in enumerate(bare)}
    return {k: v.format(**names) for k, v in case["env"].items()}


@pytest.fixture
def setenv(monkeypatch: pytest.MonkeyPatch) -> Any:
    def apply(env: dict[str, str]) -> None:
        for var in VARIABLES:
            monkeypatch.delenv(var, raising=False)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
    return apply


def torch_answer(case: dict[str, Any], printed: list[str], bare: list[str]) -> tuple[Any, Any]:
    """(count, ordinals) from torch's parser as a build of the case's runtime runs it."""
    hip = case["runtime"] == "hip"
    with mock.patch.object(torch.version, "hip", "6.2.41133" if hip else None):
        visible: list[Any] = list(torch.cuda._parse_visible_devices())
        if visible and isinstance(visible[0], str):
            if visible[0].startswith("MIG-") and not hip:
                return None, None
            ordinals = list(torch.cuda._transform_uuid_to_ordinals(visible, bare if hip else printed))
            return len(ordinals), ordinals
    kept: list[int] = []
    for x in visible:
        if x >= case["physical"]:
            break
        kept.append(x)
    return len(kept), kept


def expected_of_torch(case: dict[str, Any]) -> dict[str, Any]:
    return {"count": case["count"], "ordinals": case.get("ordinals"), **case.get("torch", {})}


def test_the_installed_torch_exposes_the_parser_the_table_is_checked_against() -> None:
    assert callable(torch.cuda._parse_visible_devices)
    assert callable(torch.cuda._transform_uuid_to_ordinals)
    assert len(CASES) >= 20 and len(set(IDS)) == len(IDS)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_torch_agrees_with_the_table(case: dict[str, Any], setenv: Any) -> None:
    _, printed, bare = devices(case)
    setenv(environment(case, bare))
    want = expected_of_torch(case)
    if "error" in want:
        with pytest.raises(RuntimeError, match=want["error"]):
            torch_answer(case, printed, bare)
        return
    count, ordinals = torch_answer(case, printed, bare)
    assert count == want["count"]
    if want.get("ordinals") is not None:
        assert ordinals == want["ordinals"]


@pytest.mark.parametrize("case", [c for c in CASES if c["count"] is not None], ids=lambda c: c["id"])
def test_hal_backends_agree_with_the_table(case: dict[str, Any]) -> None:
    specs, printed, bare = devices(case)
    env = environment(case, bare)
    if case["runtime"] == "cuda":
        backend = CudaBackend(fc.make_cuda(specs), fc.cuda_version(), fc.make_nvml(specs),
                              environ=env)
        assert backend.probe().device_count == case["count"]
        spec = parse_visible(env.get("CUDA_VISIBLE_DEVICES"), ID_PREFIXES)
        assert resolve_visible(spec, case["physical"], printed) == case["ordinals"]
        return
    rocm = RocmBackend(fc.make_cuda(specs), fc.hip_version(), False, environ=env)
    assert rocm.visible_count(case["physical"], tuple(bare)) == case["count"]
    if "ordinals" in case:
        value = env.get("HIP_VISIBLE_DEVICES", env.get("CUDA_VISIBLE_DEVICES"))
        spec = parse_visible(value, ("GPU-",))
        assert resolve_visible(spec, case["physical"], bare, strip="GPU-") == case["ordinals"]


@pytest.mark.parametrize("case", [c for c in CASES if c["count"] is not None], ids=lambda c: c["id"])
def test_the_fake_agrees_with_the_table(case: dict[str, Any], setenv: Any) -> None:
    specs, _, bare = devices(case)
    setenv(environment(case, bare))
    module = fc.make_cuda(specs)
    want = expected_of_torch(case)  # the fake is a torch.cuda: it counts as torch does
    if "error" in want:
        with pytest.raises(RuntimeError, match=want["error"]):
            module.device_count()
        return
    assert module.device_count() == want["count"]
    if want.get("ordinals") is not None:
        shown = [str(module.get_device_properties(i).uuid) for i in range(want["count"])]
        assert [bare.index(u) for u in shown] == want["ordinals"]
