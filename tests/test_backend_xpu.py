"""The Intel XPU backend against fakes of real GPUs, fake filesystem trees, and this machine."""

from __future__ import annotations

import os
import sys
import types
from pathlib import Path

import pytest
import torch

import hal
from hal.backends.cpu import CpuBackend
from hal.backends.xpu import XpuBackend, stack
from hal.backends.xpu.testing import fake_xpu as fx
from hal.selection import decide
from hal.testing import oom_corpus
from hal.testing.conformance import run_checks
from hal.testing.fake_tree import ACCELERATOR_CLASS, VGA_CLASS, FakePci, make_fake_tree

MiB = 1024**2


def backend_for(fake: fx.FakeXpu, root: str = "/nonexistent",
                environ: dict[str, str] | None = None) -> XpuBackend:
    return XpuBackend(fake.module, root, environ=environ or {}, versions_of=fake.versions_of)


@pytest.mark.parametrize(("fake", "count", "memory", "dtypes", "fp64"), [
    (fx.max_1550_card(), 2, 65520 * MiB, [torch.bfloat16, torch.float16, torch.float32], True),
    (fx.fake_xpu(fx.max_1550_composite()), 1, 2 * 65520 * MiB,
     [torch.bfloat16, torch.float16, torch.float32], True),
    (fx.fake_xpu(fx.ARC_A770), 1, 15473 * MiB, [torch.bfloat16, torch.float16, torch.float32],
     False),
], ids=["max1550-flat", "max1550-composite", "arc-a770"])
def test_fake_device_selects_xpu_with_spec_figures(fake: fx.FakeXpu, count: int, memory: int,
                                                   dtypes: list[torch.dtype], fp64: bool) -> None:
    backend = backend_for(fake)
    sel = decide([backend, CpuBackend()], environ={})
    assert sel.backend is backend and sel.index == 0 and sel.device == torch.device("xpu:0")
    assert f"{count} Intel XPU device(s)" in sel.reason
    assert not fake.module.initialized, "probe must not initialise the XPU runtime"
    infos = backend.devices()
    assert len(infos) == count and all(i.total_memory == memory for i in infos)
    assert infos[0].extras["has_fp64"] is fp64
    assert backend.memory(count - 1).total == memory
    assert list(backend.dtypes(0)) == dtypes


def test_max_1550_card_totals_128_gb_of_hbm() -> None:
    backend = backend_for(fx.max_1550_card(cards=2))
    total = sum(d.total_memory for d in backend.devices())
    assert len(backend.devices()) == 4 and total == 4 * 65520 * MiB  # 2 x 128 GB less firmware


def test_gpu_without_xmx_has_no_native_bf16() -> None:
    igpu = fx.XpuSpec("Intel(R) Graphics", 8 * 1024 * MiB, 0x7D55, 128, 128, 8, 1024, 64, (8, 16),
                      has_fp16=True, has_fp64=False, has_bfloat16_conversions=True,
                      has_subgroup_matrix_multiply_accumulate=False, is_integrated_gpu=True)
    assert list(backend_for(fx.fake_xpu(igpu)).dtypes(0)) == [torch.float16, torch.float32]


def test_memory_and_maintenance() -> None:
    fake = fx.max_1550_card()
    backend = backend_for(fake)
    fake.module.allocate(3 * 1024 * MiB, device=1)
    mem = backend.memory(1)
    assert (mem.allocated, mem.reserved, mem.peak) == (3072 * MiB,) * 3
    assert mem.free == 65520 * MiB - 3072 * MiB and "mem_get_info" in mem.source
    backend.set_device(1)
    backend.synchronize(1)
    backend.reset_peak_memory(1)
    backend.empty_cache()


def test_memory_fallback_without_mem_get_info() -> None:
    fake = fx.max_1550_card()
    proxy = types.SimpleNamespace(**{n: getattr(fake.module, n) for n in (
        "_is_compiled", "device_count", "get_device_properties", "memory_allocated",
        "memory_reserved", "max_memory_allocated")})
    fake.module.allocate(1024 * MiB)
    mem = XpuBackend(proxy, "/none", environ={}, versions_of=fake.versions_of).memory(0)
    assert mem.free == 65520 * MiB - 1024 * MiB and "missing" in mem.source


