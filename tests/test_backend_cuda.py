"""CudaBackend on fake torch.cuda devices from spec sheets, fake NVML and fake sysfs trees."""

from __future__ import annotations

import os
from typing import Any

import pytest
import torch

from hal.backends.cpu import CpuBackend
from hal.backends.cuda import CudaBackend
from hal.backends.cuda import testing as fc
from hal.backends.cuda.backend import native_dtype_names
from hal.backends.rocm import RocmBackend
from hal.selection import decide
from hal.testing.fake_tree import FakePci, make_fake_tree

VISIBLE = ("CUDA_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in (*VISIBLE, "HAL_DEVICE", "HAL_STRICT", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)


def backend(devices: list[str], *, nvml: bool = True, root: str = "/nonexistent",
            driver: str | None = "550.54.15", mig: dict[int, int] | None = None
            ) -> tuple[CudaBackend, Any]:
    module = fc.make_cuda(devices)
    n = fc.make_nvml(devices, driver=driver, mig=mig) if nvml else False
    return CudaBackend(module, fc.cuda_version(), n, root), module


@pytest.mark.parametrize(
    ("key", "capability", "bf16", "fp16", "fp8"),
    [
        ("A100-80GB", "8.0", True, True, False),
        ("V100-32GB", "7.0", False, True, False),
        ("T4", "7.5", False, True, False),
        ("H100", "9.0", True, True, True),
    ],
)
def test_fake_device_selects_cuda_and_reports_its_spec_sheet(
        key: str, capability: str, bf16: bool, fp16: bool, fp8: bool) -> None:
    b, module = backend([key])
    sel = decide([b, RocmBackend(module, fc.cuda_version()), CpuBackend()], environ={})
    assert sel.backend is b
    assert sel.device == torch.device("cuda", 0)
    assert isinstance(sel.device, torch.device)
    spec = fc.SPECS[key]
    (info,) = b.devices()
    assert (info.name, info.total_memory, info.capability) == (
        spec.name, spec.total_memory, capability)
    assert info.extras["sm_count"] == spec.multi_processor_count
    assert info.extras["uuid"] == fc.device_uuid(spec, 0)
    assert info.extras["pci_bus_id"] == "00000000:07:00.0"
    dtypes = list(b.dtypes(0))
    assert (torch.bfloat16 in dtypes, torch.float16 in dtypes,
            torch.float8_e4m3fn in dtypes) == (bf16, fp16, fp8)
    assert dtypes[-1] == torch.float32
    mem = b.memory(0)
    assert mem.total == spec.total_memory and mem.free == spec.total_memory


def test_bf16_emulation_does_not_count_as_native() -> None:
    b, module = backend(["V100-32GB"])
    assert module.is_bf16_supported()  # torch says yes (emulated) ...
    assert torch.bfloat16 not in b.dtypes(0)  # ... hal does not
    assert native_dtype_names(5, 2) == ["float32"]
    assert native_dtype_names(5, 3) == ["float16", "float32"]
    assert native_dtype_names(8, 9)[:3] == ["bfloat16", "float16", "float8_e4m3fn"]


@pytest.mark.parametrize("nvml", [True, False], ids=["pynvml", "torch-nvml-count"])
def test_probe_has_no_side_effects(nvml: bool) -> None:
    b, module = backend(["H100"] * 8, nvml=nvml)
    before = dict(os.environ)
    probe = b.probe()
    decide([b, CpuBackend()], environ={})
    assert probe.available and probe.device_count == 8
    assert not module.is_initialized()
    assert dict(os.environ) == before


def test_memory_figures_track_the_allocator_and_oom_is_recognised() -> None:
    b, module = backend(["T4"])
    fc.allocate(module, 3 << 30)
    mem = b.memory(0)
    assert mem.allocated == 3 << 30 and mem.reserved >= mem.allocated and mem.peak == 3 << 30
    assert mem.free == fc.SPECS["T4"].total_memory - mem.reserved
    with pytest.raises(torch.OutOfMemoryError) as info:
        fc.allocate(module, 20 << 30)
    text = str(info.value)
    assert text.startswith("CUDA out of memory. Tried to allocate 20.00 GiB. GPU 0 has a total "
                           "capacity of 14.76 GiB of which")
    assert b.is_oom(info.value)
    assert b.is_oom(RuntimeError("CUDA error: out of memory"))
    assert not b.is_oom(RuntimeError("HIP out of memory. Tried to allocate 2.00 GiB"))
    assert not b.is_oom(MemoryError())
    b.reset_peak_memory(0)
    b.empty_cache()
    b.synchronize(0)
    assert b.memory(0).peak == 3 << 30


@pytest.mark.parametrize("nvml", [True, False], ids=["pynvml", "torch-nvml-count"])
@pytest.mark.parametrize(
    ("value", "count"),
    [("1", 1), ("0,1", 2), ("1,0,3", 3), ("3,2", 2), ("2,7,1", 1), ("", 0), ("-1", 0),
     ("0,0", 0), ("9", 0), ("1gpu,0", 2)],
)
def test_cuda_visible_devices_indices(monkeypatch: pytest.MonkeyPatch, value: str, count: int,
                                      nvml: bool) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", value)
    b, _ = backend(["A100-80GB"] * 4, nvml=nvml)
    probe = b.probe()
    assert probe.device_count == count
    assert probe.available == (count > 0)
    if count == 0:
        assert "hides every GPU" in probe.reason and repr(value) in probe.reason


@pytest.mark.parametrize("nvml", [True, False], ids=["pynvml", "torch-nvml-count"])
def test_cuda_visible_devices_uuids(monkeypatch: pytest.MonkeyPatch, nvml: bool) -> None:
    devices = ["H100", "A100-80GB"]
    a100 = fc.device_uuid(fc.SPECS["A100-80GB"], 1)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", a100[:12])  # a unique prefix is enough
    b, _ = backend(devices, nvml=nvml)
    assert b.probe().device_count == 1
    assert b.devices()[0].name == "NVIDIA A100-SXM4-80GB"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-00000000-dead-beef")
    assert not backend(devices, nvml=nvml)[0].probe().available


def test_cuda_visible_devices_mig_ids(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    nvml = fc.make_nvml(["A100-80GB"], mig={0: 3})
    migs = fc.mig_uuids(nvml, 0)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", f"{migs[0]},{migs[2]}")
    b = CudaBackend(fc.make_cuda(["A100-80GB"]), fc.cuda_version(), nvml, "/nonexistent")
    assert b.probe().device_count == 2
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "MIG-0000-not-there")
    assert not b.probe().available
    # Without pynvml, torch's NVML count gives up on MIG ids (-1): count them, never crash.
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", f"{migs[0]},{migs[1]}")
    torch_only = CudaBackend(fc.make_cuda(["A100-80GB"]), fc.cuda_version(), False,
                             nvidia_tree(tmp_path, gpus=1))
    probe = torch_only.probe()
    assert probe.available and probe.device_count == 2 and "unverified" in probe.reason


def test_each_unavailable_state_has_its_own_reason(tmp_path: Any) -> None:
    cpu = CudaBackend(fc.make_cuda(["T4"]), fc.cpu_version(), False)
    hip = CudaBackend(fc.make_cuda(["MI300X"]), fc.hip_version(), False)
    no_driver = CudaBackend(fc.make_cuda(["T4"], driver_loaded=False), fc.cuda_version(),
                            fc.make_nvml(["T4"], driver=None), str(tmp_path))
    no_gpu = CudaBackend(fc.make_cuda([]), fc.cuda_version(), fc.make_nvml([]), str(tmp_path))
    reasons = [b.probe().reason for b in (cpu, hip, no_driver, no_gpu)]
    assert "CPU-only build" in reasons[0]
    assert "use the rocm backend" in reasons[1]
    assert reasons[2].startswith("no NVIDIA driver") and "Driver Not Loaded" in reasons[2]
    assert "reports no GPU" in reasons[3]
    assert len(set(reasons)) == 4
    assert not any(b.probe().available for b in (cpu, hip, no_driver, no_gpu))


def test_real_default_backend_on_this_cpu_machine() -> None:
    b = CudaBackend()
    probe = b.probe()
    assert not probe.available
    assert "CPU-only build" in probe.reason and torch.__version__ in probe.reason
    sel = decide([b, RocmBackend(), CpuBackend()], environ={"HAL_DEVICE": "cuda"})
    assert sel.backend.name == "cpu" and sel.fell_back
    assert "cuda: torch" in sel.reason and "CPU-only build" in sel.reason


NVIDIA_PROC = ("NVRM version: NVIDIA UNIX x86_64 Kernel Module  {v}  Release Build  "
               "(dvs-builder@U16-I3-B03-4-3)  Thu Oct 27 21:42:13 UTC 2022\n"
               "GCC version:  gcc version 12.2.0 (Debian 12.2.0-14)\n")


def nvidia_tree(tmp_path: Any, driver: str = "550.54.15", gpus: int = 2) -> str:
    return make_fake_tree(
        tmp_path,
        pci=[FakePci(fc.pci_address(i), 0x10DE, 0x2330, 0x030200, "nvidia") for i in range(gpus)]
        + [FakePci("0000:00:1f.6", 0x8086, 0x15B9, 0x020000, "e1000e")],
        dev=[*(f"nvidia{i}" for i in range(gpus)), "nvidiactl", "nvidia-uvm"],
        files={"/proc/driver/nvidia/version": NVIDIA_PROC.format(v=driver),
               **{f"/proc/driver/nvidia/gpus/{fc.pci_address(i)}/information":
                  f"Model: \t\t NVIDIA H100 80GB HBM3\nGPU UUID: \t "
                  f"{fc.device_uuid(fc.SPECS['H100'], i)}\n" for i in range(gpus)}},
    )


def test_hardware_from_a_fake_tree(tmp_path: Any) -> None:
    b = CudaBackend(fc.make_cuda([]), fc.cpu_version(), False, nvidia_tree(tmp_path))
    hw = b.hardware()
    assert [h.kind for h in hw] == ["pci", "pci", "dev", "dev", "driver"]
    assert hw[0].path == "/sys/bus/pci/devices/0000:07:00.0" and "0x2330" in hw[0].detail
    assert "driver nvidia" in hw[0].detail
    assert [h.path for h in hw if h.kind == "dev"] == ["/dev/nvidia0", "/dev/nvidia1"]
    assert "550.54.15" in hw[-1].detail
    assert CudaBackend(root=str(tmp_path / "empty")).hardware() == []


def test_proc_fallback_counts_gpus_without_nvml(tmp_path: Any) -> None:
    module = fc.make_cuda(["H100"] * 2, driver_loaded=False)  # torch's NVML count fails too
    b = CudaBackend(module, fc.cuda_version(), False, nvidia_tree(tmp_path))
    probe = b.probe()
    assert probe.available and probe.device_count == 2 and "/proc/driver/nvidia" in probe.reason
    assert b.versions()["driver"] == "550.54.15"


def test_finding_nvidia_gpu_with_cpu_torch(tmp_path: Any) -> None:
    b = CudaBackend(fc.make_cuda([]), fc.cpu_version(), False, nvidia_tree(tmp_path))
    (f,) = b.findings()
    assert f.id == "cuda.cpu-torch-on-nvidia" and f.severity == "error"
    assert f.fix == ('pip install --force-reinstall "torch==2.13.0" '
                     "--index-url https://download.pytorch.org/whl/cu126")
    new = CudaBackend(fc.make_cuda([]), fc.cpu_version(), False,
                      nvidia_tree(tmp_path / "new", driver="580.65.06"))
    assert new.findings()[0].fix.endswith("/whl/cu130")


@pytest.mark.parametrize(
    ("runtime", "driver", "too_old"),
    [("12.4", "470.57.02", True), ("12.4", "525.60.13", False), ("12.8", "525.60.11", True),
     ("11.8", "450.80.02", False), ("13.0", "575.57.08", True), ("13.0", "580.65.06", False)],
)
def test_finding_driver_too_old(tmp_path: Any, runtime: str, driver: str, too_old: bool) -> None:
    b = CudaBackend(fc.make_cuda(["A100-80GB"]), fc.make_version(cuda=runtime), False,
                    nvidia_tree(tmp_path, driver=driver))
    found = [f for f in b.findings() if f.id == "cuda.driver-too-old"]
    assert bool(found) == too_old
    if too_old:
        assert driver in found[0].message and f"CUDA {runtime}" in found[0].message
        assert "upgrade the NVIDIA driver" in found[0].fix


@pytest.mark.parametrize(("value", "hides"), [("", True), ("-1", True), ("4,5", True),
                                               ("1", False), ("0,0", True)])
def test_finding_visible_devices_hide_all(tmp_path: Any, monkeypatch: pytest.MonkeyPatch,
                                          value: str, hides: bool) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", value)
    b = CudaBackend(fc.make_cuda(["H100"] * 2), fc.cuda_version(), False, nvidia_tree(tmp_path))
    found = [f for f in b.findings() if f.id == "cuda.visible-devices-hide-all"]
    assert bool(found) == hides
    if hides:
        assert repr(value) in found[0].message and "CUDA_VISIBLE_DEVICES" in found[0].fix


# -- real hardware -------------------------------------------------------------------------

gpu = pytest.mark.skipif(
    not (torch.version.cuda and torch.cuda.device_count() > 0), reason="needs a real CUDA GPU")


def _in_subprocess(code: str) -> str:
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300, check=True)
    return out.stdout.strip()


