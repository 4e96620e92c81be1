"""hal's vendor backends pass the conformance suite on their fake device modules."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Callable
from typing import Any

import pytest

from hal.backends.ascend import AscendBackend
from hal.backends.cuda import CudaBackend
from hal.backends.cuda import testing as fc
from hal.backends.rocm import RocmBackend
from hal.backends.xpu import XpuBackend
from hal.backends.xpu.testing import fake_xpu as fx
from hal.testing import conformance

GiB = 1 << 30


def _gpu_oom(module: Any) -> BaseException:
    fc.allocate(module, 1 << 20)
    try:
        fc.allocate(module, 1 << 50)
    except BaseException as exc:
        return exc
    raise AssertionError("a petabyte fitted on a fake GPU")


def cuda(devices: list[str]) -> tuple[Any, BaseException, str]:
    module = fc.make_cuda(devices)
    backend = CudaBackend(module, fc.cuda_version(), fc.make_nvml(devices), "/nonexistent")
    return backend, _gpu_oom(module), "cuda"


def rocm(devices: list[str]) -> tuple[Any, BaseException, str]:
    module = fc.make_cuda(devices)
    backend = RocmBackend(module, fc.hip_version(), False, "/nonexistent")
    return backend, _gpu_oom(module), "rocm"


def xpu() -> tuple[Any, BaseException, str]:
    fake = fx.max_1550_card()
    backend = XpuBackend(fake.module, "/nonexistent", environ={}, versions_of=fake.versions_of)
    return backend, fx.oom_error(), "xpu"


CASES: dict[str, Callable[[], tuple[Any, BaseException, str]]] = {
    "cuda-A100": lambda: cuda(["A100-80GB", "A100-80GB"]),
    "cuda-V100": lambda: cuda(["V100-32GB"]),
    "cuda-H100": lambda: cuda(["H100"]),
    "rocm-MI300X": lambda: rocm(["MI300X"]),
    "xpu-Max1550": xpu,
}
#: Known gaps against hal's corpus of real OOM messages (the backend's owner fixes them).
@pytest.mark.parametrize("case", sorted(CASES))
def test_vendor_backend_conforms_on_its_fake(case: str) -> None:
    backend, oom, vendor = CASES[case]()
    assert backend.probe().available, backend.probe().reason
    assert conformance.run_checks(backend, oom_error=oom, corpus_vendor=vendor) == []


@pytest.mark.parametrize("spec", ["ASCEND_910B", "ASCEND_310P3"])
def test_ascend_conforms_on_its_fake(spec: str) -> None:
    """In a subprocess: torch.device('npu') needs the PrivateUse1 name, as torch_npu sets it."""
    code = textwrap.dedent(f"""
        import json, torch
        torch.utils.rename_privateuse1_backend("npu")
        from hal.backends.ascend import AscendBackend
        from hal.testing import conformance
        from hal.backends.ascend.testing import fake_npu as fn
        spec = fn.{spec}
        fake = fn.fake_npu(spec, count=2)
        env = {{"ASCEND_TOOLKIT_HOME": "/usr/local/Ascend/ascend-toolkit/latest"}}
        backend = AscendBackend(fake.module, fake.loader, "/nonexistent", environ=env,
                                versions_of=fake.versions_of("2.13.0"))
        assert backend.probe().available, backend.probe().reason
        print(json.dumps(conformance.run_checks(backend, oom_error=fn.oom_error(spec),
                                                corpus_vendor="ascend")))
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == []


@pytest.mark.parametrize("backend_cls", [CudaBackend, RocmBackend, AscendBackend, XpuBackend])
def test_vendor_backend_conforms_unavailable_here(backend_cls: type) -> None:
    """On this CPU-only machine, the real default construction: unavailable, still conforming."""
    backend = backend_cls()
    assert not backend.probe().available
    assert conformance.run_checks(backend) == []
