"""The backend conformance suite: hal's contract checks, run by hal and by plugin authors.

Each ``check_*`` function takes a backend (and what it needs) and raises
:class:`ConformanceError` naming what broke the v1 contract. :func:`run_checks` runs them all and
returns the problems; :class:`TestHalConformance` is the same as pytest tests, one per check, for
a vendor repository that enables ``pytest_plugins = ["hal.testing.pytest_plugin"]``.

What "no side effects" means here, since a probe cannot be watched from inside the runtime:
the process environment is unchanged, the working directory and torch's default dtype and
device are unchanged, a second probe returns the same answer, and an optional
``runtime_initialized()`` callable from the vendor (say ``lambda: torch.mps.is_initialized()``,
or a fake module's own counter) stays False when it was False before.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import types
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from hal.contract import API_VERSION, Backend, DeviceInfo, Finding, Hardware, MemoryInfo, Probe
from hal.errors import describe_exception

__all__ = [
    "CHECKS",
    "ConformanceError",
    "TestHalConformance",
    "check_class",
    "check_devices",
    "check_dtypes",
    "check_hardware_versions_findings",
    "check_is_oom",
    "check_maintenance",
    "check_memory",
    "check_probe",
    "check_probe_side_effects",
    "check_telemetry",
    "check_torch_device",
    "fake_module",
    "run_checks",
]

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
#: Plain errors a correct ``is_oom`` must reject whatever its vendor.
NOT_OOM: tuple[BaseException, ...] = (
    ValueError("out of memory"),
    RuntimeError("Expected all tensors to be on the same device"),
    RuntimeError("shape '[2, 3]' is invalid for input of size 5"),
    KeyError("memory"),
    AssertionError("ran out of memory in user code"),
)


class ConformanceError(AssertionError):
    """A backend broke the v1 contract; the message names the member and the rule."""


def _fail(backend: Backend, message: str) -> ConformanceError:
    return ConformanceError(f"backend {backend.name!r} ({type(backend).__name__}): {message}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_frozen(value: Any) -> bool:
    params = getattr(type(value), "__dataclass_params__", None)
    return dataclasses.is_dataclass(value) and bool(params is not None and params.frozen)


def _probe(backend: Backend) -> Probe:
    try:
        probe = backend.probe()
    except Exception as exc:
        raise _fail(backend, f"probe() raised {describe_exception(exc)}; a missing library "
                             "or device must be a Probe(available=False, reason=...)") from exc
    if not isinstance(probe, Probe):
        raise _fail(backend, f"probe() returned {type(probe).__name__}, expected hal.Probe")
    return probe


# -- the checks ---------------------------------------------------------------------------


def check_class(backend: Backend) -> None:
    """Class attributes: a valid name, a device type, an int priority, an API version hal knows."""
    if not isinstance(backend, Backend):
        raise ConformanceError(f"{backend!r} is not a hal.Backend instance")
    if not (isinstance(backend.name, str) and _NAME_RE.match(backend.name)):
        raise _fail(backend, f"name {backend.name!r} is not a valid id (letters, digits, _.-)")
    if not (isinstance(backend.device_type, str) and backend.device_type):
        raise _fail(backend, "device_type must be the non-empty torch device type")
    if not _is_int(backend.priority):
        raise _fail(backend, f"priority {backend.priority!r} must be an int")
    if not (isinstance(backend.dist_backend, str) and backend.dist_backend):
        raise _fail(backend, f"dist_backend {backend.dist_backend!r} must be a non-empty str")
    env = backend.visible_devices_env
    if not (isinstance(env, tuple) and all(isinstance(v, str) and v for v in env)):
        raise _fail(backend, f"visible_devices_env {env!r} must be a tuple of env var names")
    if not (_is_int(backend.api_version) and 1 <= backend.api_version <= API_VERSION):
        raise _fail(backend, f"api_version {backend.api_version!r} is not one this hal "
                             f"supports (1..{API_VERSION})")
    if type(backend).probe is Backend.probe:
        raise _fail(backend, "probe() is not implemented")


def check_probe(backend: Backend) -> Probe:
    """probe() never raises and returns a well-formed Probe; returns it for later checks."""
    probe = _probe(backend)
    if not isinstance(probe.available, bool):
        raise _fail(backend, f"Probe.available {probe.available!r} must be a bool")
    if not (isinstance(probe.reason, str) and probe.reason.strip()):
        raise _fail(backend, "Probe.reason must say why, available or not")
    if not (_is_int(probe.device_count) and probe.device_count >= 0):
        raise _fail(backend, f"Probe.device_count {probe.device_count!r} must be an int >= 0")
    if probe.available and probe.device_count < 1:
        raise _fail(backend, "an available backend must see at least one device")
    return probe


def check_probe_side_effects(
    backend: Backend, runtime_initialized: Callable[[], bool] | None = None
) -> None:
    """probe() leaves the environment, cwd and torch defaults alone and answers the same twice."""
    import torch

    before_init = runtime_initialized() if runtime_initialized is not None else False
    env = dict(os.environ)
    cwd = os.getcwd()
    dtype = torch.get_default_dtype()
    device = torch.get_default_device()
    first = _probe(backend)
    second = _probe(backend)
    if dict(os.environ) != env:
        changed = sorted(set(os.environ.items()) ^ set(env.items()))
        names = sorted({k for k, _ in changed})
        raise _fail(backend, f"probe() changed the environment: {', '.join(names)}")
    if os.getcwd() != cwd:
        raise _fail(backend, "probe() changed the working directory")
    if torch.get_default_dtype() != dtype or torch.get_default_device() != device:
        raise _fail(backend, "probe() changed torch's default dtype or device")
    if (first.available, first.device_count) != (second.available, second.device_count):
        raise _fail(backend, f"probe() is not idempotent: {first} then {second}")
    if runtime_initialized is not None and not before_init and runtime_initialized():
        raise _fail(backend, "probe() initialised the device runtime; it must stay cheap")


def check_devices(backend: Backend) -> Sequence[DeviceInfo]:
    """devices(): one frozen DeviceInfo per visible device, indices 0..n-1, sizes in bytes."""
    probe = _probe(backend)
    if not probe.available:
        return []
    infos = backend.devices()
    if not isinstance(infos, Sequence) or isinstance(infos, (str, bytes)):
        raise _fail(backend, f"devices() returned {type(infos).__name__}, expected a list")
    if len(infos) != probe.device_count:
        raise _fail(backend, f"devices() lists {len(infos)} device(s) but probe() counted "
                             f"{probe.device_count}")
    for pos, info in enumerate(infos):
        if not isinstance(info, DeviceInfo) or not _is_frozen(info):
            raise _fail(backend, f"devices()[{pos}] is {type(info).__name__}, "
                                 "expected hal.DeviceInfo")
        if info.index != pos:
            raise _fail(backend, f"devices()[{pos}].index is {info.index!r}; indices must run "
                                 "0..n-1 over the visible devices")
        if not (isinstance(info.name, str) and info.name):
            raise _fail(backend, f"devices()[{pos}].name must be a non-empty str")
        if not (_is_int(info.total_memory) and info.total_memory >= 0):
            raise _fail(backend, f"devices()[{pos}].total_memory {info.total_memory!r} must "
                                 "be an int number of bytes")
        if not isinstance(info.extras, Mapping):
            raise _fail(backend, f"devices()[{pos}].extras must be a mapping")
    return infos


def check_memory(backend: Backend) -> None:
    """memory(i): ints in bytes, free <= total, allocated <= reserved, peak >= allocated."""
    probe = _probe(backend)
    for index in range(probe.device_count if probe.available else 0):
        mem = backend.memory(index)
        where = f"memory({index})"
        if not isinstance(mem, MemoryInfo) or not _is_frozen(mem):
            raise _fail(backend, f"{where} returned {type(mem).__name__}, expected MemoryInfo")
        for name in ("total", "free", "allocated", "reserved", "peak"):
            value = getattr(mem, name)
            if not _is_int(value) or value < 0:
                raise _fail(backend, f"{where}.{name} = {value!r}; expected an int >= 0 (bytes)")
        if not isinstance(mem.source, str):
            raise _fail(backend, f"{where}.source must be a str saying where figures come from")
        if mem.total and mem.free > mem.total:
            raise _fail(backend, f"{where}: free {mem.free} > total {mem.total}")
        if mem.allocated > mem.reserved:
            raise _fail(backend, f"{where}: allocated {mem.allocated} > reserved {mem.reserved}")
        if mem.peak < mem.allocated:
            raise _fail(backend, f"{where}: peak {mem.peak} < allocated {mem.allocated}")
        if not 0.0 <= mem.used_fraction <= 1.0 or math.isnan(mem.used_fraction):
            raise _fail(backend, f"{where}.used_fraction {mem.used_fraction} outside 0..1")


def check_dtypes(backend: Backend) -> None:
    """dtypes(i): torch floating dtypes, no repeats, float32 included, narrowest (best) first."""
    import torch

    probe = _probe(backend)
    for index in range(probe.device_count if probe.available else 0):
        dtypes = list(backend.dtypes(index))
        where = f"dtypes({index})"
        if not dtypes:
            raise _fail(backend, f"{where} is empty; every device computes float32")
        bad = [d for d in dtypes if not isinstance(d, torch.dtype)]
        if bad:
            raise _fail(backend, f"{where} holds {bad[0]!r}; expected torch.dtype values")
        if len(set(dtypes)) != len(dtypes):
            raise _fail(backend, f"{where} repeats a dtype: {dtypes}")
        if any(not d.is_floating_point for d in dtypes):
            raise _fail(backend, f"{where} lists a non-floating dtype: {dtypes}")
        if torch.float32 not in dtypes:
            raise _fail(backend, f"{where} lacks torch.float32: {dtypes}")
        # Reduced precision (8- and 16-bit) first, then float32, then anything wider.
        sizes = [max(d.itemsize, 2) for d in dtypes]
        if sizes != sorted(sizes):
            raise _fail(backend, f"{where} is not ordered best first (reduced precision, then "
                                 f"float32): {dtypes}")


def check_torch_device(backend: Backend) -> None:
    """torch_device(): real torch.device objects of the backend's type and index (if available)."""
    import torch

    probe = _probe(backend)
    if not probe.available:  # the device type may not exist in torch until the runtime loads
        return
    plain = backend.torch_device()
    if not isinstance(plain, torch.device) or plain.type != backend.device_type:
        raise _fail(backend, f"torch_device() is {plain!r}, expected "
                             f"torch.device({backend.device_type!r})")
    for index in range(probe.device_count if probe.available else 0):
        dev = backend.torch_device(index)
        if not isinstance(dev, torch.device) or dev.type != backend.device_type:
            raise _fail(backend, f"torch_device({index}) is {dev!r}")
        if dev.index not in (index, None):
            raise _fail(backend, f"torch_device({index}) has index {dev.index}")