@pytest.mark.gpu
@gpu
def test_real_select_leaves_cuda_uninitialised() -> None:
    out = _in_subprocess("import hal, torch; s = hal.select(); "
                         "print(s.backend.name, torch.cuda.is_initialized())")
    assert out == "cuda False"


@pytest.mark.gpu
@gpu
def test_real_memory_agrees_with_torch() -> None:
    b = CudaBackend()
    x = torch.empty(256 << 20, dtype=torch.uint8, device="cuda:0")
    mem = b.memory(0)
    free, total = torch.cuda.mem_get_info(0)
    assert mem.total == total == torch.cuda.get_device_properties(0).total_memory
    assert abs(mem.free - free) <= 64 << 20
    assert mem.allocated == torch.cuda.memory_allocated(0) >= x.numel()
    assert mem.reserved == torch.cuda.memory_reserved(0)
    assert mem.peak == torch.cuda.max_memory_allocated(0)
    info = b.devices()[0]
    assert info.name == torch.cuda.get_device_name(0)
    assert info.extras["uuid"].startswith("GPU-")
    assert b.is_oom(_real_oom())


def _real_oom() -> BaseException:
    try:
        torch.empty(1 << 50, dtype=torch.uint8, device="cuda:0")
    except torch.OutOfMemoryError as exc:
        return exc
    raise AssertionError("allocating 1 PiB did not fail")


