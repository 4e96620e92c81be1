"""Real out-of-memory errors of every vendor's allocator, and near misses that are not OOM.

Each case is the exception class and message an allocator really raises, taken from the
sources named in ``source`` (pytorch c10/cuda/CUDACachingAllocator.cpp, its hipified ROCm
build, ATen/cuda/Exceptions.h for cuBLAS and cuDNN, c10/xpu/XPUCachingAllocator.cpp and the
Level Zero texts of intel/torch-xpu-ops issues, torch_npu NPUCachingAllocator.cpp and
NPUException.h, aten/src/ATen/mps/MPSAllocator.mm, c10/core/impl/alloc_cpu.cpp); sizes are
filled in with plausible figures.  The CPU allocator's text was also provoked on this machine.
Out-of-memory errors raised outside the caching allocators (library handles and workspaces,
runtime allocations) count too: the batcher must split on them as well.

The contract for a backend's ``is_oom`` checked against this corpus (see ``check_backend``):

* every case of its own vendor with ``oom=True`` is recognised;
* every near miss (``oom=False``) is rejected, whatever vendor's it is;
* another vendor's real OOM may be claimed or not (it is an OOM either way; only one
  vendor's runtime is loaded in a real process); ``torch.OutOfMemoryError`` is vendor-free.

Decisions behind the near misses:

* Only ``RuntimeError`` (and its subclasses ``torch.OutOfMemoryError``,
  ``torch.AcceleratorError``) and Python's ``MemoryError`` are allocator failures.  A
  ``ValueError`` or ``AssertionError`` whose text says "out of memory" is user code talking,
  not an allocator: retrying it with a smaller batch would hide a bug.
* A collective library that ran out of memory inside its communicator raises a
  ``DistBackendError``: the communicator is broken, a smaller batch does not repair it.
* Illegal memory access, device-side asserts and kernel-image errors mention memory or
  devices but are bugs or corrupted contexts; retrying them is wrong.
* An ``OSError(ENOMEM)`` (fork, mmap of a file) is the OS refusing a process resource,
  not the tensor allocator.
* Only the exception itself is judged, not its ``__cause__``/``__context__``: an error
  raised while handling an OOM is a different error.
"""

from __future__ import annotations

import errno
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

#: Exception classes a case can name; torch classes are resolved lazily.
EXC_TYPES = (
    "OutOfMemoryError",  # torch.OutOfMemoryError (c10::OutOfMemoryError), vendor-free
    "AcceleratorError",  # torch.AcceleratorError (c10::AcceleratorError, torch >= 2.8)
    "DistBackendError",  # torch.distributed.DistBackendError
    "RuntimeError",
    "MemoryError",
    "ValueError",
    "AssertionError",
    "OSError",
)

_CUDA_TAIL = (
    "\nCUDA kernel errors might be asynchronously reported at some other API call, so the "
    "stacktrace below might be incorrect.\nFor debugging consider passing "
    "CUDA_LAUNCH_BLOCKING=1\nCompile with `TORCH_USE_CUDA_DSA` to enable device-side "
    "assertions.\n"
)
_HIP_TAIL = (
    "\nHIP kernel errors might be asynchronously reported at some other API call, so the "
    "stacktrace below might be incorrect.\nFor debugging consider passing "
    "AMD_SERIALIZE_KERNEL=3\nCompile with `TORCH_USE_HIP_DSA` to enable device-side "
    "assertions.\n"
)


@dataclass(frozen=True)
class OomCase:
    """One real error: the backend (vendor) whose runtime raises it, its class, text, verdict."""

    id: str
    vendor: str
    exc_type: str
    message: str
    oom: bool
    source: str
    note: str = ""

    def make(self) -> BaseException:
        """Build the exception exactly as the runtime raises it (torch imported here)."""
        if self.exc_type == "OSError":
            return OSError(errno.ENOMEM, self.message)
        factory: Callable[[str], BaseException] = _resolve(self.exc_type)
        return factory(self.message)


