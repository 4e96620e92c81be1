"""The conformance suite: hal's own backends pass it, and each check catches what it should."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import pytest
import torch
from helpers import StubBackend, conformance_suite

import hal
from hal.backends.cpu import CpuBackend
from hal.testing import conformance
from hal.testing.conformance import ConformanceError

pytest_plugins = ["hal.testing.pytest_plugin"]

CPU_OOM = RuntimeError(
    "[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: not enough memory: "
    "you tried to allocate 1099511627776 bytes."
)


#: The CPU backend through the same test class a vendor imports.
TestCpuConformance = conformance_suite(CpuBackend, CPU_OOM, "cpu")


def test_cpu_backend_conforms_and_real_oom_recognised() -> None:
    """run_checks on the CPU backend, with an OOM the real allocator raised here."""
    try:
        torch.empty(1 << 62, dtype=torch.uint8)
    except RuntimeError as exc:
        real = exc
    else:  # pragma: no cover - a machine with 4 EiB
        pytest.skip("the allocation succeeded")
    assert conformance.run_checks(CpuBackend(), oom_error=real) == []


# -- each check fails on a planted violation ---------------------------------------------


class Good(StubBackend):
    """A small, conforming backend with one device; subclasses break one rule each."""

    name = "goodaccel"
    probe_reason = "one meta device"

    def memory(self, index: int = 0) -> hal.MemoryInfo:
        return hal.MemoryInfo(100, 40, 10, 20, 30, source="test")

    def dtypes(self, index: int = 0) -> Sequence[torch.dtype]:
        return [torch.bfloat16, torch.float16, torch.float32]

    def is_oom(self, exc: BaseException) -> bool:
        return isinstance(exc, RuntimeError) and "goodaccel out of memory" in str(exc)


GOOD_OOM = RuntimeError("goodaccel out of memory: tried to allocate 2 GiB")


class RaisingProbe(Good):
    def probe(self) -> hal.Probe:
        raise OSError("libgood.so not found")


class EnvProbe(Good):
    def probe(self) -> hal.Probe:
        os.environ["GOODACCEL_INIT"] = "1"
        return super().probe()


class InitProbe(Good):
    initialised = False

    def probe(self) -> hal.Probe:
        type(self).initialised = True
        return super().probe()


class FlakyProbe(Good):
    calls = 0

    def probe(self) -> hal.Probe:
        type(self).calls += 1
        return hal.Probe(True, "flaky", type(self).calls)


class AvailableNoDevice(Good):
    def probe(self) -> hal.Probe:
        return hal.Probe(True, "available but nothing", 0)


class BadIndices(Good):
    def probe(self) -> hal.Probe:
        return hal.Probe(True, "two", 2)

    def devices(self) -> Sequence[hal.DeviceInfo]:
        return [hal.DeviceInfo(1, "a", 0), hal.DeviceInfo(2, "b", 0)]


class FloatMemory(Good):
    def memory(self, index: int = 0) -> hal.MemoryInfo:
        return hal.MemoryInfo(100, 40, 10, 20, 30.5, source="MiB by mistake")  # type: ignore[arg-type]


class FreeOverTotal(Good):
    def memory(self, index: int = 0) -> hal.MemoryInfo:
        return hal.MemoryInfo(100, 140, 10, 20, 30)


class AllocatedOverReserved(Good):
    def memory(self, index: int = 0) -> hal.MemoryInfo:
        return hal.MemoryInfo(100, 40, 30, 20, 30)


class PeakUnderAllocated(Good):
    def memory(self, index: int = 0) -> hal.MemoryInfo:
        return hal.MemoryInfo(100, 40, 10, 20, 5)


class Fp32First(Good):
    def dtypes(self, index: int = 0) -> Sequence[torch.dtype]:
        return [torch.float32, torch.bfloat16]


class StringDtypes(Good):
    def dtypes(self, index: int = 0) -> Sequence[torch.dtype]:
        return ["bfloat16", "float32"]  # type: ignore[list-item]


class NoFp32(Good):
    def dtypes(self, index: int = 0) -> Sequence[torch.dtype]:
        return [torch.float16]


class GreedyOom(Good):
    def is_oom(self, exc: BaseException) -> bool:
        return "memory" in str(exc)


class BlindOom(Good):
    def is_oom(self, exc: BaseException) -> bool:
        return False


class WrongDevice(Good):
    def torch_device(self, index: int | None = None) -> torch.device:
        return torch.device("cpu")


class BadVersions(Good):
    def versions(self) -> dict[str, str]:
        return {"driver": 535}  # type: ignore[dict-item]


class BadName(Good):
    name = "good accel"


class FutureApi(Good):
    api_version = hal.API_VERSION + 1


class RaisingSync(Good):
    def synchronize(self, index: int | None = None) -> None:
        raise RuntimeError("device lost")


class PercentTelemetry(Good):
    def telemetry(self, index: int = 0) -> hal.Telemetry:
        return hal.Telemetry(source="test", utilization=37.0)


class MilliwattTelemetry(Good):
    def telemetry(self, index: int = 0) -> hal.Telemetry:
        return hal.Telemetry(source="NVML", power=87412.0)


class RaisingTelemetry(Good):
    def telemetry(self, index: int = 0) -> hal.Telemetry:
        raise RuntimeError("NVML: Not Supported")


class DictTelemetry(Good):
    def telemetry(self, index: int = 0) -> hal.Telemetry:
        return {"memory_used": 1}  # type: ignore[return-value]


class NoSourceTelemetry(Good):
    def telemetry(self, index: int = 0) -> hal.Telemetry:
        return hal.Telemetry(source="", memory_used=5, memory_total=10)


BROKEN: list[tuple[type[Good], str, str]] = [
    (PercentTelemetry, "telemetry", "utilization = 37.0 is outside 0..1"),
    (MilliwattTelemetry, "telemetry", "expected watts"),
    (RaisingTelemetry, "telemetry", "an unknown figure is None"),
    (DictTelemetry, "telemetry", "expected hal.Telemetry"),
    (NoSourceTelemetry, "telemetry", "source must be a non-empty str"),
    (RaisingProbe, "probe", "raised OSError"),
    (EnvProbe, "probe_side_effects", "changed the environment: GOODACCEL_INIT"),
    (FlakyProbe, "probe_side_effects", "not idempotent"),
    (AvailableNoDevice, "probe", "at least one device"),
    (BadIndices, "devices", "indices must run 0..n-1"),
    (FloatMemory, "memory", "peak = 30.5"),
    (FreeOverTotal, "memory", "free 140 > total 100"),
    (AllocatedOverReserved, "memory", "allocated 30 > reserved 20"),
    (PeakUnderAllocated, "memory", "peak 5 < allocated 10"),
    (Fp32First, "dtypes", "not ordered best first"),
    (StringDtypes, "dtypes", "expected torch.dtype"),
    (NoFp32, "dtypes", "lacks torch.float32"),
    (GreedyOom, "is_oom", "expected False"),
    (BlindOom, "is_oom", "does not recognise"),
    (WrongDevice, "torch_device", "torch_device()"),
    (BadVersions, "hardware_versions_findings", "versions()"),
    (BadName, "class", "not a valid id"),
    (FutureApi, "class", "api_version"),
    (RaisingSync, "maintenance", "synchronize(None) raised RuntimeError"),
]


def test_good_backend_conforms() -> None:
    assert conformance.run_checks(Good(), oom_error=GOOD_OOM) == []


@pytest.mark.parametrize(("cls", "check", "needle"), BROKEN, ids=[c.__name__ for c, _, _ in BROKEN])
def test_check_catches_planted_violation(cls: type[Good], check: str, needle: str,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GOODACCEL_INIT", raising=False)
    problems = conformance.run_checks(cls(), oom_error=GOOD_OOM)
    mine = [p for p in problems if p.startswith(f"{check}:")]
    assert mine, problems
    assert needle in mine[0], mine[0]
    os.environ.pop("GOODACCEL_INIT", None)


def test_runtime_initialised_by_probe_is_caught() -> None:
    InitProbe.initialised = False
    with pytest.raises(ConformanceError, match="initialised the device runtime"):
        conformance.check_probe_side_effects(InitProbe(), lambda: InitProbe.initialised)


def test_corpus_vendor_is_checked() -> None:
    """A CPU is_oom that ignores MemoryError fails against hal's corpus of real errors."""

    class NoMemoryError(CpuBackend):
        def is_oom(self, exc: BaseException) -> bool:
            return not isinstance(exc, MemoryError) and super().is_oom(exc)

    with pytest.raises(ConformanceError, match="corpus"):
        conformance.check_is_oom(NoMemoryError(), CPU_OOM, "cpu")


