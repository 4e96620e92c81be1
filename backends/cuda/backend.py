"""CudaBackend: NVIDIA GPUs through torch.cuda on a CUDA build, probed without a CUDA context."""

from __future__ import annotations

import functools
import glob
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hal.contract import (
    DeviceInfo,
    DeviceModuleBackend,
    Finding,
    Probe,
    VisibleSpec,
    parse_visible,
    quiet,
    resolve_visible,
)
from hal.hardware import ACCELERATOR_CLASS, DISPLAY_CLASS, dev_nodes, pci_devices, read_text
from hal.versions import release, release_text

if TYPE_CHECKING:
    import torch

    from hal.telemetry import Telemetry

NVIDIA_PCI_VENDOR = 0x10DE
VISIBLE_ENV = "CUDA_VISIBLE_DEVICES"
#: Id prefixes CUDA_VISIBLE_DEVICES accepts besides indices: GPU UUIDs and MIG instance UUIDs.
ID_PREFIXES = ("GPU-", "MIG-")
DRIVER_VERSION_FILE = "/proc/driver/nvidia/version"

#: Minimum Linux driver per CUDA major version under minor-version compatibility (NVIDIA,
#: "CUDA Compatibility", Table 1, and the CUDA Toolkit release notes' driver table).
MIN_DRIVER: dict[int, tuple[int, ...]] = {
    11: (450, 80, 2),
    12: (525, 60, 13),
    13: (580,),
}

#: Markers of out-of-memory errors on a CUDA build, each from its source (hal.testing.oom_corpus):
#: the caching allocator and the runtime (c10/cuda), cuBLAS/cuBLASLt allocations and handle
#: creation (ATen/cuda/Exceptions.h TORCH_CUDABLAS_CHECK: "CUDA error: <status> when calling
#: `<call>`"; cublasCreate fails with NOT_INITIALIZED when it cannot allocate), cuDNN
#: allocations (AT_CUDNN_CHECK "cuDNN error: <status>"; cuDNN 9 names the device-side one).
CUDA_OOM_MARKERS = (
    "CUDA out of memory",
    "CUDA error: out of memory",
    "CUBLAS_STATUS_ALLOC_FAILED",
    "CUBLAS_STATUS_NOT_INITIALIZED when calling `cublasCreate(handle)`",
    "CUDNN_STATUS_ALLOC_FAILED",
    "CUDNN_STATUS_INTERNAL_ERROR_DEVICE_ALLOCATION_FAILED",
)

PYTORCH_INDEX = "https://download.pytorch.org/whl"


#: Capabilities whose fp16 arithmetic runs far below fp32 (CC 6.1: GP102/GP104/GP106/GP107,
#: GTX 10xx, Tesla P4/P40, fp16 at 1/64 of the fp32 rate; CUDA C Programming Guide, arithmetic
#: instruction throughput table): torch runs fp16 there, but it is emulation-slow, not native.
SLOW_FP16 = frozenset({(6, 1)})
#: From this capability on, native 16-bit types beat fp32 (tensor cores, CC 7.0 Volta); below
#: it fp16 is at best 2x fp32 without tensor cores (P100, CC 6.0), so hal does not count it fast.
FAST_LOW_PRECISION = (7, 0)


def native_dtype_names(major: int, minor: int) -> list[str]:
    """Dtypes an NVIDIA GPU of compute capability major.minor computes natively, best first.

    bf16 needs CC 8.0 (Ampere); V100 (7.0) and T4 (7.5) only emulate it.  fp8 (e4m3) tensor
    cores from CC 8.9 (Ada, Hopper).  fp16 arithmetic from CC 5.3, except CC 6.1's 1/64-rate
    fp16 (``SLOW_FP16``).  fp8 follows the 16-bit types because it is not an autocast dtype.
    """
    cc = (major, minor)
    names = []
    if cc >= (8, 0):
        names.append("bfloat16")
    if cc >= (5, 3) and cc not in SLOW_FP16:
        names.append("float16")
    if cc >= (8, 9):
        names.append("float8_e4m3fn")
    names.append("float32")
    return names


