"""RocmBackend: AMD GPUs through torch.cuda on a HIP (ROCm) build, probed without HIP init."""

from __future__ import annotations

import glob
import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from hal.contract import (
    DeviceInfo,
    DeviceModuleBackend,
    Finding,
    Probe,
    parse_visible,
    quiet,
    resolve_visible,
)
from hal.hardware import ACCELERATOR_CLASS, DISPLAY_CLASS, dev_nodes, pci_devices, read_text
from hal.versions import release_text

if TYPE_CHECKING:
    import torch

    from hal.telemetry import Telemetry

AMD_PCI_VENDOR = 0x1002
ROCR_ENV = "ROCR_VISIBLE_DEVICES"
HIP_ENV = "HIP_VISIBLE_DEVICES"
CUDA_ENV = "CUDA_VISIBLE_DEVICES"
DRIVER_VERSION_FILE = "/sys/module/amdgpu/version"
KFD_NODES = "sys/class/kfd/kfd/topology/nodes"
PYTORCH_INDEX = "https://download.pytorch.org/whl"
#: The ROCm wheel variant named in fixes; check pytorch.org/get-started for your torch release.
ROCM_WHEEL_TAG = "rocm6.4"
#: Markers of out-of-memory errors on a HIP build: the hipified caching allocator and runtime
#: checks (c10/hip), and hipBLAS allocations.
HIP_OOM_MARKERS = ("HIP out of memory", "HIP error: out of memory", "hipErrorOutOfMemory",
                   "HIPBLAS_STATUS_ALLOC_FAILED")
#: Serial UUIDs in the visible-devices variables may carry NVIDIA's "GPU-" prefix; the HIP
#: runtime (and torch's _transform_uuid_to_ordinals on ROCm) drops it before matching.
UUID_PREFIX = "GPU-"

#: Native compute dtypes by gfx architecture family, best first (AMD, "Data types and precision
#: support", hardware table): MI300 (gfx942) has FNUZ fp8, MI350 (gfx950) and RDNA4 (gfx12) OCP
#: fp8, MI100/MI200 and RDNA3 bf16 without fp8, gfx906 (MI50/60) no bf16.
ARCH_DTYPES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("gfx950", ("bfloat16", "float16", "float8_e4m3fn", "float32")),
    ("gfx942", ("bfloat16", "float16", "float8_e4m3fnuz", "float32")),
    ("gfx941", ("bfloat16", "float16", "float8_e4m3fnuz", "float32")),
    ("gfx940", ("bfloat16", "float16", "float8_e4m3fnuz", "float32")),
    ("gfx90a", ("bfloat16", "float16", "float32")),
    ("gfx908", ("bfloat16", "float16", "float32")),
    ("gfx12", ("bfloat16", "float16", "float8_e4m3fn", "float32")),
    ("gfx11", ("bfloat16", "float16", "float32")),
    ("gfx906", ("float16", "float32")),
)


def native_dtype_names(arch: str) -> list[str]:
    """Native dtypes of a gcnArchName such as ``gfx942:sramecc+:xnack-``; fp16+fp32 if unknown."""
    base = arch.split(":")[0].strip().lower()
    for prefix, names in ARCH_DTYPES:
        if base.startswith(prefix):
            return list(names)
    return ["float16", "float32"]


