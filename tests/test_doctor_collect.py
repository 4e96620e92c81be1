"""hal doctor's collection logic in-process: backends' findings, guarded methods, hung probes,
plugin hooks, precision, environment allowlist, vendor mismatches from fake trees, rendering."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch

import hal
from hal.backends.ascend import AscendBackend
from hal.backends.ascend.testing import fake_npu as fn
from hal.backends.cpu import CpuBackend
from hal.backends.cuda import CudaBackend
from hal.backends.cuda import testing as fc
from hal.backends.rocm import RocmBackend
from hal.backends.rocm.testing import fake_kfd as fk
from hal.doctor import Options, collect, render
from hal.doctor.report import env_prefixes, environment_section
from hal.doctor.smoke import smoke_test
from hal.plugins import registered
from hal.selection import reset
from hal.testing.fake_tree import ACCELERATOR_CLASS, FakePci, make_fake_tree

BUILTIN = "cuda,rocm,ascend,xpu,toyaccel"
RELEASE = threading.Event()


@pytest.fixture(autouse=True)
def _only_our_backends(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Leave the built-in vendor plugins out, so each test's fakes are the only accelerators."""
    monkeypatch.setenv("HAL_DISABLE_PLUGINS", BUILTIN)
    reset(plugins=True)
    yield
    RELEASE.set()


class Provide:
    """A plugin object providing the given backends (and, optionally, doctor findings)."""

    def __init__(self, *backends: hal.Backend) -> None:
        self.backends = backends

    @hal.hookimpl
    def hal_backends(self) -> Sequence[hal.Backend]:
        return list(self.backends)


class Toy(hal.Backend):
    name = "toy"
    device_type = "meta"
    priority = 60
    visible_devices_env = ("TOYX_VISIBLE_DEVICES",)
    dist_backend = "toyccl"

    def __init__(self, *, available: bool = True, dtypes: Sequence[torch.dtype] = (torch.float32,),
                 found: Sequence[Any] = (), raise_in: str = "") -> None:
        self.available, self._dtypes, self.found, self.raise_in = available, dtypes, found, raise_in

    def probe(self) -> hal.Probe:
        if self.raise_in == "probe-hang":
            RELEASE.wait(60)
        return hal.Probe(self.available, "toy says so", 1 if self.available else 0)

    def dtypes(self, index: int = 0) -> Sequence[torch.dtype]:
        return self._dtypes

    def devices(self) -> Sequence[hal.DeviceInfo]:
        if self.raise_in == "devices":
            raise RuntimeError("devices exploded")
        return [hal.DeviceInfo(0, "Toy One", 1 << 30)]

    def findings(self) -> Sequence[hal.Finding]:
        if self.raise_in == "findings":
            raise ValueError("findings exploded")
        return list(self.found)


def run(*backends: hal.Backend, timeout: float = 10.0, plugin: object = None) -> dict[str, Any]:
    with registered(plugin or Provide(*backends), "fakes"):
        return collect(Options(isolate=False, timeout=timeout))


