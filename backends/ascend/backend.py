"""AscendBackend: Huawei Ascend NPUs through torch_npu (device type ``npu``, collectives ``hccl``).

Since torch 2.5, ``import torch`` autoloads an installed torch_npu through the ``torch.backends``
entry-point group (TORCH_DEVICE_BACKEND_AUTOLOAD=0 turns that off), and without the CANN
runtime that import raises.  The probe therefore checks ``find_spec`` before importing, turns
every import failure into a reason naming the missing library and the fix, and asks only
``device_count()``, which torch_npu answers from libascend_hal without initialising ACL.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
import sys
import threading
import types
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hal.backends.ascend import compat, socs, stack
from hal.contract import DeviceInfo, DeviceModuleBackend, Finding, Hardware, Probe
from hal.errors import DeviceUnavailableError
from hal.hardware import ACCELERATOR_CLASS, dev_nodes, pci_devices
from hal.versions import DistVersion, release_text

if TYPE_CHECKING:
    import torch

    from hal.telemetry import Telemetry

HUAWEI_PCI_VENDOR = 0x19E5
#: Markers of out-of-memory errors under torch_npu: the caching allocator ("NPU out of memory.
#: Tried to allocate ...", NPUCachingAllocator.cpp) and ACL allocations outside it, which
#: NPU_CHECK_ERROR (torch_npu NPUException.h) reports as "... error code is 207001" with the
#: text of ACL_ERROR_RT_MEMORY_ALLOCATION, "[Error]: Failed to apply for memory.".
NPU_OOM_MARKERS = ("NPU out of memory", "error code is 207001", "Failed to apply for memory")
_LIB_RE = re.compile(r"(lib[A-Za-z0-9_+\-]+\.so(?:\.[0-9]+)*)")
_AUTOLOAD_MARKER = "Failed to load the backend extension"

Loader = Callable[[], "types.ModuleType | None"]


def default_loader() -> types.ModuleType | None:
    """torch_npu if installed (imported, as torch would autoload it), None if it is not installed.

    ``find_spec`` answers "not installed" without importing anything.
    """
    module = sys.modules.get("torch_npu")
    if module is not None:
        return module
    if importlib.util.find_spec("torch_npu") is None:
        return None
    return importlib.import_module("torch_npu")


@dataclass(frozen=True)
class _Loaded:
    """Outcome of loading torch_npu: the module, or why not (and the fix)."""

    module: types.ModuleType | None
    missing: bool = False
    error: str = ""
    fix: str = ""


def describe_import_failure(exc: BaseException, npu_version: str, set_env: str) -> tuple[str, str]:
    """A one-line reason and a fix for a failed ``import torch_npu`` (or autoloading ``import torch``)."""
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or current.__context__
    texts = [f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}" for e in chain]
    joined = " <- ".join(texts)
    autoload = any(_AUTOLOAD_MARKER in t for t in texts)
    who = f"torch_npu {npu_version}" if npu_version else "torch_npu"
    # torch_npu's own libraries (libtorch_npu.so, ...) are not CANN's.
    lib = next((m.group(1) for m in _LIB_RE.finditer(joined)
                if not m.group(1).startswith("libtorch")), None)
    if "undefined symbol" in joined:
        reason = (f"{who} does not match the installed torch ({texts[-1]}); "
                  "a torch_npu wheel works only with the torch release it was built for")
        fix = "pip install torch-npu==<your torch release> (or the torch release torch_npu pins)"
    elif lib:
        reason = (f"{who} is installed but cannot load the CANN library {lib} "
                  f"({texts[-1]}): the CANN toolkit is missing or its environment is not set up")
        fix = f"source {set_env}"
    else:
        reason = f"{who} failed to import ({joined})"
        fix = f"source {set_env}, then check `python -c 'import torch_npu'`"
    if autoload:
        reason += ("; torch >= 2.5 autoloads torch_npu (entry-point group 'torch.backends'), so "
                   "`import torch` itself fails (TORCH_DEVICE_BACKEND_AUTOLOAD=0 skips the autoload)")
    return reason, fix


class AscendBackend(DeviceModuleBackend):
    """Huawei Ascend NPUs via torch_npu's ``torch.npu`` module."""

    name = "ascend"
    device_type = "npu"
    priority = 90
    dist_backend = "hccl"
    visible_devices_env = (stack.VISIBLE_DEVICES_ENV,)
    oom_markers = NPU_OOM_MARKERS
    memory_source = ("total/free: torch.npu.mem_get_info (device-wide, other processes "
                     "included); allocated/reserved/peak: torch_npu caching allocator")
    memory_fallback_source = ("torch.npu.mem_get_info is missing in this torch_npu (early 2.1 "
                              "releases): total from get_device_properties().total_memory, "
                              "free = total - memory_reserved (this process only; other "
                              "processes not counted)")

    def __init__(self, module: Any = None, loader: Loader | None = None, root: str = "/", *,
                 environ: Mapping[str, str] | None = None,
                 versions_of: DistVersion | None = None) -> None:
        """``module`` stands in for torch.npu, ``loader`` for importing torch_npu (None: absent),
        ``root`` for /, ``environ`` for os.environ, ``versions_of`` for installed-package lookup."""
        super().__init__(module, root=root, environ=environ, versions_of=versions_of)
        self._loader = loader or default_loader
        self._loaded: _Loaded | None = None
        self._lock = threading.Lock()

    # -- loading -------------------------------------------------------------------------
    def _torch_release(self) -> str | None:
        return release_text(self.versions_of("torch"))

    def _npu_version(self, loaded: _Loaded | None = None) -> str:
        version = self.versions_of("torch-npu")
        if version:
            return version
        module = (loaded or self._load()).module
        return str(getattr(module, "__version__", "")) if module is not None else ""

    def _load(self) -> _Loaded:
        with self._lock:
            if self._loaded is None:
                self._loaded = self._do_load()
            return self._loaded

    def _do_load(self) -> _Loaded:
        try:
            module = self._loader()
        except Exception as exc:
            reason, fix = describe_import_failure(
                exc, self.versions_of("torch-npu") or "", stack.set_env_script(self.root))
            return _Loaded(None, error=reason, fix=fix)
        if module is None:
            return _Loaded(None, missing=True)
        return _Loaded(module)

    @property
    def module(self) -> Any:
        """torch.npu (or the stand-in given); DeviceUnavailableError when torch_npu cannot load."""
        if self._load().module is None:
            raise DeviceUnavailableError(f"ascend: {self.probe().reason}")
        return super().module

    def load_module(self) -> Any:
        import torch

        return getattr(torch, "npu", None) or self._load().module.npu  # type: ignore[union-attr]

    # -- the contract --------------------------------------------------------------------
    def probe(self) -> Probe:
        loaded = self._load()
        if loaded.missing:
            pin = self._torch_release()
            return Probe(False, "torch_npu is not installed (pip install "
                         f"torch-npu{'==' + pin if pin else ''}; it also needs the CANN toolkit)")
        if loaded.module is None:
            return Probe(False, f"{loaded.error} (fix: {loaded.fix})")
        version = self._npu_version(loaded)
        try:
            count = int(self.module.device_count())
        except Exception as exc:
            return Probe(False, f"torch_npu {version} cannot count NPUs: "
                         f"{type(exc).__name__}: {exc}")
        if count <= 0:
            value = self.environ.get(stack.VISIBLE_DEVICES_ENV)
            hint = (f"; {stack.VISIBLE_DEVICES_ENV}={value!r} may hide them"
                    if value is not None else "")
            return Probe(False, f"torch_npu {version} is installed but sees no Ascend NPU "
                         f"(no device, or the NPU driver is not loaded){hint}")
        return Probe(True, f"torch_npu {version} sees {count} Ascend NPU(s)", count)

    def _soc_version(self, npu: Any) -> int | None:
        utils = getattr(npu, "utils", None)
        getter = getattr(utils, "get_soc_version", None)
        if getter is None:
            return None
        try:
            return int(getter())
        except Exception:
            return None

    def _family(self, npu: Any, index: int) -> socs.SocFamily | None:
        family = socs.family_by_name(str(npu.get_device_name(index)))
        if family is None:
            version = self._soc_version(npu)
            family = socs.family_by_version(version) if version is not None else None
        return family

    def devices(self) -> Sequence[DeviceInfo]:
        npu = self.module
        infos = []
        for index in range(int(npu.device_count())):
            props = npu.get_device_properties(index)
            soc = str(npu.get_device_name(index)) or str(props.name)
            family = self._family(npu, index)
            extras: dict[str, Any] = {"soc_family": family.name if family else "unknown"}
            for attr in ("cube_core_num", "vector_core_num", "L2_cache_size"):
                value = getattr(props, attr, None)
                if value is not None:
                    extras[attr] = int(value)
            infos.append(DeviceInfo(index, soc, int(props.total_memory), soc, extras))
        return infos

    def dtypes(self, index: int = 0) -> Sequence[torch.dtype]:
        import torch

        npu = self.module
        family = self._family(npu, index)
        if family is not None:
            return [getattr(torch, n) for n in family.dtypes]
        # An SoC newer than this table: trust torch_npu's own answer (excluding emulation).
        checker = getattr(npu, "is_bf16_supported", None)
        bf16 = bool(checker()) if checker is not None else False
        return [torch.bfloat16, torch.float16, torch.float32] if bf16 else [
            torch.float16, torch.float32]

    # -- torch-free evidence and diagnosis -----------------------------------------------
    def _pci(self) -> list[Any]:
        return pci_devices(self.root, HUAWEI_PCI_VENDOR, classes=(ACCELERATOR_CLASS,))

    def _davinci(self) -> list[str]:
        return [n for n in dev_nodes(self.root, "/dev/davinci*")
                if re.fullmatch(r"/dev/davinci\d+", n)]

    def hardware_count(self) -> int:
        """NPUs seen without torch: PCI functions or /dev/davinciN nodes, whichever is more."""
        return max(len(self._pci()), len(self._davinci()))

    def telemetry(self, index: int = 0) -> Telemetry:
        """npu-smi's figures from DCMI (libdcmi.so), no ACL context; see its telemetry module."""
        from hal.backends.ascend.telemetry import read

        return read(self, index)

    def hardware(self) -> Sequence[Hardware]:
        found = []
        for dev in self._pci():
            label = socs.PCI_DEVICE_IDS.get(dev.device_id, "Huawei accelerator")
            driver = f", driver {dev.driver}" if dev.driver else ""
            found.append(Hardware("Huawei", "pci",
                                  f"{label} [19e5:{dev.device_id:04x}] at {dev.address}{driver}",
                                  f"/sys/bus/pci/devices/{dev.address}"))
        for node in self._davinci():
            found.append(Hardware("Huawei", "dev", "Ascend NPU device node", node))
        for node in dev_nodes(self.root, "/dev/davinci_manager"):
            found.append(Hardware("Huawei", "dev", "Ascend device manager node", node))
        driver = stack.driver_version(self.root)
        if driver:
            found.append(Hardware("Huawei", "driver", f"Ascend NPU driver {driver}",
                                  stack.DRIVER_VERSION_FILE))
        return found

    def versions(self) -> Mapping[str, str]:
        out: dict[str, str] = {}
        npu = self.versions_of("torch-npu")
        if npu:
            out["torch_npu"] = npu
        torch_version = self.versions_of("torch")
        if torch_version:
            out["torch"] = torch_version
        cann, cann_file = stack.cann_version(self.root, self.environ)
        if cann:
            out["cann"] = cann
            out["cann_version_file"] = cann_file
        driver = stack.driver_version(self.root)
        if driver:
            out["driver"] = driver
        return out

    def _cann_match(self, npu_version: str | None, torch_rel: str | None) -> list[Finding]:
        """A finding when the installed CANN is not the release line the torch_npu is built for."""
        want = compat.cann_for(npu_version) if npu_version else None
        cann, cann_file = stack.cann_version(self.root, self.environ)
        if not want or not cann or compat.cann_line(cann) == compat.cann_line(want):
            return []
        other = compat.torch_npu_for(torch_rel, cann) if torch_rel else []
        fix = f"install CANN {want} (then: source {stack.set_env_script(self.root)})"
        if other:
            fix += f", or keep CANN {cann}: pip install torch-npu=={other[0]}"
        return [Finding(
            "ascend.cann_mismatch", "warn",
            f"torch_npu {npu_version} is built for CANN {want}, but CANN {cann} is installed "
            f"({cann_file}); operators may fail to load or run (Ascend's version matching table)",
            fix)]

    def findings(self) -> Sequence[Finding]:
        found: list[Finding] = []
        hw = self.hardware_count()
        loaded = self._load()
        torch_version = self.versions_of("torch")
        torch_rel = release_text(torch_version)
        npu_version = self._npu_version(loaded)
        set_env = stack.set_env_script(self.root)
        if hw and loaded.missing:
            pin = f"torch-npu=={torch_rel}" if torch_rel else "torch torch-npu"
            found.append(Finding(
                "ascend.torch_npu_missing", "error",
                f"{hw} Ascend NPU(s) are present but torch_npu is not installed, "
                "so torch cannot use them",
                f"pip install {pin}  (then: source {set_env})"))
        if hw or not loaded.missing:
            problem = stack.cann_env_problem(self.environ)
            if problem:
                cann, _ = stack.cann_version(self.root, self.environ)
                where = f"CANN {cann} is installed" if cann else "no CANN toolkit was found"
                found.append(Finding(
                    "ascend.cann_env", "error" if not loaded.missing else "warn",
                    f"the CANN environment is not set up ({problem}; {where}); torch_npu "
                    "needs CANN's libraries (libascendcl.so, libhccl.so) on LD_LIBRARY_PATH",
                    f"source {set_env}" if cann else
                    f"install the CANN toolkit that matches torch_npu, then source {set_env}"))
        if loaded.error:
            found.append(Finding("ascend.import_failed", "error", loaded.error, loaded.fix))
        npu_rel = release_text(npu_version)
        if npu_rel and torch_rel and npu_rel != torch_rel:
            found.append(Finding(
                "ascend.version_mismatch", "error",
                f"torch_npu {npu_version} is built for torch {npu_rel}, "
                f"but torch {torch_version} is installed",
                f"pip install torch-npu=={torch_rel}  (or: pip install torch=={npu_rel})"))
        found.extend(self._cann_match(npu_version, torch_rel))
        value = self.environ.get(stack.VISIBLE_DEVICES_ENV)
        if hw and stack.visible_count(value, hw) == 0:
            found.append(Finding(
                "ascend.visible_devices_hide_all", "error",
                f"{stack.VISIBLE_DEVICES_ENV}={value!r} hides all {hw} Ascend NPU(s) "
                "(torch_npu reads leading ascending indices below the device count)",
                f"unset {stack.VISIBLE_DEVICES_ENV}  (or list ascending indices, e.g. "
                f"{','.join(str(i) for i in range(hw))})"))
        return found