def wheel_tag_for_driver(driver: tuple[int, ...] | None) -> str:
    """The PyTorch wheel CUDA tag a driver can run (newest first); cu126 when unknown."""
    if driver is not None and driver >= MIN_DRIVER[13]:
        return "cu130"
    if driver is None or driver >= MIN_DRIVER[12]:
        return "cu126"
    return "cu118"


@dataclass(frozen=True)
class Census:
    """What the driver reports without a CUDA context: physical GPUs and their UUIDs."""

    count: int | None  # None: no driver could be asked
    uuids: tuple[str, ...] | None
    mig_uuids: tuple[str, ...] | None
    source: str
    error: str = ""


class CudaBackend(DeviceModuleBackend):
    """NVIDIA GPUs via torch.cuda on a CUDA build of torch."""

    oom_markers = CUDA_OOM_MARKERS
    name = "cuda"
    device_type = "cuda"
    priority = 100
    dist_backend = "nccl"
    visible_devices_env = (VISIBLE_ENV,)
    pci_vendor = ("NVIDIA", NVIDIA_PCI_VENDOR)
    dev_evidence = (("/dev/nvidia[0-9]*", "device node"),)
    driver_version_file = DRIVER_VERSION_FILE

    def __init__(self, module: Any = None, version: Any = None, nvml: Any = None,
                 root: str = "/", cudnn: Any = None, *,
                 environ: Mapping[str, str] | None = None) -> None:
        """Stand-ins for torch.cuda, torch.version, pynvml (False: absent), / and cuDNN."""
        super().__init__(module, root=root, environ=environ, version=version, nvml=nvml,
                         cudnn=cudnn)

    # -- discovery without side effects ----------------------------------------------------

    @property
    def nvml(self) -> Any:
        """pynvml (nvidia-ml-py) when installed, else None."""
        return self.optional_module("nvml", "pynvml")

    def build_problem(self) -> str | None:
        """Why this torch cannot drive NVIDIA GPUs at all, or None for a CUDA build."""
        hip = getattr(self.version, "hip", None)
        if hip:
            return (f"torch {self.torch_version} is a ROCm/HIP build (HIP {hip}), not a CUDA "
                    "build: use the rocm backend")
        if not getattr(self.version, "cuda", None):
            return (f"torch {self.torch_version} is a CPU-only build (torch.version.cuda is "
                    "None): install a CUDA wheel of torch")
        return None

    def driver_version(self) -> str | None:
        """The NVIDIA kernel driver version, from NVML or /proc/driver/nvidia/version."""
        nvml = self.nvml
        if nvml is not None:
            def ask() -> str:
                nvml.nvmlInit()
                try:
                    v = nvml.nvmlSystemGetDriverVersion()
                finally:
                    nvml.nvmlShutdown()
                return _text(v)

            got: str | None = quiet(ask, None)
            if got:
                return got
        text = read_text(self.root, DRIVER_VERSION_FILE) or ""
        return next((t for t in text.split() if len(release(t)) >= 2 and t[0].isdigit()), None)

    def census(self, want_mig: bool = False) -> Census:
        """Physical GPUs and UUIDs from NVML, else from /proc/driver/nvidia/gpus; no CUDA call."""
        nvml = self.nvml
        error = ""
        if nvml is not None:
            def ask() -> Census:
                nvml.nvmlInit()
                try:
                    n = int(nvml.nvmlDeviceGetCount())
                    handles = [nvml.nvmlDeviceGetHandleByIndex(i) for i in range(n)]
                    uuids = tuple(_text(nvml.nvmlDeviceGetUUID(h)) for h in handles)
                    migs: list[str] = []
                    if want_mig:
                        for h in handles:
                            migs.extend(_mig_uuids(nvml, h))
                    return Census(n, uuids, tuple(migs) if want_mig else None, "NVML")
                finally:
                    quiet(nvml.nvmlShutdown, None)

            try:
                return ask()
            except Exception as exc:
                error = f"NVML: {exc or type(exc).__name__}"
        gpus = sorted(glob.glob(os.path.join(self.root, "proc/driver/nvidia/gpus/*")))
        if gpus or read_text(self.root, DRIVER_VERSION_FILE) is not None:
            uuids = []
            for g in gpus:
                info = os.path.relpath(os.path.join(g, "information"), self.root)
                for line in (read_text(self.root, info) or "").splitlines():
                    if line.startswith("GPU UUID:"):
                        uuids.append(line.split(":", 1)[1].strip())
            return Census(len(gpus), tuple(uuids) if len(uuids) == len(gpus) else None, None,
                          "/proc/driver/nvidia/gpus", error)
        return Census(None, None, None, "", error)

    def visible_spec(self) -> VisibleSpec:
        """CUDA_VISIBLE_DEVICES, parsed."""
        return parse_visible(self.environ.get(VISIBLE_ENV), ID_PREFIXES)

    def cudnn_version(self) -> str | None:
        """cuDNN's version as text, from torch.backends.cudnn.version() (None: not linked)."""
        cudnn = self.optional_module("cudnn", "torch.backends.cudnn")
        version = quiet(cudnn.version, None) if cudnn is not None else None
        return _cudnn_text(version) if isinstance(version, int) else None

    def probe(self) -> Probe:
        problem = self.build_problem()
        if problem:
            return Probe(False, problem, 0)
        cuda = self.module
        spec = self.visible_spec()
        shown = f"{VISIBLE_ENV}={spec.value!r}" if spec.value is not None else ""
        if quiet(cuda.is_initialized, False):
            n = int(quiet(cuda.device_count, 0))
            if n > 0:
                return Probe(True, f"{n} CUDA device(s) (torch.cuda already initialised)", n)
            return Probe(False, "torch.cuda is initialised and sees no device", 0)
        if spec.hides_all:
            return Probe(False, f"{shown} hides every GPU", 0)
        census: Census | None = None
        if self.nvml is not None:
            census = self.census(want_mig=spec.prefix == "MIG-")
        if census is None or census.count is None:
            # torch's own NVML-based count honours CUDA_VISIBLE_DEVICES and makes no context.
            n = int(quiet(cuda._device_count_nvml, -1))
            if n >= 0:
                return self._counted(n, None, spec, "torch.cuda._device_count_nvml")
            if census is None:  # NVML's census already fell back to the driver's /proc files
                census = self.census(want_mig=False)
            if census.count is None:
                why = f" ({census.error})" if census.error else ""
                return Probe(False, "no NVIDIA driver: NVML (libnvidia-ml.so.1) cannot be loaded "
                             f"and {DRIVER_VERSION_FILE} is missing{why}", 0)
        return self._from_census(census, spec)

    def _from_census(self, census: Census, spec: VisibleSpec) -> Probe:
        assert census.count is not None
        if census.count == 0:
            return Probe(False, f"the NVIDIA driver is loaded but reports no GPU ({census.source})", 0)
        if spec.prefix == "MIG-":
            positions = resolve_visible(spec, len(census.mig_uuids or ()), census.mig_uuids)
            if positions is None:  # MIG ids cannot be checked without NVML: trust the variable
                return self._counted(len(spec.ids), census.count, spec,
                                     f"{census.source}; MIG ids taken from {VISIBLE_ENV} unverified")
            return self._counted(len(positions), census.count, spec, census.source)
        positions = resolve_visible(spec, census.count, census.uuids)
        if positions is None:
            return self._counted(len(spec.ids), census.count, spec,
                                 f"{census.source}; UUIDs taken from {VISIBLE_ENV} unverified")
        return self._counted(len(positions), census.count, spec, census.source)

    def _counted(self, n: int, physical: int | None, spec: VisibleSpec, source: str) -> Probe:
        of = f" of {physical}" if physical is not None else ""
        env = f", {VISIBLE_ENV}={spec.value!r}" if spec.value is not None else ""
        if n <= 0:
            if spec.value is not None:
                return Probe(False, f"{VISIBLE_ENV}={spec.value!r} hides every GPU{of} "
                             f"({source})", 0)
            return Probe(False, f"no NVIDIA GPU found ({source})", 0)
        return Probe(True, f"{n} CUDA device(s) visible{of} ({source}{env}); "
                     f"CUDA {self.version.cuda}", n)

    # -- devices (these initialise CUDA, as torch does) ------------------------------------

    def devices(self) -> Sequence[DeviceInfo]:
        out = []
        for i in range(self.probe().device_count):
            p = self.module.get_device_properties(i)
            extras: dict[str, Any] = {
                "sm_count": int(p.multi_processor_count),
                "uuid": _uuid_text(getattr(p, "uuid", None)),
                "pci_bus_id": _pci_bus_id(p),
                "vendor": "NVIDIA",
            }
            out.append(DeviceInfo(i, str(p.name), int(p.total_memory),
                                  f"{p.major}.{p.minor}", extras))
        return out

    def dtypes(self, index: int = 0) -> Sequence[torch.dtype]:
        import torch

        with self.device_call() as cuda:
            major, minor = cuda.get_device_capability(index)
        return [getattr(torch, n) for n in native_dtype_names(int(major), int(minor))]

    def fast_dtypes(self, index: int = 0) -> Sequence[torch.dtype]:
        """Native 16/8-bit dtypes from CC 7.0 (tensor cores); none below it (see SLOW_FP16)."""
        import torch

        with self.device_call() as cuda:
            major, minor = cuda.get_device_capability(index)
        if (int(major), int(minor)) < FAST_LOW_PRECISION:
            return []
        return [d for d in self.dtypes(index) if d != torch.float32]

    def emulated_dtypes(self, index: int = 0) -> Sequence[torch.dtype]:
        """bf16/fp16 that torch still runs here, slowly (bf16 on V100/T4, fp16 on CC 6.1)."""
        import torch

        native = list(self.dtypes(index))
        return [d for d in (torch.bfloat16, torch.float16) if d not in native]

    def versions(self) -> Mapping[str, str]:
        out: dict[str, str] = {"torch": self.torch_version}
        driver = self.driver_version()
        if driver:
            out["driver"] = driver
        if getattr(self.version, "cuda", None):
            out["cuda_runtime"] = str(self.version.cuda)
            cudnn = self.cudnn_version()
            if cudnn:
                out["cudnn"] = cudnn
            nccl = quiet(lambda: ".".join(map(str, self.module.nccl.version())), "")
            if nccl:
                out["nccl"] = nccl
        return out

    # -- torch-free evidence and findings --------------------------------------------------

    def telemetry(self, index: int = 0) -> Telemetry:
        """nvidia-smi's figures from NVML, without a CUDA context; see hal.backends.cuda.telemetry."""
        from hal.backends.cuda.telemetry import read

        return read(self, index)

    def findings(self) -> Sequence[Finding]:
        out: list[Finding] = []
        gpus = pci_devices(self.root, NVIDIA_PCI_VENDOR, (DISPLAY_CLASS, ACCELERATOR_CLASS))
        driver_text = self.driver_version()
        driver = release(driver_text) or None
        has_gpu = bool(gpus) or bool(dev_nodes(self.root, "/dev/nvidia[0-9]*"))
        version = release_text(self.torch_version) or self.torch_version.split("+")[0]
        cuda = getattr(self.version, "cuda", None)
        if has_gpu and not cuda and not getattr(self.version, "hip", None):
            tag = wheel_tag_for_driver(driver)
            out.append(Finding(
                "cuda.cpu-torch-on-nvidia", "error",
                f"{len(gpus) or 'an'} NVIDIA GPU(s) present but torch {self.torch_version} is a "
                "CPU-only build, so torch.cuda.is_available() is False",
                f'pip install --force-reinstall "torch=={version}" --index-url {PYTORCH_INDEX}/{tag}'))
        if cuda and not driver and not has_gpu:
            out.append(Finding(
                "cuda.no-gpu-for-cuda-torch", "warn",
                f"torch {self.torch_version} is a CUDA {cuda} build but this machine shows no "
                "NVIDIA GPU or driver (a container started without its GPUs, or a CPU-only host)",
                "start the container with its GPUs (docker run --gpus all with the NVIDIA Container "
                "Toolkit; on Kubernetes request nvidia.com/gpu), or on a CPU-only host install the "
                f'CPU wheel: pip install --force-reinstall "torch=={version}" '
                f"--index-url {PYTORCH_INDEX}/cpu"))
        if cuda and driver:
            major = release(str(cuda))[:1]
            need = MIN_DRIVER.get(major[0]) if major else None
            if need is not None and driver < need:
                want = ".".join(map(str, need))
                tag = wheel_tag_for_driver(driver)
                out.append(Finding(
                    "cuda.driver-too-old", "error",
                    f"NVIDIA driver {driver_text} is older than {want}, the minimum for torch's "
                    f"CUDA {cuda} runtime (CUDA {major[0]}.x minor-version compatibility)",
                    f"upgrade the NVIDIA driver to >= {want}, or install a torch built for an "
                    f"older CUDA: pip install --force-reinstall \"torch=={version}\" "
                    f"--index-url {PYTORCH_INDEX}/{tag}"))
        spec = self.visible_spec()
        if spec.value is not None and has_gpu:
            hidden = spec.hides_all
            physical = None
            if not hidden and spec.kind == "indices":
                census = self.census()
                physical = census.count if census.count is not None else len(gpus)
                hidden = physical > 0 and not resolve_visible(spec, physical)
            if hidden:
                out.append(Finding(
                    "cuda.visible-devices-hide-all", "error",
                    f"{VISIBLE_ENV}={spec.value!r} hides every NVIDIA GPU"
                    + (f" (this machine has {physical}, indices 0..{physical - 1})"
                       if physical else ""),
                    f"unset {VISIBLE_ENV}, or list indices that exist, e.g. "
                    f"export {VISIBLE_ENV}=0"))
        return out