def ids(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {f["id"]: f for f in report["findings"]}


def test_report_sections_and_ok_findings_on_this_machine() -> None:
    report = run(Toy(available=False))
    assert report["schema"] == "hal.doctor/1"
    assert report["selection"]["backend"] == "cpu"
    assert "toy: toy says so" in report["selection"]["reason"]
    assert report["torch"]["imports"] and report["torch"]["build"]
    assert report["system"]["memory"]["total"] > 0 and report["system"]["cpu"]["model"]
    assert {"torch-ok", "selection"} <= set(ids(report))
    assert report["exit_code"] == 0
    json.dumps(report)  # JSON-able throughout


def test_backend_findings_are_collected_with_their_source() -> None:
    mine = hal.Finding("toy.broken-thing", "error", "the toy is broken", "fix the toy")
    report = run(Toy(found=[mine]))
    f = ids(report)["toy.broken-thing"]
    assert (f["source"], f["severity"], f["fix"]) == ("toy", "error", "fix the toy")
    assert report["exit_code"] == 1


@pytest.mark.parametrize("where", ["devices", "findings"])
def test_a_raising_backend_method_becomes_a_finding(where: str) -> None:
    report = run(Toy(raise_in=where))
    f = ids(report)["backend-method-failed"]
    assert f"{where}()" in f["message"] and "exploded" in f["message"]
    assert report["selection"]["backend"] == "toy"  # the rest still works


def test_a_hanging_probe_is_reported_within_the_timeout() -> None:
    RELEASE.clear()
    report = run(Toy(raise_in="probe-hang"), timeout=0.5)
    f = ids(report)["probe-hung"]
    assert "'toy'" in f["message"] and "HAL_DISABLE_PLUGINS=fakes" in f["fix"]
    assert report["selection"]["backend"] == "cpu"
    assert report["exit_code"] == 1


class Hooked(Provide):
    seen: ClassVar[dict[str, Any]] = {}

    @hal.hookimpl
    def hal_doctor_findings(self, report: dict[str, Any]) -> Sequence[hal.Finding]:
        Hooked.seen = dict(report)
        return [hal.Finding("plugin.note", "info", f"saw {report['selection']['device']}")]


def test_plugin_findings_hook_sees_the_report() -> None:
    report = run(plugin=Hooked(Toy(available=False)))
    assert {"system", "torch", "selection", "environment", "hardware"} <= set(Hooked.seen)
    f = ids(report)["plugin.note"]
    assert (f["source"], f["message"]) == ("fakes", "saw cpu")


@pytest.mark.parametrize(("value", "expected"), [
    ("bf16", "bf16-emulated"), ("bfloat16", "bf16-emulated"), ("fp16", None),
    ("fp64", "precision-invalid"),
])
def test_bf16_requested_where_only_emulated(monkeypatch: pytest.MonkeyPatch, value: str,
                                            expected: str | None) -> None:
    monkeypatch.setenv("HAL_PRECISION", value)
    report = run(Toy(dtypes=(torch.float16, torch.float32)))
    found = ids(report)
    names = {"bf16-emulated", "precision-invalid"} & set(found)
    assert names == ({expected} if expected else set())
    if expected == "bf16-emulated":
        assert "HAL_PRECISION=fp16" in found[expected]["fix"]
        assert "float16, float32" in found[expected]["message"]


def test_bf16_native_is_not_flagged(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HAL_PRECISION", "bf16")
    report = run(Toy(dtypes=(torch.bfloat16, torch.float32)))
    assert "bf16-emulated" not in ids(report)


def test_environment_allowlist_is_derived_from_backends() -> None:
    backends = [Toy(), CpuBackend()]
    assert {"TOYX_", "TOY_", "META_", "TOYCCL_", "HAL_", "TORCH_", "PYTORCH_"} <= set(
        env_prefixes(backends))
    env = environment_section(backends, {
        "TOYX_VISIBLE_DEVICES": "0", "TOYCCL_DEBUG": "INFO", "HOME": "/root",
        "AWS_SECRET_ACCESS_KEY": "abc", "HAL_API_TOKEN": "t0k", "LD_LIBRARY_PATH": "/opt/x/lib",
        "PYTORCH_URL": "https://u:pw12345@h/x",
    })
    assert env == {"HAL_API_TOKEN": "<redacted>", "LD_LIBRARY_PATH": "/opt/x/lib",
                   "PYTORCH_URL": "https://<redacted>@h/x", "TOYCCL_DEBUG": "INFO",
                   "TOYX_VISIBLE_DEVICES": "0"}


# -- vendor mismatches, from fake trees and fake device modules, through the whole doctor -----

NVIDIA_PROC = "NVRM version: NVIDIA UNIX x86_64 Kernel Module  {v}  Release Build\n"


def nvidia_tree(tmp: Path, driver: str = "550.54.15") -> str:
    return make_fake_tree(tmp, pci=[FakePci(fc.pci_address(0), 0x10DE, 0x2330, 0x030200,
                                            "nvidia")],
                          dev=["nvidia0", "nvidiactl"],
                          files={"/proc/driver/nvidia/version": NVIDIA_PROC.format(v=driver)})


def amd_tree(tmp: Path) -> str:
    return make_fake_tree(tmp, pci=[FakePci(fc.pci_address(0), 0x1002, 0x74A1, ACCELERATOR_CLASS,
                                            "amdgpu")],
                          dev=["kfd", "dri/renderD128"],
                          files={"/sys/module/amdgpu/version": "6.8.5\n",
                                 **fk.kfd_files(["MI300X"])})


def npu_tree(tmp: Path) -> str:
    return make_fake_tree(tmp, pci=[FakePci("0000:c1:00.0", 0x19E5, 0xD802, ACCELERATOR_CLASS,
                                            "devdrv_device")], dev=["davinci0", "davinci_manager"])


SCENARIOS = {
    "nvidia-gpu-cpu-torch": (lambda t: [CudaBackend(fc.make_cuda([]), fc.cpu_version(), False,
                                                    nvidia_tree(t))],
                             "cuda.cpu-torch-on-nvidia"),
    "driver-too-old": (lambda t: [CudaBackend(fc.make_cuda(["A100-80GB"]),
                                              fc.make_version(cuda="12.8"), False,
                                              nvidia_tree(t, driver="470.57.02"))],
                       "cuda.driver-too-old"),
    "amd-gpu-cuda-torch": (lambda t: [RocmBackend(fc.make_cuda([]), fc.cuda_version(), False,
                                                  amd_tree(t))],
                           "rocm.non-rocm-torch-on-amd"),
    "npu-without-torch-npu": (lambda t: [AscendBackend(None, fn.absent_loader, npu_tree(t),
                                                       environ={},
                                                       versions_of={"torch": "2.13.0"}.get)],
                              "ascend.torch_npu_missing"),
}


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_vendor_mismatch_is_diagnosed_end_to_end(tmp_path: Path, scenario: str) -> None:
    make, finding_id = SCENARIOS[scenario]
    report = run(*make(tmp_path))
    f = ids(report)[finding_id]
    assert f["severity"] == "error" and f["fix"]
    assert report["exit_code"] == 1
    assert report["hardware"], "the fake tree's hardware is listed without torch"
    for fmt in ("plain", "markdown"):
        text = render(report, fmt)
        assert finding_id in text and f["fix"] in text.replace("\\|", "|")
    assert f in json.loads(render(report, "json"))["findings"]
    assert finding_id in render(report, "rich")


def test_smoke_on_the_cpu_runs_every_step() -> None:
    result = smoke_test(CpuBackend(), "cpu")
    names = [s["name"] for s in result["steps"]]
    assert names[0] == "allocate" and names[-1] == "collective"
    assert "matmul float32" in names
    assert all(s["ok"] for s in result["steps"]), result
