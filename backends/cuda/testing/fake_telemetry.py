"""A real CudaBackend on the fake NVML (``fake_nvml.busy_nvml``), for ``hal watch`` tests and benches.

The fake library itself is ``fake_nvml``: one fake of pynvml for discovery and telemetry.
"""

from __future__ import annotations

from typing import Any

from hal.backends.cuda.testing.fake_nvml import FakeNvml, busy_nvml
from hal.backends.cuda.testing.fake_torch_cuda import counting_cuda, make_version


def make_backend(nvml: FakeNvml | bool | None = None,
                 environ: dict[str, str] | None = None) -> Any:
    """A real CudaBackend on the fake NVML and a CUDA-build torch.version; no torch.cuda call.

    ``nvml=False`` stands for nvidia-ml-py not installed (the count then comes from torch's
    own NVML-based ``_device_count_nvml``, faked to 2).
    """
    from hal.backends.cuda.backend import CudaBackend

    nvml = busy_nvml() if nvml is None or nvml is True else nvml
    count = len(nvml.specs) if isinstance(nvml, FakeNvml) else 2
    return CudaBackend(counting_cuda(count), make_version(cuda="12.4"), nvml, environ=environ)