def test_isolated_host_fixture_only_sees_registered(
    hal_registered: Callable[..., hal.plugins.PluginHost],
) -> None:
    host = hal_registered(Good())
    assert sorted(b.name for b in host.backends()) == ["cpu", "goodaccel"]
    assert hal.select().backend.name == "goodaccel"  # priority 10 beats cpu 0
    assert hal.get_device() == torch.device("meta", 0)


def test_isolated_host_is_restored() -> None:
    """After the fixture, the process's plugins are the installed ones again."""
    names = [b.name for b in hal.list_backends()]
    assert "goodaccel" not in names and "cpu" in names


def test_fake_module_helper() -> None:
    mod = conformance.fake_module("torch.fakeaccel", device_count=lambda: 2)
    assert mod.__name__ == "torch.fakeaccel" and mod.device_count() == 2


def test_default_telemetry_is_memory_only_and_conforms() -> None:
    """A backend without telemetry() gets memory figures from memory(), the rest None."""
    t = Good().telemetry(0)
    assert (t.memory_used, t.memory_total) == (60, 100)
    assert t.utilization is None and t.power is None and t.processes is None
    assert "memory() only" in t.source
    conformance.check_telemetry(Good())


def test_telemetry_that_initialises_the_runtime_is_caught() -> None:
    class InitTelemetry(Good):
        initialised = False

        def telemetry(self, index: int = 0) -> hal.Telemetry:
            type(self).initialised = True
            return hal.Telemetry(source="runtime")

    with pytest.raises(ConformanceError, match="telemetry\\(\\) initialised the device runtime"):
        conformance.check_telemetry(InitTelemetry(), lambda: InitTelemetry.initialised)
