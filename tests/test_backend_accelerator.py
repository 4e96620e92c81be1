"""The generic backend on torch.accelerator: reasons, precedence, torch's real API, a real device.

The real device is registered through torch's Python-only PrivateUse1 route and loaded by torch's
own backend autoload (a ``torch.backends`` entry point), in subprocesses so that the test process
keeps a CPU-only torch.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import types
from pathlib import Path
from typing import Any

import pytest
import torch
from helpers import ISOLATED_VARS, make_dist

from hal.backends.accelerator import AcceleratorBackend
from hal.backends.accelerator.backend import UNKNOWN_TYPE
from hal.errors import DeviceUnavailableError
from hal.selection import decide
from hal.testing import conformance
from hal.testing.contract import check_against, exercise, record

# -- a fake torch whose functions carry the real signatures (the contract test checks them) ------


class FakeAccelerator:
    """torch.accelerator of torch >= 2.9 in miniature: one device type, counters per device."""

    __contract_namespace__ = True

    def __init__(self, kind: str | None, count: int = 2, memory_api: bool = True) -> None:
        self.kind, self.count = kind, count
        self.allocated = [1000 * (i + 1) for i in range(count)]
        self.peak = list(self.allocated)
        self.calls: list[str] = []
        self.current = 0
        if not memory_api:  # torch 2.6-2.8: no memory calls in torch.accelerator
            for name in ("memory_allocated", "memory_reserved", "max_memory_allocated",
                         "get_memory_info", "empty_cache", "reset_peak_memory_stats"):
                setattr(self, name, None)

    def current_accelerator(self, check_available: bool = False) -> Any:
        if self.kind is None:
            return None
        try:
            return torch.device(self.kind)
        except RuntimeError:  # a type this torch does not know until its extension loads (npu)
            return types.SimpleNamespace(type=self.kind)

    def device_count(self) -> int:
        return self.count

    def set_device_index(self, device: Any, /) -> None:
        self.current = int(device)

    def synchronize(self, device: Any = None, /) -> None:
        self.calls.append(f"synchronize({device})")

    def memory_allocated(self, device_index: Any = None, /) -> int:
        return self.allocated[device_index or 0]

    def memory_reserved(self, device_index: Any = None, /) -> int:
        return 2 * self.allocated[device_index or 0]

    def max_memory_allocated(self, device_index: Any = None, /) -> int:
        return self.peak[device_index or 0]

    def get_memory_info(self, device_index: Any = None, /) -> tuple[int, int]:
        return (7 << 30, 8 << 30)

    def empty_cache(self) -> None:
        self.calls.append("empty_cache")

    def reset_peak_memory_stats(self, device_index: Any = None, /) -> None:
        self.calls.append(f"reset_peak_memory_stats({device_index})")


class FakeDeviceModule:
    """A torch.cuda-shaped device module (what torch.get_device_module returns for out-of-tree types)."""

    __contract_namespace__ = True

    def __init__(self, acc: FakeAccelerator) -> None:
        self.acc = acc

    def get_device_name(self, device: Any = None) -> str:
        return f"Fake {self.acc.kind} {device}"

    def is_bf16_supported(self, including_emulation: bool = True) -> bool:
        return True

    def memory_allocated(self, device: Any = None) -> int:
        return self.acc.allocated[device or 0]

    def memory_reserved(self, device: Any = None) -> int:
        return self.acc.allocated[device or 0]

    def max_memory_allocated(self, device: Any = None) -> int:
        return self.acc.peak[device or 0]

    def mem_get_info(self, device: Any = None) -> tuple[int, int]:
        return (3 << 30, 4 << 30)

    def empty_cache(self) -> None:
        self.acc.calls.append("module.empty_cache")

    def reset_peak_memory_stats(self, device: Any = None) -> None:
        self.acc.calls.append("module.reset_peak_memory_stats")


def fake_torch(kind: str | None, count: int = 2, memory_api: bool = True) -> types.SimpleNamespace:
    acc = FakeAccelerator(kind, count, memory_api)
    module = FakeDeviceModule(acc)

    def get_device_module(device: torch.device | str | None = None) -> Any:
        return module

    return types.SimpleNamespace(accelerator=acc, get_device_module=get_device_module,
                                 __version__="2.13.0")


def backend(kind: str | None, count: int = 2, owners: dict[str, str] | None = None,
            memory_api: bool = True) -> AcceleratorBackend:
    return AcceleratorBackend(fake_torch(kind, count, memory_api), owners=lambda: owners or {})


# -- reasons and precedence ------------------------------------------------------------------------


def test_the_real_torch_gives_the_reason_it_is_not_used() -> None:
    probe = AcceleratorBackend(owners=dict).probe()
    assert not probe.available
    if torch.accelerator.current_accelerator() is None:  # a CPU build
        why = "reports no accelerator"
        assert torch.__version__ in probe.reason
    else:  # a CUDA build (tox -e ipex, cuda-build): the named backend's device type
        why = "hal's cuda/rocm backend drives"
    assert why in probe.reason
    with pytest.raises(DeviceUnavailableError, match=why):
        AcceleratorBackend(owners=dict).memory()


def test_an_unclaimed_device_type_is_available_with_a_reason() -> None:
    b = backend("hpu", count=3)
    probe = b.probe()
    assert (probe.available, probe.device_count) == (True, 3)
    assert "'hpu'" in probe.reason and "no hal plugin" in probe.reason
    assert b.device_type == "hpu"
    assert str(b.torch_device(2)) == "hpu:2"


@pytest.mark.parametrize(("kind", "owner"), [("cuda", "cuda/rocm"), ("npu", "ascend"), ("xpu", "xpu")])
def test_device_types_of_the_named_backends_are_declined(kind: str, owner: str) -> None:
    b = backend(kind, owners={"cuda": "rocm"})
    probe = b.probe()
    assert not probe.available
    assert f"hal's {owner} backend drives" in probe.reason
    assert b.device_type == UNKNOWN_TYPE  # HAL_DEVICE=cuda does not reach the declined backend


def test_a_device_type_another_loaded_backend_drives_is_declined() -> None:
    probe = backend("mps", owners={"mps": "mps"}).probe()
    assert not probe.available and "hal's mps backend drives" in probe.reason


def test_the_named_backend_wins_selection_and_the_generic_one_beats_the_cpu() -> None:
    from hal.backends.cpu import CpuBackend

    generic = backend("hpu")
    sel = decide([CpuBackend(), generic], environ={})
    assert sel.backend is generic and sel.device_string == "hpu:0"
    assert "accelerator is the highest-priority" in sel.reason
    sel = decide([CpuBackend(), generic], environ={"HAL_DEVICE": "hpu:1"})
    assert sel.backend is generic and sel.device_string == "hpu:1"


def test_no_device_and_no_api_are_reasons_too() -> None:
    assert "sees no device" in backend("hpu", count=0).probe().reason
    old = AcceleratorBackend(types.SimpleNamespace(__version__="2.5.1"), owners=dict)
    assert "no torch.accelerator API" in old.probe().reason


def test_the_device_type_is_not_read_before_torch_is_imported() -> None:
    code = ("import sys; from hal.backends.accelerator import AcceleratorBackend; "
            "print(AcceleratorBackend().device_type, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, check=True).stdout.split()
    assert out == [UNKNOWN_TYPE, "False"]


# -- memory and maintenance through the device-agnostic API ----------------------------------------


def test_memory_and_maintenance_go_through_torch_accelerator() -> None:
    b = backend("hpu")
    acc = b._torch.accelerator
    mem = b.memory(1)
    assert (mem.total, mem.free, mem.allocated, mem.reserved, mem.peak) == (
        8 << 30, 7 << 30, 2000, 4000, 2000)
    assert "torch.accelerator" in mem.source
    b.synchronize(1)
    b.empty_cache()
    b.reset_peak_memory(0)
    b.set_device(1)
    assert acc.calls == ["synchronize(1)", "empty_cache", "reset_peak_memory_stats(0)"]
    assert acc.current == 1
    assert [d.name for d in b.devices()] == ["Fake hpu 0", "Fake hpu 1"]
    assert b.dtypes() == [torch.bfloat16, torch.float32]


def test_an_older_torch_falls_back_to_the_device_module() -> None:
    b = backend("hpu", memory_api=False)
    mem = b.memory(0)
    assert (mem.total, mem.free, mem.allocated) == (4 << 30, 3 << 30, 1000)
    b.empty_cache()
    b.reset_peak_memory(0)
    assert b._torch.accelerator.calls == ["module.empty_cache", "module.reset_peak_memory_stats"]


def test_the_backend_conforms_on_the_fake() -> None:
    oom = torch.OutOfMemoryError("hpu out of memory")
    assert conformance.run_checks(backend("hpu"), oom_error=oom) == []


# -- the contract: every name used exists in the installed torch with the signature used -----------


def test_every_torch_name_used_exists_with_the_real_signature() -> None:
    # The fake has the memory calls exactly when the installed torch.accelerator has them (2.9+).
    memory_api = hasattr(torch.accelerator, "memory_allocated")
    proxy, rec = record(fake_torch("hpu", memory_api=memory_api))
    exercise(AcceleratorBackend(proxy, owners=dict))
    used = set(rec.names)
    assert {"accelerator.current_accelerator", "accelerator.device_count",
            "accelerator.synchronize", "accelerator.set_device_index", "get_device_module"} <= used
    if memory_api:
        assert {"accelerator.memory_allocated", "accelerator.get_memory_info",
                "accelerator.empty_cache", "accelerator.reset_peak_memory_stats"} <= used
    missing = {n for n in rec.names if n.startswith("accelerator.")
               and getattr(proxy.accelerator, n[12:], None) is None}
    check_against(rec, torch, ignore={"__version__"} | missing)


def test_the_older_torch_fallback_uses_names_of_the_torch_cuda_shaped_device_modules() -> None:
    fake = fake_torch("hpu", memory_api=False)
    proxy, rec = record(fake, wrap_results=("get_device_module",))
    exercise(AcceleratorBackend(proxy, owners=dict))
    module_names = {n.split("().", 1)[1] for n in rec.names if n.startswith("get_device_module().")}
    assert {"memory_allocated", "mem_get_info", "empty_cache", "reset_peak_memory_stats"} <= module_names
    # torch.cuda is the shape out-of-tree device modules copy (torch.xpu, torch_npu, torch_openreg).
    check_against(rec, torch, namespaces={"get_device_module()": torch.cuda},
                  ignore={"__version__"} | {n for n in rec.names if n.startswith("accelerator.")
                                            and getattr(fake.accelerator, n[12:], None) is None})


# -- a real device: torch's Python-only PrivateUse1 route, loaded by torch's backend autoload -------


# torch >= 2.10 has the Python-only route; a CUDA build's current accelerator is cuda whatever else
# registers, so there the route cannot make a PrivateUse1 device the current one.
python_route = pytest.mark.skipif(
    not hasattr(torch.utils.backend_registration, "_setup_privateuseone_for_python_backend")
    or torch.accelerator.current_accelerator() is not None,
    reason=f"torch {torch.__version__} has no Python-only PrivateUse1 route, or is a build whose "
           "current accelerator is already set")

AUTOLOAD_MODULE = """
    import torch.utils.backend_registration as br


    def _autoload():
        br._setup_privateuseone_for_python_backend("halsim")
