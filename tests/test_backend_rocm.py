"""RocmBackend on fake HIP-flavoured torch.cuda devices, KFD topologies and sysfs trees."""

from __future__ import annotations

import os
from typing import Any

import pytest
import torch

from hal.backends.cpu import CpuBackend
from hal.backends.cuda import CudaBackend
from hal.backends.cuda import testing as fc
from hal.backends.rocm import RocmBackend
from hal.backends.rocm.backend import native_dtype_names
from hal.backends.rocm.testing import fake_kfd as fk
from hal.selection import decide
from hal.testing.fake_tree import FakePci, make_fake_tree

VISIBLE = ("CUDA_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in (*VISIBLE, "HAL_DEVICE", "HAL_STRICT", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)


def amd_tree(tmp_path: Any, devices: list[str], gpus_on_pci: int | None = None) -> str:
    n = len(devices) if gpus_on_pci is None else gpus_on_pci
    return make_fake_tree(
        tmp_path,
        pci=[FakePci(fc.pci_address(i), 0x1002, 0x74A1, 0x120000, "amdgpu") for i in range(n)],
        dev=["kfd", *(f"dri/renderD{128 + i}" for i in range(n))],
        files={"/sys/module/amdgpu/version": "6.8.5\n", **fk.kfd_files(devices)},
    )


def backend(tmp_path: Any, devices: list[str]) -> tuple[RocmBackend, Any]:
    module = fc.make_cuda(devices)
    return RocmBackend(module, fc.hip_version(), False, amd_tree(tmp_path, devices)), module


@pytest.mark.parametrize(
    ("key", "arch", "bf16", "fp8"),
    [("MI300X", "gfx942:sramecc+:xnack-", True, torch.float8_e4m3fnuz),
     ("MI250X", "gfx90a:sramecc+:xnack-", True, None)],
)
def test_fake_device_selects_rocm_and_reports_its_spec_sheet(
        tmp_path: Any, key: str, arch: str, bf16: bool, fp8: torch.dtype | None) -> None:
    b, module = backend(tmp_path, [key] * 8)
    cuda = CudaBackend(module, fc.hip_version(), False)
    sel = decide([cuda, b, CpuBackend()], environ={})
    assert sel.backend is b and sel.device == torch.device("cuda", 0)
    assert not module.is_initialized()
    assert sel.candidates[0].reason.endswith("use the rocm backend")
    info = b.devices()[3]
    spec = fc.SPECS[key]
    assert (info.name, info.total_memory, info.capability) == (spec.name, spec.total_memory, arch)
    assert info.extras["compute_units"] == spec.multi_processor_count
    dtypes = list(b.dtypes(0))
    assert (torch.bfloat16 in dtypes) == bf16
    assert (fp8 in dtypes) if fp8 is not None else not any(
        d.itemsize == 1 for d in dtypes)
    assert torch.float8_e4m3fn not in dtypes  # MI300's fp8 is the FNUZ variant
    assert b.memory(0).total == spec.total_memory


def test_arch_dtype_table() -> None:
    assert native_dtype_names("gfx950")[2] == "float8_e4m3fn"
    assert native_dtype_names("gfx1100") == ["bfloat16", "float16", "float32"]
    assert native_dtype_names("gfx1201")[2] == "float8_e4m3fn"
    assert native_dtype_names("gfx906:sramecc+:xnack-") == ["float16", "float32"]
    assert native_dtype_names("gfx1030") == ["float16", "float32"]


def test_hip_oom_message_and_is_oom(tmp_path: Any) -> None:
    b, module = backend(tmp_path, ["MI250X"])
    with pytest.raises(torch.OutOfMemoryError) as info:
        fc.allocate(module, 80 << 30)
    assert str(info.value).startswith("HIP out of memory. Tried to allocate 80.00 GiB. GPU 0 "
                                      "has a total capacity of 63.98 GiB")
    assert "PYTORCH_HIP_ALLOC_CONF" in str(info.value)
    assert b.is_oom(info.value)
    assert not CudaBackend(module, fc.hip_version()).is_oom(info.value)


@pytest.mark.parametrize(
    ("env", "count"),
    [({}, 8),
     ({"ROCR_VISIBLE_DEVICES": "0,1,2,3"}, 4),
     ({"ROCR_VISIBLE_DEVICES": "4,5,6,7", "HIP_VISIBLE_DEVICES": "1"}, 1),
     ({"HIP_VISIBLE_DEVICES": "2,3"}, 2),
     ({"CUDA_VISIBLE_DEVICES": "5"}, 1),
     ({"ROCR_VISIBLE_DEVICES": "0,1", "HIP_VISIBLE_DEVICES": "3"}, 0),
     ({"HIP_VISIBLE_DEVICES": "-1"}, 0),
     ({"ROCR_VISIBLE_DEVICES": "9"}, 0)],
)
def test_visible_devices_reconciled_rocr_then_hip(tmp_path: Any, monkeypatch: pytest.MonkeyPatch,
                                                  env: dict[str, str], count: int) -> None:
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    b, module = backend(tmp_path, ["MI300X"] * 8)
    before = dict(os.environ)
    probe = b.probe()
    assert probe.device_count == count and probe.available == (count > 0)
    assert dict(os.environ) == before and not module.is_initialized()
    if count == 0:
        assert "hides every GPU" in probe.reason


def test_real_default_backend_is_not_a_rocm_build() -> None:
    probe = RocmBackend().probe()
    assert not probe.available and "is not a ROCm build" in probe.reason
    sel = decide([CudaBackend(), RocmBackend(), CpuBackend()], environ={"HAL_DEVICE": "rocm"})
    assert sel.backend.name == "cpu" and sel.fell_back
    assert "not a ROCm build" in sel.reason and sel.warning is not None


def test_hal_devices_cli_says_not_a_rocm_build() -> None:
    import subprocess
    import sys

    env = {**os.environ, "HAL_DEVICE": "rocm"}
    out = subprocess.run([sys.executable, "-m", "hal", "devices"], capture_output=True,
                         text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "rocm" in out.stdout and "is not a ROCm build" in out.stdout
    assert "selected: cpu" in out.stdout


def test_no_driver_and_no_gpu_reasons(tmp_path: Any) -> None:
    module = fc.make_cuda(["MI300X"], driver_loaded=False)
    no_driver = RocmBackend(module, fc.hip_version(), False, str(tmp_path))
    assert no_driver.probe().reason.startswith("no amdgpu driver")
    empty = RocmBackend(fc.make_cuda([], hip=True), fc.hip_version(), False,
                        make_fake_tree(tmp_path, dev=["kfd"], files=fk.kfd_files([])))
    assert "reports no GPU" in empty.probe().reason


def test_hardware_from_a_fake_tree(tmp_path: Any) -> None:
    b, _ = backend(tmp_path, ["MI300X"] * 2)
    kinds = [(h.kind, h.path) for h in b.hardware()]
    assert kinds == [("pci", "/sys/bus/pci/devices/0000:07:00.0"),
                     ("pci", "/sys/bus/pci/devices/0000:0f:00.0"),
                     ("dev", "/dev/kfd"), ("dev", "/dev/dri/renderD128"),
                     ("dev", "/dev/dri/renderD129"), ("driver", "/sys/module/amdgpu/version")]
    assert b.versions()["amdgpu_driver"] == "6.8.5"


@pytest.mark.parametrize("version", [fc.cuda_version(), fc.cpu_version()], ids=["cuda", "cpu"])
def test_finding_amd_gpu_with_non_rocm_torch(tmp_path: Any, version: Any) -> None:
    b = RocmBackend(fc.make_cuda([]), version, False, amd_tree(tmp_path, ["MI300X"]))
    (f,) = [f for f in b.findings() if f.id == "rocm.non-rocm-torch-on-amd"]
    assert f.severity == "error" and "AMD GPU" in f.message
    assert f.fix.startswith('pip install --force-reinstall "torch==2.13.0" --index-url '
                            "https://download.pytorch.org/whl/rocm")
    assert RocmBackend(fc.make_cuda([]), version, False, str(tmp_path / "none")).findings() == []


@pytest.mark.parametrize(
    ("env", "ids"),
    [({"HIP_VISIBLE_DEVICES": "0", "CUDA_VISIBLE_DEVICES": "1"},
      ["rocm.visible-devices-conflict"]),
     ({"ROCR_VISIBLE_DEVICES": "0", "HIP_VISIBLE_DEVICES": "0,1"},
      ["rocm.visible-devices-conflict"]),
     ({"ROCR_VISIBLE_DEVICES": "0,1", "CUDA_VISIBLE_DEVICES": "1"},
      ["rocm.visible-devices-conflict"]),
     ({"ROCR_VISIBLE_DEVICES": "0,1", "HIP_VISIBLE_DEVICES": "5"},
      ["rocm.visible-devices-hide-all"]),
     ({"HIP_VISIBLE_DEVICES": ""}, ["rocm.visible-devices-hide-all"]),
     ({"HIP_VISIBLE_DEVICES": "1", "CUDA_VISIBLE_DEVICES": "1"}, [])],
)
def test_findings_visible_devices(tmp_path: Any, monkeypatch: pytest.MonkeyPatch,
                                  env: dict[str, str], ids: list[str]) -> None:
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    b, _ = backend(tmp_path, ["MI300X"] * 2)
    found = b.findings()
    assert [f.id for f in found] == ids
    for f in found:
        assert f.fix and all(v in f.message for k, v in env.items() if k in f.message)


# -- issue 14 finding 4: containers given some of the host's GPUs -------------------------------

def test_kfd_nodes_whose_render_node_is_missing_are_not_counted(tmp_path: Any) -> None:
    devices = ["MI300X"] * 4
    root = make_fake_tree(
        tmp_path, dev=["kfd", "dri/renderD128", "dri/renderD130"],  # GPUs 0 and 2 mapped in
        files={"/sys/module/amdgpu/version": "6.8.5\n", **fk.kfd_files(devices)})
    b = RocmBackend(fc.make_cuda(devices[:2]), fc.hip_version(), False, root)
    assert len(b.kfd_gpus()) == 2
    probe = b.probe()
    assert probe.available and probe.device_count == 2 and "visible of 2" in probe.reason
    assert [d.index for d in b.devices()] == [0, 1]


@pytest.mark.skipif(os.geteuid() == 0, reason="root opens any file: os.access cannot say no")
def test_kfd_nodes_whose_render_node_is_not_writable_are_not_counted(tmp_path: Any) -> None:
    root = amd_tree(tmp_path, ["MI300X"] * 2)
    os.chmod(os.path.join(root, "dev/dri/renderD129"), 0o444)
    assert len(RocmBackend(fc.make_cuda(["MI300X"]), fc.hip_version(), False, root).kfd_gpus()) == 1


def test_a_kfd_node_without_a_render_minor_still_counts(tmp_path: Any) -> None:
    files = {k: v.replace("drm_render_minor", "old_kernel_field")
             for k, v in fk.kfd_files(["MI250X"] * 2).items()}
    root = make_fake_tree(tmp_path, dev=["kfd"], files=files)
    assert len(RocmBackend(fc.make_cuda([]), fc.hip_version(), False, root).kfd_gpus()) == 2


def test_rocm_does_not_import_the_cuda_backend() -> None:
    import ast
    import pathlib

    import hal.backends.rocm.backend as rocm

    tree = ast.parse(pathlib.Path(rocm.__file__).read_text())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert not {m for m in imported if m and m.startswith("hal.backends.cuda")}