def test_conformance_suite_on_the_max_1550_fake() -> None:
    fake = fx.max_1550_card()
    problems = run_checks(backend_for(fake), oom_error=fx.oom_error(), corpus_vendor="xpu",
                          runtime_initialized=fake.module.is_initialized)
    assert problems == []


def test_is_oom_on_the_real_message_and_the_corpus() -> None:
    backend = backend_for(fx.max_1550_card())
    exc = fx.oom_error()
    assert isinstance(exc, torch.OutOfMemoryError)
    assert str(exc).startswith("XPU out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total "
                               "capacity of 63.98 GiB")
    assert backend.is_oom(exc) and not backend.is_oom(ValueError(str(exc)))
    assert oom_corpus.check_backend(backend.is_oom, "xpu") == []


# -- probe reasons ------------------------------------------------------------------------------

def test_probe_torch_without_xpu() -> None:
    probe = backend_for(fx.fake_xpu(compiled=False, torch_version="2.13.0+cpu")).probe()
    assert not probe.available
    assert "torch 2.13.0+cpu is built without XPU support" in probe.reason
    assert stack.XPU_INDEX_URL in probe.reason


def test_probe_no_devices_names_the_hiding_variables() -> None:
    fake = fx.FakeXpu(fx.FakeXpuModule([]))
    assert "sees no Intel GPU" in backend_for(fake).probe().reason
    reason = backend_for(fake, environ={"ZE_AFFINITY_MASK": "7"}).probe().reason
    assert "ZE_AFFINITY_MASK='7' may hide them" in reason


def test_real_torch_xpu_on_this_machine() -> None:
    probe = XpuBackend().probe()
    assert not probe.available and "built without XPU support" in probe.reason
    sel = decide([XpuBackend(), CpuBackend()], environ={"HAL_DEVICE": "xpu"})
    assert sel.backend.name == "cpu" and sel.fell_back and "xpu: torch" in sel.reason


# -- hardware() and findings() from fake trees -------------------------------------------------

def intel_tree(tmp_path: Path, gpus: list[FakePci]) -> str:
    pci = [*gpus,
           FakePci("0000:00:00.0", 0x8086, 0x9A14, 0x060000, None),       # host bridge
           FakePci("0000:00:1f.3", 0x8086, 0x51C8, 0x040300, "snd_hda_intel"),  # audio
           FakePci("0000:3b:00.0", 0x8086, 0x1592, 0x020000, "ice")]      # NIC
    root = make_fake_tree(tmp_path, pci=pci, dev=[f"dri/renderD{128 + i}" for i in range(
        len(gpus) + 1)])
    for i, gpu in enumerate(gpus):  # /sys/class/drm/renderD*/device -> the PCI function
        drm = Path(root, "sys/class/drm", f"renderD{128 + i}")
        drm.mkdir(parents=True)
        (drm / "device").symlink_to(Path(root, "sys/bus/pci/devices", gpu.address))
    return root


MAX_PCI = FakePci("0000:29:00.0", 0x8086, 0x0BD5, 0x038000, "i915")
ARC_PCI = FakePci("0000:03:00.0", 0x8086, 0x56A0, VGA_CLASS, "xe")
IGPU_PCI = FakePci("0000:00:02.0", 0x8086, 0x7D55, VGA_CLASS, "i915")


def test_hardware_counts_only_gpu_classes(tmp_path: Path) -> None:
    root = intel_tree(tmp_path, [MAX_PCI, ARC_PCI])
    hw = XpuBackend(fx.fake_xpu().module, root, environ={}).hardware()
    pci = [h.detail for h in hw if h.kind == "pci"]
    assert len(pci) == 2
    assert "[8086:0bd5] class 0x038000" in pci[1] and "driver i915" in pci[1]
    assert "discrete" in pci[0] and "driver xe" in pci[0]
    nodes = [(h.path, h.detail) for h in hw if h.kind == "dev"]
    assert nodes == [("/dev/dri/renderD128", "render node bound to i915"),
                     ("/dev/dri/renderD129", "render node bound to xe")]


def test_accelerator_class_counts_too(tmp_path: Path) -> None:
    acc = FakePci("0000:4d:00.0", 0x8086, 0x0BD5, ACCELERATOR_CLASS, "i915")
    assert len(stack.intel_gpus(intel_tree(tmp_path, [acc]))) == 1


