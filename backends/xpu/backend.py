"""XpuBackend: Intel GPUs through native ``torch.xpu`` (torch >= 2.5), collectives ``xccl``.

intel-extension-for-pytorch (IPEX) reached end of life with 2.8 (August 2025): it is never
required; ``optimize()`` uses it only when it is installed and matches torch's major.minor.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import re
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from hal.backends.allocator import allocator_memory
from hal.backends.xpu import stack
from hal.contract import Backend, DeviceInfo, Finding, Hardware, MemoryInfo, Probe
from hal.errors import DeviceUnavailableError

if TYPE_CHECKING:
    import torch

    from hal.telemetry import Telemetry

#: Substring of the XPU caching allocator's OOM ("XPU out of memory. Tried to allocate ...").
XPU_OOM_MARKER = "XPU out of memory"
#: Device names whose GPUs have XMX (DPAS) engines, for torch releases whose properties lack
#: ``has_subgroup_matrix_multiply_accumulate``: Max (Xe-HPC), Flex and Arc A/B discrete (Xe-HPG,
#: Xe2).  Intel's Arc iGPUs on Meteor Lake have no XMX, hence the letter+digit requirement.
_XMX_NAME = re.compile(r"Data Center GPU Max|Data Center GPU Flex|Arc\(TM\) [AB]\d")

DistVersion = Callable[[str], "str | None"]
M = TypeVar("M")


def dist_version(name: str) -> str | None:
    """Installed version of distribution ``name`` from its metadata (no import), or None."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