class RocmBackend(DeviceModuleBackend):
    """AMD GPUs via torch.cuda on a ROCm (HIP) build of torch."""

    oom_markers = HIP_OOM_MARKERS
    name = "rocm"
    device_type = "cuda"
    priority = 100
    dist_backend = "nccl"  # RCCL, reached through torch's nccl backend name
    visible_devices_env = (HIP_ENV, ROCR_ENV, CUDA_ENV)
    pci_vendor = ("AMD", AMD_PCI_VENDOR)
    dev_evidence = (("/dev/kfd", "ROCm compute node"), ("/dev/dri/renderD*", "DRM render node"))
    driver_version_file = DRIVER_VERSION_FILE

    def __init__(self, module: Any = None, version: Any = None, amdsmi: Any = None,
                 root: str = "/", cudnn: Any = None, *,
                 environ: Mapping[str, str] | None = None) -> None:
        """Stand-ins for torch.cuda, torch.version, amdsmi (False: absent), / and MIOpen's
        torch.backends.cudnn."""
        super().__init__(module, root=root, environ=environ, version=version, amdsmi=amdsmi,
                         cudnn=cudnn)

    @property
    def amdsmi(self) -> Any:
        """The amdsmi module when installed, else None."""
        return self.optional_module("amdsmi", "amdsmi")

    def build_problem(self) -> str | None:
        """Why this torch cannot drive AMD GPUs, or None for a ROCm build."""
        if getattr(self.version, "hip", None):
            return None
        cuda = getattr(self.version, "cuda", None)
        flavour = f"a CUDA {cuda} build" if cuda else "a CPU-only build"
        return (f"torch {self.torch_version} is not a ROCm build ({flavour}; "
                "torch.version.hip is None)")

    def kfd_gpus(self) -> list[str]:
        """GPU nodes of the KFD topology that this process can open, as libhsakmt counts them.

        A node is a GPU when its simd_count > 0; libhsakmt (topology.c) then opens its render
        node ``/dev/dri/renderD<drm_render_minor>`` and drops the node when that fails, which is
        what a container given only some of the host's GPUs sees.  Here the node must exist and
        be readable and writable (os.access); a node without ``drm_render_minor`` is counted.
        """
        nodes = []
        for path in sorted(glob.glob(os.path.join(self.root, KFD_NODES, "*", "properties"))):
            # read_text: an unreadable or odd node must not make probe() raise
            text = read_text(self.root, os.path.relpath(path, self.root)) or ""
            pairs = (line.split(None, 1) for line in text.splitlines())
            props = {p[0]: p[1].strip() for p in pairs if len(p) == 2}
            simd = props.get("simd_count", "0")
            if not (simd.isascii() and simd.isdigit() and int(simd) > 0):
                continue
            minor = props.get("drm_render_minor")
            if minor is not None and minor.isascii() and minor.isdigit():
                node = os.path.join(self.root, "dev", "dri", f"renderD{int(minor)}")
                if not os.access(node, os.R_OK | os.W_OK):
                    continue
            nodes.append(path)
        return nodes

    def physical_count(self) -> tuple[int | None, tuple[str, ...] | None, str]:
        """(GPU count, serial UUIDs or None, source) without initialising HIP."""
        smi = self.amdsmi
        if smi is not None:
            def ask() -> tuple[int, tuple[str, ...] | None]:
                smi.amdsmi_init()
                try:
                    handles = smi.amdsmi_get_processor_handles()
                    serials = tuple(str(smi.amdsmi_get_gpu_asic_info(h)["asic_serial"])[2:].lower()
                                    for h in handles)
                    return len(handles), serials
                finally:
                    quiet(smi.amdsmi_shut_down, None)

            got = quiet(ask, None)
            if got is not None:
                return got[0], got[1], "amdsmi"
        nodes = self.kfd_gpus()
        if nodes or os.path.exists(os.path.join(self.root, "dev/kfd")):
            return len(nodes), None, "KFD topology"
        return None, None, ""

    def visible_values(self) -> dict[str, str]:
        """The three visible-devices variables that are set."""
        env = self.environ
        return {k: env[k] for k in (ROCR_ENV, HIP_ENV, CUDA_ENV) if k in env}

    def visible_count(self, physical: int, serials: tuple[str, ...] | None) -> int | None:
        """Devices left after ROCR (runtime level) then HIP, or CUDA_VISIBLE_DEVICES as its alias."""
        env = self.visible_values()
        count: int | None = physical
        if ROCR_ENV in env:
            spec = parse_visible(env[ROCR_ENV], (UUID_PREFIX,))
            pos = resolve_visible(spec, physical, serials, strip=UUID_PREFIX)
            count = len(pos) if pos is not None else len(env[ROCR_ENV].split(","))
            serials = tuple(serials[i] for i in pos) if serials is not None and pos else None
        hip_value = env.get(HIP_ENV, env.get(CUDA_ENV))
        if hip_value is not None and count is not None:
            spec = parse_visible(hip_value, (UUID_PREFIX,))
            pos = resolve_visible(spec, count, serials, strip=UUID_PREFIX)
            count = len(pos) if pos is not None else len(spec.ids)
        return count

    def probe(self) -> Probe:
        problem = self.build_problem()
        if problem:
            return Probe(False, problem, 0)
        cuda = self.module
        if quiet(cuda.is_initialized, False):
            n = int(quiet(cuda.device_count, 0))
            return Probe(n > 0, f"{n} ROCm device(s) (torch.cuda already initialised)", n)
        physical, serials, source = self.physical_count()
        if physical is None:
            n = int(quiet(cuda._device_count_amdsmi, -1))
            if n >= 0:
                return self._counted(n, None, "torch.cuda._device_count_amdsmi")
            return Probe(False, "no amdgpu driver: /dev/kfd and the KFD topology are missing "
                         "and amdsmi is not installed", 0)
        if physical == 0:
            return Probe(False, f"the amdgpu driver reports no GPU ({source})", 0)
        visible = self.visible_count(physical, serials)
        return self._counted(physical if visible is None else visible, physical, source)

    def _counted(self, n: int, physical: int | None, source: str) -> Probe:
        env = self.visible_values()
        shown = ", ".join(f"{k}={v!r}" for k, v in env.items())
        of = f" of {physical}" if physical is not None else ""
        if n <= 0:
            if env:
                return Probe(False, f"{shown} hides every GPU{of} ({source})", 0)
            return Probe(False, f"no AMD GPU found ({source})", 0)
        extra = f", {shown}" if shown else ""
        return Probe(True, f"{n} ROCm device(s) visible{of} ({source}{extra}); "
                     f"HIP {self.version.hip}", n)

    def devices(self) -> Sequence[DeviceInfo]:
        out = []
        for i in range(self.probe().device_count):
            p = self.module.get_device_properties(i)
            arch = str(getattr(p, "gcnArchName", "") or "")
            bus = getattr(p, "pci_bus_id", None)
            extras: dict[str, Any] = {
                "compute_units": int(p.multi_processor_count),
                "gfx": arch.split(":")[0],
                "uuid": str(p.uuid) if getattr(p, "uuid", None) is not None else None,
                "pci_bus_id": None if bus is None else
                f"{int(getattr(p, 'pci_domain_id', 0) or 0):04x}:{int(bus):02x}:"
                f"{int(getattr(p, 'pci_device_id', 0) or 0):02x}.0",
                "vendor": "AMD",
            }
            out.append(DeviceInfo(i, str(p.name), int(p.total_memory), arch or None, extras))
        return out

    def dtypes(self, index: int = 0) -> Sequence[torch.dtype]:
        import torch

        with self.device_call() as cuda:
            arch = str(cuda.get_device_properties(index).gcnArchName)
        return [getattr(torch, n) for n in native_dtype_names(arch) if hasattr(torch, n)]

    def emulated_dtypes(self, index: int = 0) -> Sequence[torch.dtype]:
        """bf16 on gfx906 (MI50/MI60): torch runs it there, converting through fp32."""
        import torch

        return [] if torch.bfloat16 in self.dtypes(index) else [torch.bfloat16]

    def versions(self) -> Mapping[str, str]:
        out: dict[str, str] = {"torch": self.torch_version}
        driver = read_text(self.root, DRIVER_VERSION_FILE)
        if driver:
            out["amdgpu_driver"] = driver
        if getattr(self.version, "hip", None):
            out["hip_runtime"] = str(self.version.hip)
            miopen = self.optional_module("cudnn", "torch.backends.cudnn")
            libraries = {"miopen": quiet(miopen.version, None) if miopen is not None else None,
                         "rccl": quiet(lambda: ".".join(map(str, self.module.nccl.version())), None)}
            out.update({k: str(v) for k, v in libraries.items() if v})
        return out

    def telemetry(self, index: int = 0) -> Telemetry:
        """amd-smi's figures from amdsmi, without HIP init; see hal.backends.rocm.telemetry."""
        from hal.backends.rocm.telemetry import read

        return read(self, index)

    def describe_driver(self, text: str) -> str:
        return f"amdgpu {text}"

    def findings(self) -> Sequence[Finding]:
        out: list[Finding] = []
        gpus = pci_devices(self.root, AMD_PCI_VENDOR, (DISPLAY_CLASS, ACCELERATOR_CLASS))
        has_gpu = bool(gpus) or bool(dev_nodes(self.root, "/dev/kfd"))
        version = release_text(self.torch_version) or self.torch_version.split("+")[0]
        if has_gpu and not getattr(self.version, "hip", None):
            cuda = getattr(self.version, "cuda", None)
            flavour = f"a CUDA {cuda} build" if cuda else "a CPU-only build"
            out.append(Finding(
                "rocm.non-rocm-torch-on-amd", "error",
                f"{len(gpus) or 'an'} AMD GPU(s) present but torch {self.torch_version} is "
                f"{flavour}, so torch.cuda.is_available() is False on this machine",
                f'pip install --force-reinstall "torch=={version}" '
                f"--index-url {PYTORCH_INDEX}/{ROCM_WHEEL_TAG}"))
        env = self.visible_values()
        rocr, hip, cuda_env = env.get(ROCR_ENV), env.get(HIP_ENV), env.get(CUDA_ENV)
        if hip is not None and cuda_env is not None and hip != cuda_env:
            out.append(Finding(
                "rocm.visible-devices-conflict", "warn",
                f"{HIP_ENV}={hip!r} and {CUDA_ENV}={cuda_env!r} disagree; on ROCm "
                f"{CUDA_ENV} is an alias of {HIP_ENV} and {HIP_ENV} wins",
                f"set only one of them: unset {CUDA_ENV}"))
        if rocr is not None and hip is not None and len(hip.split(",")) > len(rocr.split(",")):
            out.append(Finding(
                "rocm.visible-devices-conflict", "error",
                f"{HIP_ENV}={hip!r} lists more devices than {ROCR_ENV}={rocr!r}; {HIP_ENV} "
                f"indexes the devices {ROCR_ENV} left, and torch raises RuntimeError here",
                f"index into the {len(rocr.split(','))} device(s) {ROCR_ENV} exposes "
                f"(0..{len(rocr.split(',')) - 1}), or unset {HIP_ENV}"))
        elif rocr is not None and cuda_env is not None and hip is None:
            out.append(Finding(
                "rocm.visible-devices-conflict", "warn",
                f"{ROCR_ENV}={rocr!r} and {CUDA_ENV}={cuda_env!r} are both set: the HIP runtime "
                f"applies {CUDA_ENV} to the devices {ROCR_ENV} left, but torch's device count "
                f"ignores {CUDA_ENV} when {ROCR_ENV} is set",
                f"use {ROCR_ENV} alone (or {HIP_ENV} instead of {CUDA_ENV})"))
        if env and has_gpu:
            physical, serials, _ = self.physical_count()
            if physical is None:
                physical = len(gpus)
            if physical > 0 and self.visible_count(physical, serials) == 0:
                shown = ", ".join(f"{k}={v!r}" for k, v in env.items())
                out.append(Finding(
                    "rocm.visible-devices-hide-all", "error",
                    f"{shown} hides every AMD GPU (this machine has {physical})",
                    f"unset them, or list existing indices, e.g. export {ROCR_ENV}=0"))
        return out