"""


@pytest.fixture(scope="module")
def halsim_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A distribution whose ``torch.backends`` entry point registers the ``halsim`` device."""
    return make_dist(tmp_path_factory.mktemp("halsim"), "halsim", "0.1", {"halsim": "halsim:_autoload"},
                     {"halsim": AUTOLOAD_MODULE}, group="torch.backends")


def _env(path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ISOLATED_VARS}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(path), env.get("PYTHONPATH")]))
    env.update(extra)
    return env


PROBE_SCRIPT = """
    import json, hal, torch
    sel = hal.select()
    b = hal.get_backend("accelerator")
    mem = b.memory(0)
    b.synchronize(0); b.empty_cache(); b.reset_peak_memory(0)
    print(json.dumps({"accelerator": str(torch.accelerator.current_accelerator()),
                      "selected": sel.backend.name, "device": str(hal.get_device()),
                      "reason": sel.reason, "memory_source": mem.source,
                      "devices": [d.name for d in b.devices()]}))
"""


def _run(code: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    # cwd outside the checkout: a stale *.egg-info there would shadow the installed entry points.
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, env=env, timeout=180, cwd=env["PYTHONPATH"].split(os.pathsep)[0])


@python_route
def test_a_python_privateuse1_device_is_selected_with_no_hal_plugin(halsim_path: Path) -> None:
    done = _run(PROBE_SCRIPT, _env(halsim_path))
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout)
    assert got["accelerator"] == "halsim"
    assert (got["selected"], got["device"]) == ("accelerator", "halsim:0")
    assert "accelerator 'halsim' with 1 device(s)" in got["reason"]
    # No C++ device allocator behind a Python-only device: memory says so instead of failing.
    assert got["memory_source"].startswith("not reported: torch's allocator statistics failed")
    assert got["devices"] == ["halsim:0"]