def test_finding_intel_gpu_with_torch_without_xpu(tmp_path: Path) -> None:
    fake = fx.fake_xpu(compiled=False, torch_version="2.13.0+cpu")
    (finding,) = backend_for(fake, intel_tree(tmp_path, [ARC_PCI, IGPU_PCI])).findings()
    assert (finding.id, finding.severity) == ("xpu.torch_without_xpu", "warn")
    assert finding.fix == "pip install torch --index-url https://download.pytorch.org/whl/xpu"


def test_finding_only_an_igpu_is_info(tmp_path: Path) -> None:
    fake = fx.fake_xpu(compiled=False)
    (finding,) = backend_for(fake, intel_tree(tmp_path, [IGPU_PCI])).findings()
    assert finding.severity == "info"


def test_no_findings_without_intel_gpu_or_ipex(tmp_path: Path) -> None:
    fake = fx.fake_xpu(compiled=False)
    assert backend_for(fake, intel_tree(tmp_path, [])).findings() == []


@pytest.mark.parametrize(("ipex", "torch_version", "mismatch"), [
    ("2.8.10+xpu", "2.8.0+xpu", False), ("2.7.10+xpu", "2.8.0+xpu", True),
    ("2.8.10+xpu", "2.13.0+xpu", True),
])
def test_findings_ipex_end_of_life_and_mismatch(tmp_path: Path, ipex: str, torch_version: str,
                                                mismatch: bool) -> None:
    fake = fx.fake_xpu(torch_version=torch_version, ipex_version=ipex)
    found = {f.id: f for f in backend_for(fake, intel_tree(tmp_path, [MAX_PCI])).findings()}
    assert found["xpu.ipex_installed"].severity == "warn"
    assert "end of life" in found["xpu.ipex_installed"].message
    assert ("xpu.ipex_mismatch" in found) is mismatch
    if mismatch:
        assert found["xpu.ipex_mismatch"].severity == "error"
        assert found["xpu.ipex_mismatch"].fix == "pip uninstall intel-extension-for-pytorch"


@pytest.mark.parametrize(("env", "hides"), [
    ({"ZE_AFFINITY_MASK": "2"}, True),             # a Max 1550 in FLAT mode has devices 0, 1
    ({"ZE_AFFINITY_MASK": "1"}, False),
    ({"ZE_AFFINITY_MASK": "1", "ZE_FLAT_DEVICE_HIERARCHY": "COMPOSITE"}, True),
    ({"ZE_AFFINITY_MASK": "0.1"}, False),          # sub-device syntax: not judged
    ({"ONEAPI_DEVICE_SELECTOR": "opencl:*"}, True),
    ({"ONEAPI_DEVICE_SELECTOR": "level_zero:gpu"}, False),
    ({"ONEAPI_DEVICE_SELECTOR": "*:cpu"}, True),
    ({"ONEAPI_DEVICE_SELECTOR": "level_zero:5"}, True),
    ({"ONEAPI_DEVICE_SELECTOR": "level_zero:1"}, False),
    ({"ONEAPI_DEVICE_SELECTOR": "!level_zero:*"}, True),
    ({"ONEAPI_DEVICE_SELECTOR": "!opencl:*"}, False),
])
def test_finding_visible_devices_hiding_everything(tmp_path: Path, env: dict[str, str],
                                                   hides: bool) -> None:
    found = backend_for(fx.max_1550_card(), intel_tree(tmp_path, [MAX_PCI]), env).findings()
    assert ("xpu.visible_devices_hide_all" in [f.id for f in found]) is hides


# -- hal.optimize: the backend's optional hook --------------------------------------------------

class _Ipex(types.ModuleType):
    def __init__(self) -> None:
        super().__init__("intel_extension_for_pytorch")
        self.seen: list[object] = []

    def optimize(self, model: object) -> object:
        self.seen.append(model)
        return ("optimized", model)


