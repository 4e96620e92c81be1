"""The core's device-module base and version helpers: what every torch-module backend inherits."""

from __future__ import annotations

import ast
import pathlib
import types
from typing import Any

import pytest
import torch

import hal
from hal import versions
from hal.contract import Backend, DeviceModuleBackend, Probe, parse_visible, resolve_visible

ROOT = pathlib.Path(__file__).resolve().parents[1]
VENDORS = ("cuda", "rocm", "ascend", "xpu", "cpu")


class ToyBackend(DeviceModuleBackend):
    """A vendor that declares only data: its name, device type and OOM markers."""

    name = "toy"
    device_type = "cuda"  # any torch device type: the base looks its module up by this
    oom_markers = ("TOY out of memory",)

    def __init__(self, module: Any = None, *, available: bool = True, accelerator: Any = None) -> None:
        super().__init__(module, accelerator=accelerator)
        self.available = available

    def probe(self) -> Probe:
        return Probe(self.available, "toy here" if self.available else "no toy runtime", 1)


def toy_module(**overrides: Any) -> types.SimpleNamespace:
    calls: list[str] = []

    def record(name: str, value: Any = None) -> Any:
        return lambda *a: (calls.append(f"{name}{a}"), value)[1]

    module = types.SimpleNamespace(
        calls=calls, memory_allocated=record("allocated", 10), memory_reserved=record("reserved", 20),
        max_memory_allocated=record("peak", 15), mem_get_info=record("info", (70, 100)),
        set_device=record("set_device"), synchronize=record("synchronize"),
        empty_cache=record("empty_cache"), reset_peak_memory_stats=record("reset_peak"))
    for key, value in overrides.items():
        setattr(module, key, value)
    return module


def drive(toy: Backend) -> None:
    """Every device call of the base once, on device 1 where it takes one."""
    toy.set_device(1)
    toy.synchronize(1)
    toy.empty_cache()
    toy.reset_peak_memory(1)


def test_the_base_drives_any_device_module_from_declared_data() -> None:
    module = toy_module()
    toy = ToyBackend(module)
    mem = toy.memory(0)
    assert (mem.total, mem.free, mem.allocated, mem.reserved, mem.peak) == (100, 70, 10, 20, 15)
    assert mem.source == ToyBackend.memory_source
    drive(toy)
    assert module.calls[-4:] == ["set_device(1,)", "synchronize(1,)", "empty_cache()",
                                 "reset_peak(1,)"]


def test_memory_without_mem_get_info_says_so() -> None:
    module = toy_module(get_device_properties=lambda i: types.SimpleNamespace(total_memory=100))
    del module.mem_get_info
    mem = ToyBackend(module).memory(0)
    assert (mem.total, mem.free) == (100, 80) and mem.source == ToyBackend.memory_fallback_source


class FakeAccelerator:
    """torch.accelerator in miniature, with the installed torch's signatures (checked below)."""

    __contract_namespace__ = True

    def __init__(self, memory_api: bool = True, broken: bool = False) -> None:
        self.calls: list[str] = []
        self.broken = broken
        if not memory_api:  # torch 2.8: device calls, but no memory calls, in torch.accelerator
            for name in ("memory_allocated", "memory_reserved", "max_memory_allocated",
                         "get_memory_info", "empty_cache", "reset_peak_memory_stats"):
                setattr(self, name, None)

    def set_device_index(self, device: Any, /) -> None:
        self.calls.append(f"set_device_index({device})")

    def synchronize(self, device: Any = None, /) -> None:
        self.calls.append(f"synchronize({device})")

    def memory_allocated(self, device_index: Any = None, /) -> int:
        if self.broken:
            raise RuntimeError("no device allocator is registered for this device type")
        return 1000

    def memory_reserved(self, device_index: Any = None, /) -> int:
        return 2000

    def max_memory_allocated(self, device_index: Any = None, /) -> int:
        return 1500

    def get_memory_info(self, device_index: Any = None, /) -> tuple[int, int]:
        self.calls.append(f"get_memory_info({device_index})")
        return (7000, 8000)

    def empty_cache(self) -> None:
        self.calls.append("empty_cache()")

    def reset_peak_memory_stats(self, device_index: Any = None, /) -> None:
        self.calls.append(f"reset_peak_memory_stats({device_index})")


def test_memory_and_device_calls_go_through_torch_accelerator_where_it_has_them() -> None:
    module, acc = toy_module(), FakeAccelerator()
    toy = ToyBackend(module, accelerator=acc)
    mem = toy.memory(1)
    assert (mem.total, mem.free, mem.allocated, mem.reserved, mem.peak) == (8000, 7000, 1000, 2000,
                                                                            1500)
    assert mem.source == DeviceModuleBackend.accelerator_memory_source
    drive(toy)
    assert acc.calls == ["get_memory_info(1)", "set_device_index(1)", "synchronize(1)",
                         "empty_cache()", "reset_peak_memory_stats(1)"]
    assert module.calls == []  # the device module is not asked at all


