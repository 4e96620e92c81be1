"""Memory of one device from a ``torch.cuda``-shaped device module that may lack mem_get_info.

torch_npu's ``torch.npu`` and torch's ``torch.xpu`` copy torch.cuda's allocator statistics, but
older releases of each ship without ``mem_get_info``; both backends read the figures this way.
"""

from __future__ import annotations

from typing import Any

from hal.contract import MemoryInfo


def allocator_memory(module: Any, index: int, source: str, fallback_source: str) -> MemoryInfo:
    """Device-wide total/free from ``mem_get_info`` plus this process's allocator counters.

    Without ``mem_get_info`` the total comes from the device properties and free is total minus
    what this process reserved; ``source`` or ``fallback_source`` says which path was taken.
    """
    allocated = int(module.memory_allocated(index))
    reserved = int(module.memory_reserved(index))
    peak = int(module.max_memory_allocated(index))
    if hasattr(module, "mem_get_info"):
        free, total = (int(v) for v in module.mem_get_info(index))
    else:
        total = int(module.get_device_properties(index).total_memory)
        free = max(0, total - reserved)
        source = fallback_source
    return MemoryInfo(total, free, allocated, reserved, peak, source)