@pytest.mark.gpu
@gpu
def test_real_h100_reports_bf16_and_fp8() -> None:
    if torch.cuda.get_device_capability(0) != (9, 0):
        pytest.skip(f"not an H100: {torch.cuda.get_device_name(0)}")
    dtypes = CudaBackend().dtypes(0)
    assert torch.bfloat16 in dtypes and torch.float8_e4m3fn in dtypes


# -- issue 14 finding 8: Pascal fp16 ------------------------------------------------------------

@pytest.mark.parametrize(("cc", "native", "fast", "emulated"), [
    ((6, 1), [], [], [torch.bfloat16, torch.float16]),   # GTX 10xx, P4/P40: fp16 at 1/64 rate
    ((6, 0), [torch.float16], [], [torch.bfloat16]),      # P100: 2x fp32, no tensor cores
    ((7, 0), [torch.float16], [torch.float16], [torch.bfloat16]),
    ((8, 0), [torch.bfloat16, torch.float16], [torch.bfloat16, torch.float16], []),
])
def test_fp16_counts_as_fast_only_from_cc_7(cc: tuple[int, int], native: list[torch.dtype],
                                            fast: list[torch.dtype],
                                            emulated: list[torch.dtype]) -> None:
    spec = fc.with_spec("V100-32GB", major=cc[0], minor=cc[1], name=f"hypothetical CC {cc}")
    b = CudaBackend(fc.make_cuda([spec]), fc.cuda_version(), False)
    assert list(b.dtypes(0)) == [*native, torch.float32]
    assert list(b.fast_dtypes(0)) == fast
    assert list(b.emulated_dtypes(0)) == emulated


