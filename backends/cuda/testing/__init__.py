"""Fakes of what the CUDA and ROCm backends drive, one module a library, for tests and plugin authors.

``specs`` (real GPU models), ``fake_torch_cuda`` (``torch.cuda`` in CUDA and HIP flavours and
``torch.version``), ``fake_nvml`` (``pynvml``: discovery and live figures).  Their names are
re-exported here, so ``from hal.backends.cuda import testing as fc`` gives ``fc.make_cuda``,
``fc.make_nvml``, ...  ``fake_telemetry`` builds a real CudaBackend on ``fc.busy_nvml()``.
"""

from __future__ import annotations

from hal.backends.cuda.testing.fake_nvml import (
    FakeMemory,
    FakeNvml,
    FakeNVMLError,
    Load,
    busy_nvml,
    gpu_uuid,
    make_nvml,
    mig_uuids,
)
from hal.backends.cuda.testing.fake_torch_cuda import (
    FakeCudaDeviceProperties,
    FakeCUuuid,
    FakeGpuState,
    allocate,
    counting_cuda,
    cpu_version,
    cuda_version,
    hip_version,
    make_cuda,
    make_version,
    oom_message,
    state,
)
from hal.backends.cuda.testing.specs import SPECS, GiB, GpuSpec, MiB, device_uuid, pci_address, with_spec

__all__ = [
    "SPECS", "FakeCUuuid", "FakeCudaDeviceProperties", "FakeGpuState", "FakeMemory", "FakeNVMLError",
    "FakeNvml", "GiB", "GpuSpec", "Load", "MiB", "allocate", "busy_nvml", "counting_cuda", "cpu_version",
    "cuda_version", "device_uuid", "gpu_uuid", "hip_version", "make_cuda", "make_nvml", "make_version",
    "mig_uuids", "oom_message", "pci_address", "state", "with_spec",
]
