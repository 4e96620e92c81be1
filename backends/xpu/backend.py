"""XpuBackend: Intel GPUs through native ``torch.xpu`` (torch >= 2.5), collectives ``xccl``.

intel-extension-for-pytorch (IPEX) reached end of life with 2.8 (August 2025): it is never
required; ``optimize()`` uses it only when it is installed and matches torch's major.minor.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from hal.backends.xpu import stack
from hal.contract import DeviceInfo, DeviceModuleBackend, Finding, Hardware, Probe, quiet
from hal.versions import DistVersion, release

if TYPE_CHECKING:
    import torch

    from hal.telemetry import Telemetry

#: Markers of out-of-memory errors on XPU: the caching allocator ("XPU out of memory. Tried to
#: allocate ...", c10/xpu/XPUCachingAllocator.cpp), and Level Zero allocations outside it,
#: which torch-xpu-ops kernels and the SYCL runtime report as RuntimeError "level_zero backend
#: failed with error: 39 (UR_RESULT_ERROR_OUT_OF_DEVICE_MEMORY)" (older runtimes: "Native API
#: failed. Native API returns: 39 (...)"), or with Level Zero's own ZE_RESULT_ name.
XPU_OOM_MARKERS = ("XPU out of memory", "UR_RESULT_ERROR_OUT_OF_DEVICE_MEMORY",
                   "ZE_RESULT_ERROR_OUT_OF_DEVICE_MEMORY")
#: The package torch.xpu.device_count() needs for a context-free count (Level Zero Sysman,
#: torch >= 2.8); without it torch asks SYCL, which creates a context on every GPU.
SYSMAN_PACKAGE = "pyzes"
SELECTOR_ENV = "ONEAPI_DEVICE_SELECTOR"
#: Device names whose GPUs have XMX (DPAS) engines, for torch releases whose properties lack
#: ``has_subgroup_matrix_multiply_accumulate``: Max (Xe-HPC), Flex and Arc A/B discrete (Xe-HPG,
#: Xe2).  Intel's Arc iGPUs on Meteor Lake have no XMX, hence the letter+digit requirement.
_XMX_NAME = re.compile(r"Data Center GPU Max|Data Center GPU Flex|Arc\(TM\) [AB]\d")

M = TypeVar("M")


class XpuBackend(DeviceModuleBackend):
    """Intel GPUs (Data Center Max/Flex, Arc) via torch's built-in ``torch.xpu``."""

    name = "xpu"
    device_type = "xpu"
    priority = 80
    dist_backend = "xccl"
    visible_devices_env = ("ZE_AFFINITY_MASK", SELECTOR_ENV)
    oom_markers = XPU_OOM_MARKERS
    memory_source = ("total/free: torch.xpu.mem_get_info (device-wide); "
                     "allocated/reserved/peak: torch.xpu caching allocator")
    memory_fallback_source = ("torch.xpu.mem_get_info is missing in this torch: total from "
                              "get_device_properties().total_memory, free = total - "
                              "memory_reserved (this process only)")

    def __init__(self, module: Any = None, root: str = "/", *,
                 environ: Mapping[str, str] | None = None,
                 versions_of: DistVersion | None = None) -> None:
        """``module`` stands in for torch.xpu, ``root`` for /, ``environ`` for os.environ,
        ``versions_of`` for installed-package lookup (IPEX, torch, pyzes)."""
        super().__init__(module, root=root, environ=environ, versions_of=versions_of)

    def _compiled(self, xpu: Any) -> bool:
        checker = getattr(xpu, "_is_compiled", None)
        return bool(checker()) if checker is not None else bool(xpu.is_available())

    def count_is_context_free(self) -> tuple[bool, str]:
        """Whether torch.xpu.device_count() answers without a SYCL context here, and how.

        torch >= 2.8 counts through Level Zero Sysman when the ``pyzes`` package imports;
        otherwise (and on older torch) it enumerates SYCL devices, creating a context.
        """
        xpu = self.module
        if quiet(xpu.is_initialized, False):
            return True, "torch.xpu already initialised"
        if not hasattr(xpu, "_device_count_zes"):
            return False, "this torch counts XPUs through SYCL (a context on every GPU)"
        if not self.versions_of(SYSMAN_PACKAGE):
            return False, (f"{SYSMAN_PACKAGE} is not installed, so torch counts XPUs through "
                           f"SYCL (a context on every GPU; pip install {SYSMAN_PACKAGE})")
        return True, f"Level Zero Sysman via {SYSMAN_PACKAGE}"

    # -- the contract --------------------------------------------------------------------
    def probe(self) -> Probe:
        try:
            xpu = self.module
        except Exception as exc:
            return Probe(False, f"torch cannot be imported: {type(exc).__name__}: {exc}")
        torch_version = self.versions_of("torch") or "?"
        if not self._compiled(xpu):
            return Probe(False, f"torch {torch_version} is built without XPU support "
                         f"(install it from {stack.XPU_INDEX_URL})")
        context_free, how = self.count_is_context_free()
        try:
            count = int(xpu.device_count())
        except Exception as exc:
            return Probe(False, f"torch.xpu cannot count devices: {type(exc).__name__}: {exc}")
        selector = self.environ.get(SELECTOR_ENV)
        if context_free and selector is not None:
            # Sysman honours ZE_AFFINITY_MASK only; the SYCL runtime applies the selector.
            kept = stack.selector_count(selector, count)
            count = count if kept is None else kept
        counted = f"count: {how}" + ("" if context_free else "; not context-free")
        if count <= 0:
            hidden = [f"{v}={self.environ[v]!r}" for v in self.visible_devices_env
                      if v in self.environ]
            hint = f"; {' and '.join(hidden)} may hide them" if hidden else ""
            return Probe(False, f"torch {torch_version} has XPU support but sees no Intel GPU "
                         f"(no device, or the GPU driver / Level Zero runtime is missing){hint} "
                         f"({counted})")
        return Probe(True, f"torch {torch_version} sees {count} Intel XPU device(s) ({counted})",
                      count)

    def devices(self) -> Sequence[DeviceInfo]:
        with self.device_call() as xpu:
            return self._devices(xpu)

    def _devices(self, xpu: Any) -> list[DeviceInfo]:
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

    def native_dtype_names(self, index: int = 0) -> list[str]:
        """Native compute dtypes by name, best first: bf16/fp16 on XMX, fp16 if has_fp16."""
        with self.device_call() as xpu:
            props = xpu.get_device_properties(index)
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

    # -- optional hook: hal.optimize(model) ------------------------------------------------
    def ipex_usable(self) -> tuple[bool, str]:
        """Whether IPEX may be used: installed and matching torch's major.minor, and why not."""
        ipex = self.versions_of(stack.IPEX_DIST)
        if not ipex:
            return False, "intel-extension-for-pytorch is not installed (not needed)"
        torch_version = self.versions_of("torch") or ""
        if release(ipex)[:2] != release(torch_version)[:2]:
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
        for key, dist in (("torch", "torch"), ("ipex", stack.IPEX_DIST),
                          (SYSMAN_PACKAGE, SYSMAN_PACKAGE)):
            version = self.versions_of(dist)
            if version:
                out[key] = version
        compiled = quiet(lambda: self._compiled(self.module), False)
        if compiled:
            context_free, how = quiet(self.count_is_context_free, (False, "unknown"))
            out["count_context_free"] = f"{'yes' if context_free else 'no'} ({how})"
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
        torch_version = self.versions_of("torch") or ""
        if gpus:
            try:
                compiled = self._compiled(self.module)
            except Exception:
                compiled = True  # torch itself is broken: the core reports that, not us
            if not compiled:
                discrete = [g for g in gpus if not stack.is_integrated(g)]
                found.append(Finding(
                    "xpu.torch_without_xpu", "warn" if discrete else "info",
                    f"{len(gpus)} Intel GPU(s) are present "
                    f"({len(discrete)} discrete) but torch {torch_version} has no XPU support",
                    f"pip install torch --index-url {stack.XPU_INDEX_URL}"))
        ipex = self.versions_of(stack.IPEX_DIST)
        if ipex:
            found.append(Finding(
                "xpu.ipex_installed", "warn",
                f"intel-extension-for-pytorch {ipex} is installed; it reached end of life with "
                "2.8 (August 2025) and native torch.xpu replaces it (hal never requires it)",
                f"pip uninstall {stack.IPEX_DIST}"))
            if release(ipex)[:2] != release(torch_version)[:2]:
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
        selector = self.environ.get(SELECTOR_ENV)
        if gpus and bound > 0 and stack.selector_count(selector, bound) == 0:
            found.append(Finding(
                "xpu.visible_devices_hide_all", "error",
                f"ONEAPI_DEVICE_SELECTOR={selector!r} keeps no Level Zero GPU, "
                "the only kind torch.xpu uses",
                "unset ONEAPI_DEVICE_SELECTOR  (or: export ONEAPI_DEVICE_SELECTOR=level_zero:gpu)"))
        return found