def _mig_uuids(nvml: Any, handle: Any) -> list[str]:
    """UUIDs of the MIG devices configured on one GPU (none when MIG is off or unsupported)."""
    out = []
    for m in range(int(quiet(lambda: nvml.nvmlDeviceGetMaxMigDeviceCount(handle), 0))):
        mig = quiet(functools.partial(nvml.nvmlDeviceGetMigDeviceHandleByIndex, handle, m), None)
        if mig is not None:
            out.append(_text(nvml.nvmlDeviceGetUUID(mig)))
    return out


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _uuid_text(uuid: Any) -> str | None:
    """torch's _CUuuid prints without the GPU- prefix NVML and nvidia-smi use; add it."""
    if uuid is None:
        return None
    text = str(uuid)
    return text if text.startswith(("GPU-", "MIG-")) else f"GPU-{text}"


def _pci_bus_id(props: Any) -> str | None:
    """NVML-style bus id (``00000000:07:00.0``) from pci_domain_id/pci_bus_id/pci_device_id."""
    bus = getattr(props, "pci_bus_id", None)
    if bus is None:
        return None
    domain = getattr(props, "pci_domain_id", 0) or 0
    device = getattr(props, "pci_device_id", 0) or 0
    return f"{int(domain):08x}:{int(bus):02x}:{int(device):02x}.0"


def _cudnn_text(v: int) -> str:
    """cuDNN's integer version: 8.x is M*1000+m*100+p, 9.x and later M*10000+m*100+p."""
    if v >= 90000:
        return f"{v // 10000}.{v // 100 % 100}.{v % 100}"
    return f"{v // 1000}.{v // 100 % 10}.{v % 100}"