def check_is_oom(backend: Backend, oom_error: BaseException | None,
                 corpus_vendor: str | None = None) -> None:
    """is_oom(): True for the backend's own allocator error, False for plain errors, no raise."""
    if oom_error is not None and backend.is_oom(oom_error) is not True:
        raise _fail(backend, f"is_oom() does not recognise its allocator's error "
                             f"{type(oom_error).__name__}: {str(oom_error)[:80]!r}")
    for exc in NOT_OOM:
        try:
            got = backend.is_oom(exc)
        except Exception as raised:
            raise _fail(backend, f"is_oom({exc!r}) raised {type(raised).__name__}") from raised
        if got is not False:
            raise _fail(backend, f"is_oom({exc!r}) returned {got!r}; expected False")
    if corpus_vendor is not None:
        from hal.testing import oom_corpus

        problems = oom_corpus.check_backend(backend.is_oom, corpus_vendor)
        if problems:
            raise _fail(backend, "is_oom() against hal's corpus of real errors: "
                        + "; ".join(problems))


def check_maintenance(backend: Backend) -> None:
    """synchronize, empty_cache and reset_peak_memory run without error on every device."""
    probe = _probe(backend)
    if not probe.available:
        return
    for index in [None, *range(probe.device_count)]:
        for name in ("synchronize", "reset_peak_memory"):
            try:
                getattr(backend, name)(index)
            except Exception as exc:
                raise _fail(backend, f"{name}({index}) raised {describe_exception(exc)}") \
                    from exc
    backend.empty_cache()


