"""The out-of-tree MPS example plugin: conformance on a fake module, the names it uses exist in
the real torch.mps, and pip-installed it is found through its entry point."""

from __future__ import annotations

import json
from typing import Any

import pytest
import torch
from helpers import conformance_suite, run_hal

import hal
from hal.testing import conformance, contract, oom_corpus

hal_mps = pytest.importorskip("hal_mps", reason="pip install examples/plugins/hal-mps")

pytest_plugins = ["hal.testing.pytest_plugin"]

GiB = 1 << 30
MPS_OOM = oom_corpus.cases("mps", oom=True)[0].make()


class FakeMps:
    """State behind fake ``torch.mps`` / ``torch.backends.mps`` modules (a 16 GB M2)."""

    def __init__(self, built: bool = True, available: bool = True) -> None:
        self.built, self.available = built, available
        self.allocated = 0
        self.driver = 512 << 20
        self.synced = 0

    def modules(self) -> tuple[Any, Any]:
        def synchronize() -> None:
            self.synced += 1

        def empty_cache() -> None:
            self.driver = max(self.allocated, 64 << 20)

        mps = conformance.fake_module(
            "torch.mps",
            device_count=lambda: 1 if self.available else 0,
            current_allocated_memory=lambda: self.allocated,
            driver_allocated_memory=lambda: self.driver,
            recommended_max_memory=lambda: int(10.67 * GiB),
            empty_cache=empty_cache,
            synchronize=synchronize,
        )
        backends_mps = conformance.fake_module(
            "torch.backends.mps",
            is_built=lambda: self.built,
            is_available=lambda: self.built and self.available,
        )
        return mps, backends_mps


def make(fake: FakeMps, **kw: str) -> Any:
    mps, backends_mps = fake.modules()
    return hal_mps.MpsBackend(mps=mps, backends_mps=backends_mps,
                              system=kw.get("system", "Darwin"), machine=kw.get("machine", "arm64"))


def _busy_mps() -> Any:
    """An available MPS backend with 300 MiB allocated."""
    fake = FakeMps()
    fake.allocated = 300 << 20
    return make(fake)


TestMpsConformance = conformance_suite(_busy_mps, MPS_OOM, "mps")


@pytest.mark.parametrize(("built", "available", "reason"), [
    (True, True, "Metal Performance Shaders"),
    (False, False, "no MPS support"),
    (True, False, "no MPS device is available"),
])
def test_each_state_conforms(built: bool, available: bool, reason: str) -> None:
    backend = make(FakeMps(built, available))
    assert conformance.run_checks(backend, oom_error=MPS_OOM, corpus_vendor="mps") == []
    probe = backend.probe()
    assert probe.available is (built and available) and reason in probe.reason


def test_memory_figures() -> None:
    fake = FakeMps()
    backend = make(fake)
    fake.allocated = 2 * GiB
    fake.driver = 3 * GiB
    mem = backend.memory(0)
    assert (mem.total, mem.allocated, mem.reserved) == (int(10.67 * GiB), 2 * GiB, 3 * GiB)
    assert mem.free == mem.total - 3 * GiB and mem.peak == 2 * GiB
    fake.allocated = GiB
    assert backend.memory(0).peak == 2 * GiB  # the peak is remembered
    backend.reset_peak_memory(0)
    assert backend.memory(0).peak == GiB
    backend.synchronize(0)
    assert fake.synced == 1


def test_findings_on_a_mac(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PYTORCH_ENABLE_MPS_FALLBACK", raising=False)
    ids = [f.id for f in make(FakeMps(built=False)).findings()]
    assert ids == ["mps-not-built", "mps-no-fallback"]
    monkeypatch.setenv("PYTORCH_ENABLE_MPS_FALLBACK", "1")
    assert make(FakeMps()).findings() == []
    assert make(FakeMps(), system="Linux", machine="x86_64").findings() == []


def test_every_name_used_exists_in_real_torch_mps() -> None:
    """Record what the backend touches on the fakes; each name must exist in the real modules."""
    fake = FakeMps()
    mps, backends_mps = fake.modules()
    mps_proxy, mps_rec = contract.record(mps)
    bm_proxy, bm_rec = contract.record(backends_mps)
    backend = hal_mps.MpsBackend(mps=mps_proxy, backends_mps=bm_proxy, system="Darwin",
                                 machine="arm64")
    assert conformance.run_checks(backend, oom_error=MPS_OOM) == []
    backend.findings()
    assert {"device_count", "current_allocated_memory", "driver_allocated_memory",
            "recommended_max_memory", "empty_cache", "synchronize"} <= set(mps_rec)
    assert {"is_built", "is_available"} <= set(bm_rec)
    contract.check_against(mps_rec, torch.mps)
    contract.check_against(bm_rec, torch.backends.mps)


def test_contract_check_catches_an_invented_name() -> None:
    mps, _ = FakeMps().modules()
    mps.total_memory = lambda: 1  # not in the real torch.mps
    proxy, rec = contract.record(mps)
    proxy.total_memory()
    with pytest.raises(contract.ContractError, match="total_memory"):
        contract.check_against(rec, torch.mps)


def test_installed_plugin_listed_by_hal_devices() -> None:
    """pip-installed, the entry point makes `hal devices` list it, unavailable here, with why."""
    proc = run_hal("devices", "--json")
    assert proc.returncode == 0, proc.stderr
    backends = {b["name"]: b for b in json.loads(proc.stdout)["backends"]}
    assert "mps" in backends
    mps = backends["mps"]
    if not torch.backends.mps.is_available():
        assert mps["available"] is False and "MPS" in mps["reason"]
    assert mps["device_type"] == "mps" and mps["priority"] == 70
    records = {p["name"]: p for p in hal.list_plugins()}
    assert records["mps"]["distribution"] == "hal-mps"
    assert records["mps"]["status"] == "loaded" and records["mps"]["backends"] == ["mps"]


def test_installed_plugin_extends_hal_is_oom() -> None:
    assert hal.is_oom(MPS_OOM)
    assert not hal.is_oom(RuntimeError("MPS does not support this op"))
