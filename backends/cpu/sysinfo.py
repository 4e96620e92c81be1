"""Torch-free facts about this machine's CPU and memory: /proc/cpuinfo flags and cgroup limits.

Every function takes a filesystem ``root`` so tests can point it at a fake tree.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hal.hardware import read_text

#: CPU flags that decide which dtypes run natively and how fast.
RELEVANT_FLAGS = (
    "avx2",
    "avx512f",
    "avx512_bf16",
    "avx512_fp16",
    "amx_tile",
    "amx_bf16",
    "amx_fp16",
    "amx_int8",
    # Arm (Features line): bf16 from Armv8.6, fp16 arithmetic from Armv8.2.
    "bf16",
    "fphp",
    "asimdhp",
    "sve",
)
# Above this a cgroup "limit" means no limit (v1 writes the page-rounded max int64).
_UNLIMITED = 1 << 60


@dataclass(frozen=True)
class CpuFacts:
    """The CPU's model, vendor and the flags among RELEVANT_FLAGS that it has."""

    model: str
    vendor: str
    flags: frozenset[str] = field(default_factory=frozenset)


def cpu_facts(root: str = "/") -> CpuFacts:
    """Parse /proc/cpuinfo (the first processor block is representative)."""
    text = read_text(root, "/proc/cpuinfo") or ""
    model = vendor = ""
    flags: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        value = value.strip()
        if key in ("model name", "cpu model", "processor") and not model and not value.isdigit():
            model = value
        elif key in ("vendor_id", "cpu implementer") and not vendor:
            vendor = value
        elif key in ("flags", "features") and not flags:
            flags = set(value.split())
    if not model:
        import platform

        model = platform.processor() or platform.machine() or "unknown CPU"
    return CpuFacts(model=model, vendor=vendor, flags=frozenset(flags & set(RELEVANT_FLAGS)))


def _own_cgroup_paths(root: str) -> tuple[str, str]:
    """This process's cgroup path for v2 (the "0::" line) and for v1's memory controller."""
    v2 = v1 = "/"
    for line in (read_text(root, "/proc/self/cgroup") or "").splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        if parts[0] == "0" and parts[1] == "":
            v2 = parts[2] or "/"
        elif "memory" in parts[1].split(","):
            v1 = parts[2] or "/"
    return v2, v1


def _number(root: str, path: str) -> tuple[bool, int | None]:
    """(is a cgroup number file, its value): "max" and the v1 page-rounded max mean None."""
    text = read_text(root, path)
    if text is None:
        return False, None
    text = text.strip()
    if text == "max":
        return True, None
    try:
        value = int(text)
    except ValueError:
        return False, None
    return True, (None if value >= _UNLIMITED else value)


def _first_number(root: str, candidates: list[str]) -> tuple[str | None, int | None]:
    """The first candidate that holds a cgroup number, and its value; (None, None) if none."""
    for path in candidates:
        found, value = _number(root, path)
        if found:
            return path, value
    return None, None


#: Where a process's memory cgroup keeps (limit, usage); None where no file holds it.
CgroupFiles = tuple[str | None, str | None]


def cgroup_memory_files(root: str = "/") -> tuple[CgroupFiles, tuple[int | None, int | None]]:
    """Which files hold this process's memory cgroup (limit, usage), and their values now.

    Finding them reads /proc/self/cgroup and probes up to eight paths; callers that read the
    figures often keep the files and re-read only those with ``read_cgroup_memory``.
    """
    v2, v1 = _own_cgroup_paths(root)
    base2, base1 = "/sys/fs/cgroup", "/sys/fs/cgroup/memory"
    v2_dirs = [f"{base2}{v2}".rstrip("/"), base2]
    v1_dirs = [f"{base1}{v1}".rstrip("/"), base1]
    limit_file, limit = _first_number(root, [f"{d}/memory.max" for d in v2_dirs])
    usage_file, usage = _first_number(root, [f"{d}/memory.current" for d in v2_dirs])
    if limit is None and usage is None:
        limit_file, limit = _first_number(root, [f"{d}/memory.limit_in_bytes" for d in v1_dirs])
        usage_file, usage = _first_number(root, [f"{d}/memory.usage_in_bytes" for d in v1_dirs])
    return (limit_file, usage_file), (limit, usage)


def read_cgroup_memory(root: str, files: CgroupFiles) -> tuple[int | None, int | None]:
    """(limit, usage) read fresh from the files ``cgroup_memory_files`` found."""
    limit_file, usage_file = files
    limit = _number(root, limit_file)[1] if limit_file else None
    usage = _number(root, usage_file)[1] if usage_file else None
    return limit, usage


def cgroup_memory(root: str = "/") -> tuple[int | None, int | None]:
    """(limit, usage) in bytes of this process's memory cgroup; None where there is no limit."""
    return cgroup_memory_files(root)[1]


def process_memory(root: str = "/") -> tuple[int, int]:
    """(resident, high-water mark) of this process in bytes, from /proc/self/status."""
    rss = hwm = 0
    for line in (read_text(root, "/proc/self/status") or "").splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) * 1024
        elif line.startswith("VmHWM:"):
            hwm = int(line.split()[1]) * 1024
    if rss == 0:
        import psutil

        rss = int(psutil.Process().memory_info().rss)
    if hwm == 0:
        import resource

        hwm = int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024
    return rss, max(hwm, rss)