def check_hardware_versions_findings(backend: Backend) -> None:
    """hardware(), versions() and findings() work whether or not the backend is available."""
    hw = list(backend.hardware())
    if any(not isinstance(h, Hardware) for h in hw):
        raise _fail(backend, "hardware() must return hal.Hardware values")
    versions = backend.versions()
    if not isinstance(versions, Mapping) or any(
        not isinstance(k, str) or not isinstance(v, str) for k, v in versions.items()
    ):
        raise _fail(backend, f"versions() must map str to str, got {versions!r}")
    findings = list(backend.findings())
    if any(not isinstance(f, Finding) for f in findings):
        raise _fail(backend, "findings() must return hal.Finding values")


def check_telemetry(backend: Backend,
                    runtime_initialized: Callable[[], bool] | None = None) -> None:
    """telemetry(i): a frozen hal.Telemetry in hal's units (bytes, 0..1, W, °C, MHz), twice.

    An overriding ``telemetry`` must also leave the runtime uninitialised (it feeds
    ``hal watch``, which must not create device contexts); the default reads ``memory()``.
    """
    from hal.readings import Telemetry
    from hal.validate import check_telemetry as checked

    probe = _probe(backend)
    overridden = type(backend).telemetry is not Backend.telemetry
    before = runtime_initialized() if runtime_initialized is not None else False
    for index in range(probe.device_count if probe.available else 0):
        for _ in range(2):  # rates (power, utilisation) come from the second reading on
            try:
                value = backend.telemetry(index)
            except Exception as exc:
                raise _fail(backend, f"telemetry({index}) raised {describe_exception(exc)}; "
                                     "an unknown figure is None, not an exception") from exc
            if not isinstance(value, Telemetry) or not _is_frozen(value):
                raise _fail(backend, f"telemetry({index}) returned {type(value).__name__}, "
                                     "expected hal.Telemetry")
            try:
                checked(value)
            except ValueError as problem:
                raise _fail(backend, f"telemetry({index}): {problem}") from None
    if overridden and runtime_initialized is not None and not before and runtime_initialized():
        raise _fail(backend, "telemetry() initialised the device runtime; read the vendor's "
                             "management library (or sysfs) instead")