def test_torch_2_8_without_accelerator_memory_calls_uses_the_device_module() -> None:
    module, acc = toy_module(), FakeAccelerator(memory_api=False)
    toy = ToyBackend(module, accelerator=acc)
    mem = toy.memory(0)
    assert (mem.total, mem.free, mem.allocated, mem.reserved, mem.peak) == (100, 70, 10, 20, 15)
    assert mem.source == ToyBackend.memory_source
    drive(toy)
    assert acc.calls == ["set_device_index(1)", "synchronize(1)"]  # 2.8 has these two
    assert module.calls == ["allocated(0,)", "reserved(0,)", "peak(0,)", "info(0,)",
                            "empty_cache()", "reset_peak(1,)"]


def test_an_accelerator_whose_allocator_torch_cannot_ask_falls_back_and_says_so() -> None:
    mem = ToyBackend(toy_module(), accelerator=FakeAccelerator(broken=True)).memory(0)
    assert (mem.total, mem.free, mem.allocated) == (100, 70, 10)
    assert mem.source == "torch.accelerator failed (RuntimeError); " + ToyBackend.memory_source


def test_the_real_torch_accelerator_only_for_its_own_device_type(monkeypatch: pytest.MonkeyPatch) -> None:
    real = torch.accelerator.current_accelerator()
    assert ToyBackend().accelerator is (torch.accelerator if real is not None and real.type == "cuda"
                                        else None)
    monkeypatch.setattr(torch.accelerator, "current_accelerator",
                        lambda check_available=False: torch.device("cuda"))
    assert ToyBackend().accelerator is torch.accelerator
    assert ToyBackend(toy_module()).accelerator is None  # a stand-in module is used alone
    monkeypatch.setattr(torch.accelerator, "current_accelerator",
                        lambda check_available=False: torch.device("xpu"))
    assert ToyBackend().accelerator is None  # torch's accelerator is another device type


def test_every_torch_accelerator_name_used_exists_with_the_real_signature() -> None:
    from hal.contract import ACCELERATOR_MEMORY_CALLS
    from hal.testing.contract import check_against, exercise, record

    assert all(hasattr(torch.accelerator, n) for n in ACCELERATOR_MEMORY_CALLS), torch.__version__
    proxy, rec = record(FakeAccelerator())
    exercise(ToyBackend(toy_module(get_device_name=lambda i: "toy"), accelerator=proxy))
    assert {"set_device_index", "synchronize", "empty_cache", "reset_peak_memory_stats",
            *ACCELERATOR_MEMORY_CALLS} <= set(rec.names)
    check_against(rec, torch.accelerator)


def test_the_default_module_is_torch_get_device_module() -> None:
    assert ToyBackend().module is torch.get_device_module("cuda")


def test_a_failure_on_an_unavailable_backend_is_device_unavailable() -> None:
    def broken(*args: Any) -> Any:
        raise AssertionError("Torch not compiled with TOY enabled")

    toy = ToyBackend(toy_module(synchronize=broken, mem_get_info=broken), available=False)
    with pytest.raises(hal.DeviceUnavailableError, match="toy: no toy runtime"):
        toy.synchronize(0)
    with pytest.raises(hal.DeviceUnavailableError, match="toy: no toy runtime"):
        toy.memory(0)
    working = ToyBackend(toy_module(synchronize=broken))  # available: the real error stays
    with pytest.raises(AssertionError, match="not compiled"):
        working.synchronize(0)


def test_is_oom_needs_the_class_and_a_marker_and_never_claims_a_collective_error() -> None:
    import torch.distributed as dist

    toy = ToyBackend(toy_module())
    assert toy.is_oom(RuntimeError("TOY out of memory. Tried to allocate 2 GiB"))
    assert toy.is_oom(torch.OutOfMemoryError("TOY out of memory"))
    assert not toy.is_oom(ValueError("TOY out of memory"))
    assert not toy.is_oom(RuntimeError("TOY kernel failed"))
    assert not toy.is_oom(dist.DistBackendError("TOY out of memory inside the communicator"))


def test_optimize_is_a_declared_member_that_defaults_to_the_model_itself() -> None:
    model = torch.nn.Linear(2, 2)
    assert "optimize" in vars(Backend) and Backend.optimize.__doc__
    assert ToyBackend().optimize(model) is model


@pytest.mark.parametrize(("text", "numbers", "text3"), [
    ("2.13.0+cpu", (2, 13, 0), "2.13.0"), ("2.1.0.post8", (2, 1, 0), "2.1.0"),
    ("8.0.RC2", (8, 0), None), ("550.54.15", (550, 54, 15), "550.54.15"), ("v1.2.3", (1, 2, 3), "1.2.3"),
    ("2.8.10+xpu", (2, 8, 10), "2.8.10"), ("", (), None), (None, (), None), ("unknown", (), None),
])
def test_one_release_parser(text: str | None, numbers: tuple[int, ...], text3: str | None) -> None:
    assert versions.release(text) == numbers
    assert versions.release_text(text) == text3