@python_route
@pytest.mark.parametrize("wanted", ["accelerator", "halsim", "accelerator:0"])
def test_hal_device_names_the_generic_backend_or_its_device_type(halsim_path: Path,
                                                                  wanted: str) -> None:
    done = _run(PROBE_SCRIPT, _env(halsim_path, HAL_DEVICE=wanted, HAL_STRICT="1"))
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout)
    assert got["device"] == "halsim:0"
    assert got["reason"].startswith(f"HAL_DEVICE={wanted}: accelerator is available")


@python_route
def test_hal_devices_lists_it_and_autoload_off_gives_the_reason(halsim_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "hal", "devices"], capture_output=True, text=True,
                          env=_env(halsim_path), timeout=180, cwd=halsim_path)
    assert done.returncode == 0, done.stderr
    assert "accelerator (priority 5, halsim, collectives gloo): available" in done.stdout
    assert "selected: halsim:0 (accelerator)" in done.stdout
    done = subprocess.run([sys.executable, "-m", "hal", "devices"], capture_output=True, text=True,
                          env=_env(halsim_path, HAL_DEVICE="accelerator",
                                   TORCH_DEVICE_BACKEND_AUTOLOAD="0"), timeout=180, cwd=halsim_path)
    assert done.returncode == 0, done.stderr
    assert "accelerator: torch" in done.stdout and "reports no accelerator" in done.stdout
    assert "selected: cpu" in done.stdout