def _resolve(name: str) -> Callable[[str], BaseException]:
    import torch

    builtin: dict[str, Any] = {
        "RuntimeError": RuntimeError,
        "MemoryError": MemoryError,
        "ValueError": ValueError,
        "AssertionError": AssertionError,
    }
    if name in builtin:
        return builtin[name]  # type: ignore[no-any-return]
    if name == "OutOfMemoryError":
        return torch.OutOfMemoryError
    if name == "AcceleratorError":
        return getattr(torch, "AcceleratorError", RuntimeError)  # type: ignore[no-any-return]
    if name == "DistBackendError":
        import torch.distributed as dist

        return dist.DistBackendError
    raise ValueError(f"unknown exception type {name!r}; expected one of {', '.join(EXC_TYPES)}")


CCA = "pytorch c10/cuda/CUDACachingAllocator.cpp (malloc, TORCH_CHECK_WITH(OutOfMemoryError))"

CASES: tuple[OomCase, ...] = (
    # ---- CUDA ---------------------------------------------------------------------------
    OomCase(
        "cuda-caching-allocator",
        "cuda",
        "OutOfMemoryError",
        "CUDA out of memory. Tried to allocate 20.00 GiB. GPU 0 has a total capacity of "
        "79.15 GiB of which 3.94 GiB is free. Including non-PyTorch memory, this process has "
        "75.20 GiB memory in use. Of the allocated memory 72.34 GiB is allocated by PyTorch, "
        "and 2.35 GiB is reserved by PyTorch but unallocated. If reserved but unallocated "
        "memory is large try setting PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True to avoid "
        "fragmentation.  See documentation for Memory Management  "
        "(https://pytorch.org/docs/stable/notes/cuda.html#environment-variables)",
        True,
        CCA,
    ),
    OomCase(
        "cuda-caching-allocator-torch1",
        "cuda",
        "RuntimeError",
        "CUDA out of memory. Tried to allocate 36.00 MiB (GPU 0; 7.93 GiB total capacity; "
        "130.35 MiB already allocated; 47.06 MiB free; 188.00 MiB reserved in total by "
        "PyTorch) If reserved memory is >> allocated memory try setting max_split_size_mb to "
        "avoid fragmentation.  See documentation for Memory Management and "
        "PYTORCH_CUDA_ALLOC_CONF",
        True,
        "pytorch < 1.13 CUDACachingAllocator.cpp: the same check raised a plain RuntimeError",
    ),
    OomCase(
        "cuda-runtime-out-of-memory",
        "cuda",
        "AcceleratorError",
        "CUDA error: out of memory" + _CUDA_TAIL,
        True,
        "c10/cuda/CUDAException.h C10_CUDA_CHECK on cudaErrorMemoryAllocation (a cudaMalloc "
        "outside the caching allocator: context, workspace)",
        "cudaErrorMemoryAllocation is not sticky: freeing memory and retrying smaller works",
    ),
    OomCase(
        "cublas-alloc-failed",
        "cuda",
        "RuntimeError",
        "CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`",
        True,
        "aten/src/ATen/cuda/CublasHandlePool.cpp TORCH_CUDABLAS_CHECK",
        "cuBLAS could not allocate its handle or workspace: the device is full",
    ),
    OomCase(
        "cublas-create-not-initialized",
        "cuda",
        "RuntimeError",
        "CUDA error: CUBLAS_STATUS_NOT_INITIALIZED when calling `cublasCreate(handle)`",
        True,
        "aten/src/ATen/cuda/Exceptions.h TORCH_CUDABLAS_CHECK around cublasCreate "
        "(ATen/cuda/CublasHandlePool.cpp)",
        "cublasCreate reports NOT_INITIALIZED when it cannot allocate its resources on a full "
        "device: the usual face of an OOM at the first matmul",
    ),
    OomCase(
        "cublas-invalid-value",
        "cuda",
        "RuntimeError",
        "CUDA error: CUBLAS_STATUS_INVALID_VALUE when calling `cublasSgemm( handle, opa, opb, "
        "m, n, k, &alpha, a, lda, b, ldb, &beta, c, ldc)`",
        False,
        "aten/src/ATen/cuda/Exceptions.h TORCH_CUDABLAS_CHECK (ATen/cuda/CUDABlas.cpp gemm)",
        "a shape or argument bug reported by the same macro",
    ),
    OomCase(
        "cudnn-alloc-failed",
        "cuda",
        "RuntimeError",
        "cuDNN error: CUDNN_STATUS_ALLOC_FAILED",
        True,
        "aten/src/ATen/cuda/Exceptions.h AT_CUDNN_CHECK (c10::CuDNNError, a RuntimeError)",
        "cuDNN's own allocation; its workspace comes from the caching allocator, whose OOM is "
        "torch.OutOfMemoryError",
    ),
    OomCase(
        "cudnn9-device-allocation-failed",
        "cuda",
        "RuntimeError",
        "cuDNN error: CUDNN_STATUS_INTERNAL_ERROR_DEVICE_ALLOCATION_FAILED",
        True,
        "AT_CUDNN_CHECK with cuDNN 9, whose cudnnStatus_t names device-side allocation "
        "failures CUDNN_STATUS_INTERNAL_ERROR_DEVICE_ALLOCATION_FAILED (4004)",
    ),
    OomCase(
        "cudnn-not-supported",
        "cuda",
        "RuntimeError",
        "cuDNN error: CUDNN_STATUS_NOT_SUPPORTED. This error may appear if you passed in a "
        "non-contiguous input.",
        False,
        "aten/src/ATen/cuda/Exceptions.h AT_CUDNN_CHECK",
    ),
    OomCase(
        "cuda-illegal-memory-access",
        "cuda",
        "AcceleratorError",
        "CUDA error: an illegal memory access was encountered" + _CUDA_TAIL,
        False,
        "c10/cuda/CUDAException.h on cudaErrorIllegalAddress",
        "a kernel bug that corrupts the context: sticky, never retry",
    ),
    OomCase(
        "cuda-device-side-assert",
        "cuda",
        "RuntimeError",
        "CUDA error: device-side assert triggered" + _CUDA_TAIL,
        False,
        "c10/cuda/CUDAException.h on cudaErrorAssert",
    ),
    OomCase(
        "cuda-invalid-ordinal",
        "cuda",
        "RuntimeError",
        "CUDA error: invalid device ordinal" + _CUDA_TAIL,
        False,
        "c10/cuda/CUDAException.h on cudaErrorInvalidDevice",
    ),
    OomCase(
        "nccl-cuda-failure-oom",
        "cuda",
        "DistBackendError",
        "NCCL error in: ../torch/csrc/distributed/c10d/ProcessGroupNCCL.cpp:1269, unhandled "
        "cuda error (run with NCCL_DEBUG=INFO for details), NCCL version 2.14.3\n"
        "ncclUnhandledCudaError: Call to CUDA function failed.\nLast error:\n"
        "Cuda failure 'out of memory'",
        False,
        "torch/csrc/distributed/c10d/NCCLUtils.hpp C10D_NCCL_CHECK",
        "the communicator is broken; a smaller batch does not repair it",
    ),
    OomCase(
        "cuda-device-mismatch",
        "cuda",
        "RuntimeError",
        "Expected all tensors to be on the same device, but found at least two devices, "
        "cuda:0 and cpu!",
        False,
        "aten TensorIterator device check",
    ),
    # ---- ROCm (the same allocator, hipified) -----------------------------------------------
    OomCase(
        "hip-caching-allocator",
        "rocm",
        "OutOfMemoryError",
        "HIP out of memory. Tried to allocate 978.00 MiB. GPU 0 has a total capacity of "
        "15.98 GiB of which 630.00 MiB is free. Of the allocated memory 14.20 GiB is "
        "allocated by PyTorch, and 96.00 MiB is reserved by PyTorch but unallocated. If "
        "reserved but unallocated memory is large try setting "
        "PYTORCH_HIP_ALLOC_CONF=expandable_segments:True to avoid fragmentation.  See "
        "documentation for Memory Management  "
        "(https://pytorch.org/docs/stable/notes/cuda.html#environment-variables)",
        True,
        CCA + " as built for ROCm (hipify renames CUDA to HIP in the text)",
    ),
    OomCase(
        "hip-caching-allocator-cuda-spelling",
        "rocm",
        "OutOfMemoryError",
        "HIP out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of "
        "15.98 GiB of which 512.00 MiB is free. Of the allocated memory 14.20 GiB is "
        "allocated by PyTorch, and 96.00 MiB is reserved by PyTorch but unallocated. If "
        "reserved but unallocated memory is large try setting "
        "PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True to avoid fragmentation.",
        True,
        "libc10_hip.so of torch 2.12 ROCm wheels (the variable keeps its CUDA spelling)",
    ),
    OomCase(
        "hip-runtime-out-of-memory",
        "rocm",
        "RuntimeError",
        "HIP error: out of memory" + _HIP_TAIL,
        True,
        "c10/hip/HIPException.h C10_HIP_CHECK on hipErrorOutOfMemory",
    ),
    OomCase(
        "hip-invalid-device-function",
        "rocm",
        "RuntimeError",
        "HIP error: invalid device function" + _HIP_TAIL,
        False,
        "c10/hip/HIPException.h: a kernel not built for this gfx arch",
    ),
    OomCase(
        "hip-illegal-memory-access",
        "rocm",
        "RuntimeError",
        "HIP error: an illegal memory access was encountered" + _HIP_TAIL,
        False,
        "c10/hip/HIPException.h on hipErrorIllegalAddress",
    ),
    # ---- XPU ------------------------------------------------------------------------------
    OomCase(
        "xpu-caching-allocator",
        "xpu",
        "OutOfMemoryError",
        "XPU out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of "
        "15.11 GiB of which 1.20 GiB is free. Of the allocated memory 12.00 GiB is allocated "
        "by PyTorch, and 1.50 GiB is reserved by PyTorch but unallocated. Please use "
        "`empty_cache` to release all unoccupied cached memory.",
        True,
        "pytorch c10/xpu/XPUCachingAllocator.cpp TORCH_CHECK_WITH(OutOfMemoryError)",
    ),
    OomCase(
        "xpu-ipex-allocator",
        "xpu",
        "RuntimeError",
        "XPU out of memory. Tried to allocate 2.00 GiB (GPU 0; 15.11 GiB total capacity; "
        "12.00 GiB already allocated; 12.50 GiB reserved in total by PyTorch)",
        True,
        "intel-extension-for-pytorch CachingDeviceAllocator.cpp TORCH_CHECK (RuntimeError)",
    ),
    OomCase(
        "xpu-level-zero-out-of-device-memory",
        "xpu",
        "RuntimeError",
        "level_zero backend failed with error: 39 (UR_RESULT_ERROR_OUT_OF_DEVICE_MEMORY)",
        True,
        "intel/torch-xpu-ops#5432 (copy_ on a full device) and pytorch/pytorch#177714: the SYCL "
        "runtime's Unified Runtime error, outside the caching allocator",
    ),
    OomCase(
        "xpu-native-api-out-of-device-memory",
        "xpu",
        "RuntimeError",
        "Native API failed. Native API returns: 39 (UR_RESULT_ERROR_OUT_OF_DEVICE_MEMORY)",
        True,
        "intel/torch-xpu-ops#1598, intel/intel-extension-for-pytorch#854 (older SYCL runtimes' "
        "wording of the same error)",
    ),
    OomCase(
        "xpu-level-zero-device-lost",
        "xpu",
        "RuntimeError",
        "level_zero backend failed with error: 20 (UR_RESULT_ERROR_DEVICE_LOST)",
        False,
        "pytorch/pytorch#190972",
        "the device is gone (sticky): retrying smaller cannot work",
    ),
    OomCase(
        "xpu-oneccl-out-of-device-memory",
        "xpu",
        "DistBackendError",
        "oneCCL: ze_call.cpp:28 do_call: EXCEPTION: ze error at "
        "zeCommandQueueExecuteCommandLists, code: ZE_RESULT_ERROR_OUT_OF_DEVICE_MEMORY",
        False,
        "intel/intel-extension-for-pytorch#640 (reduce_scatter_tensor over oneCCL)",
        "Level Zero's own OOM name, but inside a collective: the communicator is broken",
    ),
    OomCase(
        "xpu-wrong-device",
        "xpu",
        "RuntimeError",
        "Expected all tensors to be on the same device, but found at least two devices, "
        "xpu:0 and cpu!",
        False,
        "aten TensorIterator device check",
    ),
    # ---- Ascend NPU (torch_npu) ------------------------------------------------------------
    OomCase(
        "npu-caching-allocator",
        "ascend",
        "OutOfMemoryError",
        "NPU out of memory. Tried to allocate 2.00 GiB (NPU 0; 60.97 GiB total capacity; "
        "58.96 GiB already allocated; 58.96 GiB current active; 1.20 GiB free; 59.02 GiB "
        "reserved in total by PyTorch).If reserved memory is >> allocated memory try setting "
        "max_split_size_mb to avoid fragmentation.",
        True,
        "torch_npu csrc/core/npu/NPUCachingAllocator.cpp TORCH_CHECK_WITH(OutOfMemoryError)",
    ),
    OomCase(
        "npu-caching-allocator-legacy",
        "ascend",
        "RuntimeError",
        "NPU out of memory. Tried to allocate 1.27 GiB (NPU 0; 30.00 GiB total capacity; "
        "27.81 GiB already allocated; 27.81 GiB current active; 1.03 GiB free; 28.00 GiB "
        "reserved in total by PyTorch)",
        True,
        "torch_npu 1.11-2.1 NPUCachingAllocator.cpp AT_ERROR (RuntimeError)",
    ),
    OomCase(
        "npu-acl-memory-allocation",
        "ascend",
        "RuntimeError",
        "NPU function error: call aclnnMoeDistributeDispatchV2 failed, error code is 207001\n"
        "[ERROR] 2025-09-28-07:22:30 (PID:316198, Device:7, RankID:-1) ERR00100 PTA call acl api "
        "failed\n[Error]: Failed to apply for memory.\n        Check the remaining storage space "
        "in the hardware environment.\nEL0004: [PID: 316198] 2025-09-28-07:22:29.827.496 Failed "
        "to allocate memory.\n        Possible Cause: Available memory is insufficient.",
        True,
        "vllm-project/vllm-ascend#3141; format: torch_npu csrc/core/npu/NPUException.h "
        "NPU_CHECK_ERROR (207001 is ACL_ERROR_RT_MEMORY_ALLOCATION)",
        "an ACL allocation outside the caching allocator",
    ),
    OomCase(
        "npu-acl-memory-allocation-legacy",
        "ascend",
        "RuntimeError",
        "malloc:torch_npu/csrc/core/npu/NPUCachingAllocator.cpp:1123 NPU error, error code is "
        "207001\n[Error]: Failed to apply for memory.\n        Check the remaining storage "
        "space in the hardware environment.",
        True,
        "torch_npu NPUException.h NPU_CHECK_ERROR in releases before 'NPU function error' "
        "(\" NPU error, error code is \", code, \"\\n[Error]: \", error_code_map text)",
    ),
    OomCase(
        "npu-stream-sync-failure",
        "ascend",
        "RuntimeError",
        "copy_d2d:torch_npu/csrc/aten/common/CopyKernel.cpp:274 NPU function error: "
        "c10_npu::acl::AclrtSynchronizeStreamWithTimeout(copy_stream), error code is 507001",
        False,
        "vllm-project/vllm-ascend#116",
        "a runtime failure with the same macro, not an allocation",
    ),
    OomCase(
        "npu-op-failure",
        "ascend",
        "RuntimeError",
        "The Inner error is reported as above. The process exits for this inner error, and "
        "the current working operator name is MatMul.",
        False,
        "torch_npu OpCommand / aclnn failure report",
    ),
    # ---- MPS ------------------------------------------------------------------------------
    OomCase(
        "mps-allocator",
        "mps",
        "RuntimeError",
        "MPS backend out of memory (MPS allocated: 18.04 GB, other allocations: 2.43 MB, max "
        "allowed: 18.13 GB). Tried to allocate 256.00 KB on private pool. Use "
        "PYTORCH_MPS_HIGH_WATERMARK_RATIO=0.0 to disable upper limit for memory allocations "
        "(may cause system failure).",
        True,
        "pytorch aten/src/ATen/mps/MPSAllocator.mm malloc, TORCH_CHECK(false) (RuntimeError)",
        "no mps backend ships with hal: hal.is_oom says False until one is installed",
    ),
    # ---- CPU ------------------------------------------------------------------------------
    OomCase(
        "cpu-posix-memalign",
        "cpu",
        "RuntimeError",
        "[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate "
        "memory: you tried to allocate 4294967296 bytes. Error code 12 (Cannot allocate "
        "memory)",
        True,
        "c10/core/impl/alloc_cpu.cpp CAFFE_ENFORCE (provoked here under RLIMIT_AS, torch 2.13)",
    ),
    OomCase(
        "cpu-windows",
        "cpu",
        "RuntimeError",
        "[enforce fail at alloc_cpu.cpp:114] data. DefaultCPUAllocator: not enough memory: "
        "you tried to allocate 4294967296 bytes.",
        True,
        "c10/core/impl/alloc_cpu.cpp CAFFE_ENFORCE (_aligned_malloc branch)",
    ),
    OomCase(
        "python-memory-error",
        "cpu",
        "MemoryError",
        "",
        True,
        "CPython's allocator (bytearray, numpy) under the same limit",
    ),
    OomCase(
        "cpu-negative-size",
        "cpu",
        "RuntimeError",
        "Trying to create tensor with negative dimension -1: [-1]",
        False,
        "aten/src/ATen/EmptyTensor.cpp check_size_nonnegative",
    ),
    OomCase(
        "cpu-onednn-primitive",
        "cpu",
        "RuntimeError",
        "could not create a primitive",
        False,
        "oneDNN (ideep) primitive creation; seen here from F.gelu under RLIMIT_AS",
        "ambiguous: the same text means an unsupported configuration, so it is not claimed",
    ),
    OomCase(
        "cpu-shape-mismatch",
        "cpu",
        "RuntimeError",
        "mat1 and mat2 shapes cannot be multiplied (4x3 and 4x5)",
        False,
        "aten LinearAlgebra.cpp",
    ),
    OomCase(
        "dataloader-oom-killed",
        "cpu",
        "RuntimeError",
        "DataLoader worker (pid 4242) is killed by signal: Killed. ",
        False,
        "torch/utils/data/_utils/signal_handling.py",
        "the kernel's OOM killer took a worker: not an allocation this process can retry",
    ),
    OomCase(
        "user-valueerror-out-of-memory",
        "cpu",
        "ValueError",
        "CUDA out of memory. Tried to allocate 2.00 GiB",
        False,
        "user code",
        "the right words in the wrong class: not an allocator",
    ),
    OomCase(
        "user-assertion-out-of-memory",
        "cpu",
        "AssertionError",
        "DefaultCPUAllocator: can't allocate memory",
        False,
        "user code",
    ),
    OomCase(
        "os-enomem",
        "cpu",
        "OSError",
        "Cannot allocate memory",
        False,
        "os.fork / mmap of a file",
        "the OS refusing a process resource, not the tensor allocator",
    ),
)