def test_pascal_gets_fp32_and_a_forced_fp16_on_cc_6_1_warns() -> None:
    import hal.precision as precision
    from hal.errors import HalPrecisionWarning

    pascal = CudaBackend(fc.make_cuda([fc.with_spec("V100-32GB", major=6, minor=1)]),
                         fc.cuda_version(), False)
    pol = precision.policy(pascal)
    assert pol.compute_dtype == torch.float32 and not pol.needs_scaler
    with pytest.warns(HalPrecisionWarning, match="only by emulation"):
        assert precision.policy(pascal, requested="fp16").compute_dtype == torch.float16


# -- environment injection and the device-module base -------------------------------------------

def test_environment_is_injected_or_read_at_call_time(monkeypatch: pytest.MonkeyPatch) -> None:
    nvml = fc.make_nvml(["H100"] * 4)
    given = CudaBackend(fc.make_cuda(["H100"] * 4), fc.cuda_version(), nvml,
                        environ={"CUDA_VISIBLE_DEVICES": "2"})
    assert given.probe().device_count == 1
    live = CudaBackend(fc.make_cuda(["H100"] * 4), fc.cuda_version(), nvml)
    assert live.probe().device_count == 4
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,3")
    assert live.probe().device_count == 2
    assert given.probe().device_count == 1  # the mapping given wins over os.environ


def test_the_real_module_is_torch_get_device_module() -> None:
    assert CudaBackend().module is torch.get_device_module("cuda") is torch.cuda