class XpuBackend(Backend):
    """Intel GPUs (Data Center Max/Flex, Arc) via torch's built-in ``torch.xpu``."""

    name = "xpu"
    device_type = "xpu"
    priority = 80
    dist_backend = "xccl"
    visible_devices_env = ("ZE_AFFINITY_MASK", "ONEAPI_DEVICE_SELECTOR")

    def __init__(self, module: Any = None, root: str = "/", *,
                 environ: Mapping[str, str] | None = None,
                 versions_of: DistVersion | None = None) -> None:
        """``module`` stands in for torch.xpu, ``root`` for /, ``environ`` for os.environ,
        ``versions_of`` for installed-package lookup (IPEX, torch)."""
        self._module = module
        self.root = root
        self._environ = environ
        self._versions_of = versions_of or dist_version

    @property
    def environ(self) -> Mapping[str, str]:
        """The environment this backend reads (os.environ unless one was given)."""
        return os.environ if self._environ is None else self._environ

    def _xpu_module(self) -> Any:
        if self._module is not None:
            return self._module
        import torch

        return torch.xpu

    def _compiled(self, xpu: Any) -> bool:
        checker = getattr(xpu, "_is_compiled", None)
        return bool(checker()) if checker is not None else bool(xpu.is_available())

    def _xpu(self) -> Any:
        """torch.xpu for a per-device call; the full probe (and its reason) only on failure.

        Per-device calls sit on hot paths (synchronize in timed loops, memory per batch), and
        the probe's package-metadata lookup alone costs about 0.5 ms.
        """
        try:
            xpu = self._xpu_module()
            if self._compiled(xpu) and int(xpu.device_count()) > 0:
                return xpu
        except Exception:
            pass
        raise DeviceUnavailableError(f"xpu: {self.probe().reason}")

    # -- the contract --------------------------------------------------------------------
    def probe(self) -> Probe:
        try:
            xpu = self._xpu_module()
        except Exception as exc:
            return Probe(False, f"torch cannot be imported: {type(exc).__name__}: {exc}")
        torch_version = self._versions_of("torch") or "?"
        if not self._compiled(xpu):
            return Probe(False, f"torch {torch_version} is built without XPU support "
                         f"(install it from {stack.XPU_INDEX_URL})")
        try:
            # Level Zero Sysman count in torch >= 2.8: no SYCL context, fork-safe.
            count = int(xpu.device_count())
        except Exception as exc:
            return Probe(False, f"torch.xpu cannot count devices: {type(exc).__name__}: {exc}")
        if count <= 0:
            hidden = [f"{v}={self.environ[v]!r}" for v in self.visible_devices_env
                      if v in self.environ]
            hint = f"; {' and '.join(hidden)} may hide them" if hidden else ""
            return Probe(False, f"torch {torch_version} has XPU support but sees no Intel GPU "
                         f"(no device, or the GPU driver / Level Zero runtime is missing){hint}")
        return Probe(True, f"torch {torch_version} sees {count} Intel XPU device(s)", count)

    def devices(self) -> Sequence[DeviceInfo]:
        xpu = self._xpu()
        infos = []
        for index in range(int(xpu.device_count())):
            props = xpu.get_device_properties(index)
            extras: dict[str, Any] = {}
            for attr in ("device_id", "driver_version", "max_compute_units", "gpu_eu_count",
                         "gpu_subslice_count", "has_fp16", "has_fp64",
                         "has_subgroup_matrix_multiply_accumulate", "is_integrated_gpu",
                         "platform_name"):
                value = getattr(props, attr, None)
                if value is not None:
                    extras[attr] = value
            # torch.xpu reports the architecture as an enum value; 0 means unknown.
            arch = getattr(props, "architecture", None)
            infos.append(DeviceInfo(index, str(props.name), int(props.total_memory),
                                    str(arch) if arch else None, extras))
        return infos

    def memory(self, index: int = 0) -> MemoryInfo:
        return allocator_memory(
            self._xpu(), index,
            source=("total/free: torch.xpu.mem_get_info (device-wide); "
                    "allocated/reserved/peak: torch.xpu caching allocator"),
            fallback_source=("torch.xpu.mem_get_info is missing in this torch: total from "
                             "get_device_properties().total_memory, free = total - "
                             "memory_reserved (this process only)"))

    def native_dtype_names(self, index: int = 0) -> list[str]:
        """Native compute dtypes by name, best first: bf16/fp16 on XMX, fp16 if has_fp16."""
        props = self._xpu().get_device_properties(index)
        xmx = getattr(props, "has_subgroup_matrix_multiply_accumulate", None)
        if xmx is None:
            xmx = bool(_XMX_NAME.search(str(props.name)))
        names = ["bfloat16"] if xmx else []
        if xmx or getattr(props, "has_fp16", False):
            names.append("float16")
        return [*names, "float32"]

    def dtypes(self, index: int = 0) -> Sequence[torch.dtype]:
        import torch

        return [getattr(torch, n) for n in self.native_dtype_names(index)]

    def set_device(self, index: int) -> None:
        self._xpu().set_device(index)

    def synchronize(self, index: int | None = None) -> None:
        self._xpu().synchronize(index)

    def empty_cache(self) -> None:
        self._xpu().empty_cache()

    def reset_peak_memory(self, index: int | None = None) -> None:
        self._xpu().reset_peak_memory_stats(index)

    def is_oom(self, exc: BaseException) -> bool:
        # torch.OutOfMemoryError (native torch.xpu) subclasses RuntimeError (IPEX raised that).
        return isinstance(exc, RuntimeError) and XPU_OOM_MARKER in str(exc)

    # -- optional hook: hal.optimize(model) ------------------------------------------------
    def ipex_usable(self) -> tuple[bool, str]:
        """Whether IPEX may be used: installed and matching torch's major.minor, and why not."""
        ipex = self._versions_of(stack.IPEX_DIST)
        if not ipex:
            return False, "intel-extension-for-pytorch is not installed (not needed)"
        torch_version = self._versions_of("torch") or ""
        if stack.major_minor(ipex) != stack.major_minor(torch_version):
            return False, (f"intel-extension-for-pytorch {ipex} does not match torch "
                           f"{torch_version}")
        return True, f"intel-extension-for-pytorch {ipex} matches torch {torch_version}"

    def optimize(self, model: M) -> M:
        """``ipex.optimize(model)`` for eval-mode models when IPEX is usable; else ``model``."""
        usable, _ = self.ipex_usable()
        if not usable or getattr(model, "training", False):
            return model
        ipex = importlib.import_module("intel_extension_for_pytorch")
        optimized: M = ipex.optimize(model)
        return optimized

    # -- torch-free evidence and diagnosis -----------------------------------------------
    def telemetry(self, index: int = 0) -> Telemetry:
        """xpu-smi's figures from hwmon, sysfs and DRM fdinfo, no SYCL context; see its module."""
        from hal.backends.xpu.telemetry import read

        return read(self, index)

    def hardware(self) -> Sequence[Hardware]:
        found = []
        for dev in stack.intel_gpus(self.root):
            kind = "integrated" if stack.is_integrated(dev) else "discrete"
            driver = f", driver {dev.driver}" if dev.driver else ""
            found.append(Hardware(
                "Intel", "pci",
                f"Intel {kind} GPU [8086:{dev.device_id:04x}] class "
                f"0x{dev.class_id:06x} at {dev.address}{driver}",
                f"/sys/bus/pci/devices/{dev.address}"))
        for node, driver in stack.render_nodes(self.root):
            found.append(Hardware("Intel", "dev", f"render node bound to {driver}", node))
        return found

    def versions(self) -> Mapping[str, str]:
        out: dict[str, str] = {}
        for key, dist in (("torch", "torch"), ("ipex", stack.IPEX_DIST)):
            version = self._versions_of(dist)
            if version:
                out[key] = version
        if self._module is None:
            try:
                import torch

                if torch.version.xpu:
                    out["sycl"] = str(torch.version.xpu)
            except Exception:
                pass
        return out

    def findings(self) -> Sequence[Finding]:
        found: list[Finding] = []
        gpus = stack.intel_gpus(self.root)
        torch_version = self._versions_of("torch") or ""
        if gpus:
            try:
                compiled = self._compiled(self._xpu_module())
            except Exception:
                compiled = True  # torch itself is broken: the core reports that, not us
            if not compiled:
                discrete = [g for g in gpus if not stack.is_integrated(g)]
                found.append(Finding(
                    "xpu.torch_without_xpu", "warn" if discrete else "info",
                    f"{len(gpus)} Intel GPU(s) are present "
                    f"({len(discrete)} discrete) but torch {torch_version} has no XPU support",
                    f"pip install torch --index-url {stack.XPU_INDEX_URL}"))
        ipex = self._versions_of(stack.IPEX_DIST)
        if ipex:
            found.append(Finding(
                "xpu.ipex_installed", "warn",
                f"intel-extension-for-pytorch {ipex} is installed; it reached end of life with "
                "2.8 (August 2025) and native torch.xpu replaces it (hal never requires it)",
                f"pip uninstall {stack.IPEX_DIST}"))
            if stack.major_minor(ipex) != stack.major_minor(torch_version):
                found.append(Finding(
                    "xpu.ipex_mismatch", "error",
                    f"intel-extension-for-pytorch {ipex} does not match torch {torch_version} "
                    "(IPEX X.Y works only with torch X.Y); importing it can fail or crash",
                    f"pip uninstall {stack.IPEX_DIST}"))
        bound = stack.device_upper_bound(gpus, self.environ)
        mask = self.environ.get("ZE_AFFINITY_MASK")
        if gpus and stack.affinity_hides_all(mask, bound):
            found.append(Finding(
                "xpu.visible_devices_hide_all", "error",
                f"ZE_AFFINITY_MASK={mask!r} lists no device below {bound}, "
                f"hiding all {len(gpus)} Intel GPU(s)",
                "unset ZE_AFFINITY_MASK  (or list existing indices, e.g. 0)"))
        selector = self.environ.get("ONEAPI_DEVICE_SELECTOR")
        if gpus and stack.selector_hides_all(selector, bound):
            found.append(Finding(
                "xpu.visible_devices_hide_all", "error",
                f"ONEAPI_DEVICE_SELECTOR={selector!r} keeps no Level Zero GPU, "
                "the only kind torch.xpu uses",
                "unset ONEAPI_DEVICE_SELECTOR  (or: export ONEAPI_DEVICE_SELECTOR=level_zero:gpu)"))
        return found
