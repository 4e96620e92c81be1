"""``hal doctor --smoke``: allocate, a matmul in each native dtype and a one-process collective.

Runs on the selected device in the doctor's child process; each step is timed and a failure is
recorded as a failed step (the parent turns it into a finding) instead of stopping the others.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from hal.contract import Backend
from hal.errors import describe_exception

#: Matrix size of the matmul step: big enough to reach the device kernels, quick everywhere.
MATMUL_N = 256
#: Bytes allocated by the allocation step.
ALLOC_BYTES = 64 * 1024 * 1024


def _step(name: str, fn: Callable[[], str]) -> dict[str, Any]:
    start = time.perf_counter()
    try:
        detail = fn()
    except Exception as exc:
        return {"name": name, "ok": False, "seconds": time.perf_counter() - start,
                "detail": "", "error": describe_exception(exc)}
    return {"name": name, "ok": True, "seconds": time.perf_counter() - start,
            "detail": detail, "error": None}


def smoke_test(backend: Backend, device_string: str) -> dict[str, Any]:
    """Run the smoke steps on ``device_string`` of ``backend``; a dict of timed steps."""
    import torch

    device = torch.device(device_string)
    index = device.index

    def allocate() -> str:
        t = torch.empty(ALLOC_BYTES, dtype=torch.uint8, device=device)
        t.fill_(1)
        backend.synchronize(index)
        del t
        return f"{ALLOC_BYTES} bytes"

    def matmul(dtype: torch.dtype) -> Callable[[], str]:
        def run() -> str:
            gen = torch.Generator().manual_seed(0)
            a_host = torch.randn(MATMUL_N, MATMUL_N, generator=gen)
            a = a_host.to(device=device, dtype=dtype)
            out = a @ a
            backend.synchronize(index)
            ref = a_host.to(dtype).float() @ a_host.to(dtype).float()
            err = (out.float().cpu() - ref).abs().max().item() / max(ref.abs().max().item(), 1e-6)
            if not err < 0.05:
                raise RuntimeError(f"result differs from the host reference by {err:.3g}")
            return f"{MATMUL_N}x{MATMUL_N}, relative error {err:.2g}"
        return run

    def collective() -> str:
        import torch.distributed as dist

        if dist.is_initialized():
            return "skipped: a process group already exists"
        store = dist.HashStore()  # type: ignore[attr-defined]
        dist.init_process_group(backend.dist_backend, store=store, rank=0, world_size=1)
        try:
            t = torch.ones(4, device=device)
            dist.all_reduce(t)
            backend.synchronize(index)
            if t.sum().item() != 4:
                raise RuntimeError(f"all_reduce over a world of one changed the data: {t}")
        finally:
            dist.destroy_process_group()
        return f"all_reduce with {backend.dist_backend}, world of one"

    steps = [_step("allocate", allocate)]
    try:
        dtypes = list(backend.dtypes(index or 0))
    except Exception as exc:
        steps.append({"name": "dtypes", "ok": False, "seconds": 0.0, "detail": "",
                      "error": describe_exception(exc)})
        dtypes = [torch.float32]
    for dtype in dtypes:
        steps.append(_step(f"matmul {str(dtype).removeprefix('torch.')}", matmul(dtype)))
    steps.append(_step("collective", collective))
    return {"backend": backend.name, "device": device_string, "steps": steps}