def test_optimize_uses_ipex_only_when_installed_and_matching(monkeypatch: pytest.MonkeyPatch
                                                             ) -> None:
    ipex = _Ipex()
    monkeypatch.setitem(sys.modules, "intel_extension_for_pytorch", ipex)
    model = torch.nn.Linear(2, 2).eval()
    matching = backend_for(fx.fake_xpu(torch_version="2.8.0+xpu", ipex_version="2.8.10+xpu"))
    assert matching.optimize(model) == ("optimized", model)
    stale = backend_for(fx.fake_xpu(torch_version="2.13.0+xpu", ipex_version="2.8.10+xpu"))
    assert stale.optimize(model) is model
    absent = backend_for(fx.fake_xpu(torch_version="2.13.0+xpu"))
    assert absent.optimize(model) is model
    training = torch.nn.Linear(2, 2).train()
    assert matching.optimize(training) is training  # ipex.optimize without optimizer: eval only
    assert ipex.seen == [model]


def test_hal_optimize_asks_the_selected_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    from hal import selection

    fake = fx.fake_xpu(torch_version="2.8.0+xpu", ipex_version="2.8.10+xpu")
    xpu = backend_for(fake)
    monkeypatch.setitem(sys.modules, "intel_extension_for_pytorch", _Ipex())
    monkeypatch.setattr(selection, "get_backend", lambda name=None: xpu)
    model = torch.nn.Linear(2, 2).eval()
    assert hal.optimize(model) == ("optimized", model)
    monkeypatch.setattr(selection, "get_backend", lambda name=None: CpuBackend())
    assert hal.optimize(model) is model  # no hook: unchanged


def test_hal_optimize_on_this_machine_is_the_identity() -> None:
    model = torch.nn.Linear(2, 2)
    assert hal.optimize(model) is model
    assert os.environ.get("HAL_DEVICE") is None


# -- issue 14 finding 6: ONEAPI_DEVICE_SELECTOR and a context-free count ------------------------

@pytest.mark.parametrize(("selector", "count"), [
    ("level_zero:0,1", 2), ("level_zero:gpu", 4), ("*:gpu", 4), ("*:*", 4), ("level_zero:3", 1),
    ("level_zero:7", 0), ("opencl:*", 0), ("opencl:gpu;level_zero:2", 1), ("level_zero:cpu", 0),
    ("!level_zero:1", 3), ("level_zero:*;!level_zero:gpu", 0), ("level_zero:0.1", 1),
])
def test_the_sysman_count_honours_oneapi_device_selector(selector: str, count: int) -> None:
    fake = fx.fake_xpu(count=4)
    probe = backend_for(fake, environ={"ONEAPI_DEVICE_SELECTOR": selector}).probe()
    assert probe.device_count == count and probe.available == (count > 0)
    assert "Level Zero Sysman via pyzes" in probe.reason
    assert fake.module.sycl_contexts == 0 and not fake.module.initialized


def test_without_pyzes_the_count_comes_from_sycl_and_says_so() -> None:
    fake = fx.fake_xpu(count=4, sysman=False, sycl_count=2)  # the runtime applied the selector
    backend = backend_for(fake, environ={"ONEAPI_DEVICE_SELECTOR": "level_zero:0,1"})
    probe = backend.probe()
    assert probe.device_count == 2  # not filtered twice
    assert "pyzes is not installed" in probe.reason and "not context-free" in probe.reason
    assert fake.module.sycl_contexts == 1
    assert backend.versions()["count_context_free"].startswith("no (pyzes is not installed")
    assert backend_for(fx.fake_xpu()).versions()["count_context_free"].startswith("yes")


def test_a_selector_hiding_every_gpu_is_a_finding(tmp_path: Path) -> None:
    root = intel_tree(tmp_path, [ARC_PCI])
    (finding,) = backend_for(fx.fake_xpu(), root, environ={"ONEAPI_DEVICE_SELECTOR": "opencl:*"}
                             ).findings()
    assert finding.id == "xpu.visible_devices_hide_all" and "ONEAPI_DEVICE_SELECTOR" in finding.message


def test_per_device_calls_on_a_torch_without_xpu_say_why() -> None:
    backend = backend_for(fx.fake_xpu(compiled=False, torch_version="2.13.0+cpu"))
    with pytest.raises(hal.DeviceUnavailableError, match="built without XPU support"):
        backend.memory(0)
    with pytest.raises(hal.DeviceUnavailableError, match="built without XPU support"):
        backend.synchronize(0)