def test_torch_at_least_reads_metadata() -> None:
    installed = versions.release(versions.torch_version())
    assert installed[:2] == tuple(int(p) for p in torch.__version__.split(".")[:2])
    assert versions.torch_at_least((2, 4)) and not versions.torch_at_least((99,))
    assert versions.torch_at_least((2, 8), "2.8.0+xpu") and not versions.torch_at_least((2, 8), "2.7.1")
    assert versions.dist_version("no-such-distribution-hal-test") is None


def backend_sources(vendor: str) -> list[pathlib.Path]:
    return [p for p in (ROOT / "backends" / vendor).glob("*.py")]


@pytest.mark.parametrize("vendor", VENDORS)
def test_no_builtin_backend_imports_another_or_parses_versions_itself(vendor: str) -> None:
    others = {f"hal.backends.{v}" for v in VENDORS if v != vendor}
    for path in backend_sources(vendor):
        tree = ast.parse(path.read_text())
        modules = {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        modules |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        assert not {m for m in modules if m.split(".testing")[0] in others}, path
        assert "importlib.metadata" not in modules, f"{path}: use hal.versions.dist_version"


@pytest.mark.parametrize("name", ["CudaBackend", "RocmBackend", "AscendBackend", "XpuBackend"])
def test_every_torch_module_backend_derives_from_the_base(name: str) -> None:
    import importlib

    vendor = {"CudaBackend": "cuda", "RocmBackend": "rocm", "AscendBackend": "ascend",
              "XpuBackend": "xpu"}[name]
    cls = getattr(importlib.import_module(f"hal.backends.{vendor}"), name)
    assert issubclass(cls, DeviceModuleBackend)
    for member in ("set_device", "synchronize", "empty_cache", "reset_peak_memory", "is_oom"):
        assert member not in vars(cls), f"{name}.{member} should come from the base"
    assert cls.oom_markers, f"{name} declares no oom_markers"


def test_visible_lists_read_like_the_runtimes() -> None:
    spec = parse_visible("1gpu,2,x,3", ("GPU-",))
    assert spec.indices == (1, 2) and resolve_visible(spec, 2) == [1]
    assert parse_visible("0,0").hides_all and parse_visible("-1").hides_all
    ids = parse_visible("GPU-ab,GPU-cd", ("GPU-",))
    assert ids.prefix == "GPU-" and resolve_visible(ids, 2, ["ab12", "cd34"], strip="GPU-") == [0, 1]
    assert resolve_visible(ids, 2) is None


@pytest.mark.parametrize("name", ["CudaBackend", "RocmBackend", "AscendBackend", "XpuBackend"])
def test_every_backend_takes_its_environment_the_same_way(name: str, monkeypatch: Any) -> None:
    import importlib
    import inspect
    import os

    vendor = name.removesuffix("Backend").lower()
    cls = getattr(importlib.import_module(f"hal.backends.{vendor}"), name)
    parameter = inspect.signature(cls).parameters["environ"]
    assert parameter.kind is inspect.Parameter.KEYWORD_ONLY and parameter.default is None
    given = {"HAL_TEST_ONLY": "1"}
    assert cls(environ=given).environ is given
    live = cls()
    monkeypatch.setenv("HAL_TEST_ONLY", "2")
    assert live.environ is os.environ and live.environ["HAL_TEST_ONLY"] == "2"


FAKES = ["cuda/testing/specs.py", "cuda/testing/fake_torch_cuda.py", "cuda/testing/fake_nvml.py",
         "rocm/testing/fake_kfd.py", "ascend/testing/fake_npu.py", "xpu/testing/fake_xpu.py",
         *(f"{vendor}/testing/fake_telemetry.py" for vendor in ("cuda", "rocm", "ascend", "xpu"))]


@pytest.mark.parametrize("fake", FAKES)
def test_fakes_share_no_code_with_what_they_test(fake: str) -> None:
    """Only ``make_backend``, which builds the real backend on the fakes, may import it."""
    tree = ast.parse((ROOT / "backends" / fake).read_text())
    builder = {id(n) for f in ast.walk(tree) if isinstance(f, ast.FunctionDef)
               and f.name == "make_backend" for n in ast.walk(f)}
    modules = {n.module or "" for n in ast.walk(tree)
               if isinstance(n, ast.ImportFrom) and id(n) not in builder}
    shared = {m for m in modules if m in ("hal.contract", "hal.versions")
              or (m.startswith("hal.backends.") and ".testing" not in m)}
    assert not shared, f"{fake} imports {shared}: a mistake made in both copies would pass"
