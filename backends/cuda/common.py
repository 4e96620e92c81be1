"""What the CUDA and ROCm backends share: both drive ``torch.cuda``, on a CUDA or a HIP build."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from hal.contract import Backend, Hardware, MemoryInfo
from hal.hardware import ACCELERATOR_CLASS, DISPLAY_CLASS, PciDevice, pci_devices

if TYPE_CHECKING:
    import torch

T = TypeVar("T")


def quiet(fn: Callable[[], T], default: T) -> T:
    """Call ``fn`` with warnings silenced; any exception gives ``default`` (probes never raise)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return fn()
    except Exception:
        return default


def dotted(version: object) -> str:
    """A version tuple such as (2, 21, 5) as "2.21.5"; other values as str()."""
    if isinstance(version, (tuple, list)):
        return ".".join(str(p) for p in version)
    return str(version)


def parse_version(text: str) -> tuple[int, ...]:
    """"550.54.15" -> (550, 54, 15); non-numeric parts end the tuple."""
    out = []
    for part in text.strip().split("."):
        if not part.isdigit():
            break
        out.append(int(part))
    return tuple(out)


def gpu_functions(root: str, vendor_id: int) -> list[PciDevice]:
    """The vendor's display and accelerator PCI functions under ``root`` (torch-free)."""
    return pci_devices(root, vendor_id, (DISPLAY_CLASS, ACCELERATOR_CLASS))


def pci_hardware(root: str, vendor: str, vendor_id: int) -> list[Hardware]:
    """One ``pci`` Hardware record per GPU function of the vendor, labelled ``vendor``."""
    return [
        Hardware(vendor, "pci", f"PCI device 0x{d.device_id:04x} (class 0x{d.class_id:06x}"
                 f", driver {d.driver or 'none'}) at {d.address}",
                 f"/sys/bus/pci/devices/{d.address}")
        for d in gpu_functions(root, vendor_id)
    ]


class TorchCudaFamily(Backend):
    """Base of the backends that drive ``torch.cuda``: injected module, version and root."""

    #: Substrings of this build's out-of-memory errors (caching allocator, runtime, BLAS).
    oom_markers: ClassVar[tuple[str, ...]] = ()

    def __init__(self, module: Any = None, version: Any = None, root: str = "/",
                 cudnn: Any = None) -> None:
        self._module = module
        self._version = version
        self.root = root
        self._cudnn = cudnn

    @property
    def cuda(self) -> Any:
        """The device module (``torch.cuda`` unless a fake was given); imports torch lazily."""
        if self._module is None:
            import torch.cuda

            self._module = torch.cuda
        return self._module

    @property
    def version(self) -> Any:
        """The ``torch.version`` module (or the fake given)."""
        if self._version is None:
            import torch.version

            self._version = torch.version
        return self._version

    @property
    def torch_version(self) -> str:
        """torch's version string, e.g. ``2.13.0+cpu``."""
        return str(getattr(self.version, "__version__", "") or "unknown")

    def cudnn_version(self) -> int | None:
        """cuDNN (MIOpen on ROCm) version as torch.backends.cudnn.version() reports it."""
        if self._cudnn is None:
            import torch.backends.cudnn

            self._cudnn = torch.backends.cudnn
        cudnn = self._cudnn
        version = quiet(lambda: cudnn.version(), None)
        return int(version) if isinstance(version, int) else None

    def nccl_version(self) -> str | None:
        """NCCL (RCCL on ROCm) version linked into torch."""
        cuda = self.cuda
        return quiet(lambda: dotted(cuda.nccl.version()), None)

    # -- per-device operations: these initialise the runtime, as torch does -----------------

    def memory(self, index: int = 0) -> MemoryInfo:
        free, total = self.cuda.mem_get_info(index)
        return MemoryInfo(
            total=int(total),
            free=int(free),
            allocated=int(self.cuda.memory_allocated(index)),
            reserved=int(self.cuda.memory_reserved(index)),
            peak=int(self.cuda.max_memory_allocated(index)),
            source="total/free: mem_get_info (device-wide, other processes included); "
                   "allocated/reserved/peak: this process's caching allocator",
        )

    def set_device(self, index: int) -> None:
        self.cuda.set_device(index)

    def synchronize(self, index: int | None = None) -> None:
        self.cuda.synchronize(index)

    def empty_cache(self) -> None:
        self.cuda.empty_cache()

    def reset_peak_memory(self, index: int | None = None) -> None:
        self.cuda.reset_peak_memory_stats(index)

    def emulated_dtypes(self, index: int = 0) -> Sequence[torch.dtype]:
        """bf16/fp16 that torch still runs here by emulation (bf16 on V100/T4: fp32 math)."""
        import torch

        native = list(self.dtypes(index))
        return [d for d in (torch.bfloat16, torch.float16) if d not in native]

    def is_oom(self, exc: BaseException) -> bool:
        text = str(exc)
        if any(m in text for m in self.oom_markers):
            # torch.cuda.OutOfMemoryError is torch.OutOfMemoryError, a RuntimeError
            return isinstance(exc, RuntimeError)
        return False