CHECKS: dict[str, Callable[..., Any]] = {
    "class": check_class,
    "probe_side_effects": check_probe_side_effects,  # first: before anything else probes
    "probe": check_probe,
    "telemetry": check_telemetry,  # before memory(): it must not need the runtime
    "devices": check_devices,
    "memory": check_memory,
    "dtypes": check_dtypes,
    "torch_device": check_torch_device,
    "is_oom": check_is_oom,
    "maintenance": check_maintenance,
    "hardware_versions_findings": check_hardware_versions_findings,
}


def run_checks(backend: Backend, *, oom_error: BaseException | None = None,
               corpus_vendor: str | None = None,
               runtime_initialized: Callable[[], bool] | None = None) -> list[str]:
    """Run every check; the problems found (an empty list means the backend conforms)."""
    problems = []
    for name, check in CHECKS.items():
        try:
            if name == "is_oom":
                check(backend, oom_error, corpus_vendor)
            elif name in ("probe_side_effects", "telemetry"):
                check(backend, runtime_initialized)
            else:
                check(backend)
        except ConformanceError as exc:
            problems.append(f"{name}: {exc}")
        except Exception as exc:
            problems.append(f"{name}: raised {describe_exception(exc)}")
    return problems


def fake_module(name: str, **attrs: Any) -> types.ModuleType:
    """A module object with the given attributes, for a fake vendor module in tests.

    For the vendors hal ships, use the fuller fakes in ``hal.backends.<vendor>.testing``
    (runtime modules, management libraries and their telemetry).
    """
    module = types.ModuleType(name)
    for key, value in attrs.items():
        setattr(module, key, value)
    return module