VENDORS: tuple[str, ...] = tuple(dict.fromkeys(c.vendor for c in CASES))


def cases(vendor: str | None = None, *, oom: bool | None = None) -> list[OomCase]:
    """The cases of one vendor (all vendors when None), optionally only OOM or only near misses."""
    if vendor is not None and vendor not in VENDORS:
        raise ValueError(f"unknown vendor {vendor!r}; expected one of {', '.join(VENDORS)}")
    return [c for c in CASES if (vendor is None or c.vendor == vendor)
            and (oom is None or c.oom == oom)]


def is_vendor_free(exc: BaseException) -> bool:
    """True for torch.OutOfMemoryError, which any backend (and hal itself) may claim."""
    import torch

    return isinstance(exc, torch.OutOfMemoryError)


def check_backend(is_oom: Callable[[BaseException], bool], vendor: str) -> list[str]:
    """Check a backend's ``is_oom`` against the corpus; returns the failures (empty: conforms)."""
    problems = []
    for case in CASES:
        exc = case.make()
        got = bool(is_oom(exc))
        if case.oom and case.vendor == vendor and not got:
            problems.append(f"{case.id}: an OOM of {vendor} was not recognised")
        elif not case.oom and got:
            problems.append(f"{case.id}: a near miss ({case.exc_type}) was taken for an OOM")
    return problems


def ids(selection: Sequence[OomCase]) -> list[str]:
    """Case ids, for pytest parametrize."""
    return [c.id for c in selection]