class TestHalConformance:
    """The checks as pytest tests. Import this class into a test module of a vendor repository
    and override the ``hal_backend_under_test`` fixture (see ``hal.testing.pytest_plugin``)."""

    def test_class(self, hal_backend_under_test: Backend) -> None:
        check_class(hal_backend_under_test)

    def test_probe(self, hal_backend_under_test: Backend) -> None:
        check_probe(hal_backend_under_test)

    def test_probe_side_effects(self, hal_backend_under_test: Backend,
                                hal_runtime_initialized: Callable[[], bool] | None) -> None:
        check_probe_side_effects(hal_backend_under_test, hal_runtime_initialized)

    def test_telemetry(self, hal_backend_under_test: Backend,
                       hal_runtime_initialized: Callable[[], bool] | None) -> None:
        check_telemetry(hal_backend_under_test, hal_runtime_initialized)

    def test_devices(self, hal_backend_under_test: Backend) -> None:
        check_devices(hal_backend_under_test)

    def test_memory(self, hal_backend_under_test: Backend) -> None:
        check_memory(hal_backend_under_test)

    def test_dtypes(self, hal_backend_under_test: Backend) -> None:
        check_dtypes(hal_backend_under_test)

    def test_torch_device(self, hal_backend_under_test: Backend) -> None:
        check_torch_device(hal_backend_under_test)

    def test_is_oom(self, hal_backend_under_test: Backend, hal_oom_error: BaseException | None,
                    hal_oom_corpus_vendor: str | None) -> None:
        if hal_oom_error is None and hal_oom_corpus_vendor is None:
            import pytest

            pytest.skip("override the hal_oom_error fixture with your allocator's OOM exception")
        check_is_oom(hal_backend_under_test, hal_oom_error, hal_oom_corpus_vendor)

    def test_maintenance(self, hal_backend_under_test: Backend) -> None:
        check_maintenance(hal_backend_under_test)

    def test_hardware_versions_findings(self, hal_backend_under_test: Backend) -> None:
        check_hardware_versions_findings(hal_backend_under_test)

    def test_selectable(self, hal_backend_under_test: Backend, hal_plugin_host: Any) -> None:
        """Registered alone in an isolated host, the backend is selected or skipped with why."""
        from hal import selection

        module = types.SimpleNamespace()
        backend = hal_backend_under_test

        def hal_backends() -> list[Backend]:
            return [backend]

        from hal.hookspecs import hookimpl

        module.hal_backends = hookimpl(hal_backends)  # type: ignore[attr-defined]
        assert hal_plugin_host.register(module, f"conformance-{backend.name}")
        found = hal_plugin_host.backends()
        assert backend.name in [b.name for b in found], hal_plugin_host.records
        if all(b.name != "cpu" for b in found):  # something to fall back to
            import importlib

            found.append(importlib.import_module("hal.backends.cpu").CpuBackend())
        sel = selection.decide(found, {"HAL_DEVICE": backend.name})
        probe = _probe(backend)
        if probe.available:
            assert sel.backend.name == backend.name, sel.reason
        else:
            assert sel.fell_back and probe.reason in sel.reason, sel.reason

