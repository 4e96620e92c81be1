"""The CPU backend: flags from /proc/cpuinfo, cgroup-capped memory, real OOM, peak reset."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import psutil
import pytest
import torch

from hal.backends.cpu import CpuBackend
from hal.backends.cpu.sysinfo import cgroup_memory, cpu_facts

X86_PLAIN = "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7302\n" \
            "flags\t\t: fpu sse2 avx avx2 fma\n\nprocessor\t: 1\nflags\t\t: fpu\n"
X86_AVX512BF16 = "vendor_id\t: GenuineIntel\nmodel name\t: Intel Xeon Platinum 8380\n" \
                 "flags\t\t: avx2 avx512f avx512_bf16 avx512_vnni\n"
X86_AMX = "vendor_id\t: GenuineIntel\nmodel name\t: Intel Xeon Platinum 8480+\n" \
          "flags\t\t: avx2 avx512f avx512_bf16 avx512_fp16 amx_tile amx_bf16 amx_int8\n"
ARM_BF16 = "processor\t: 0\nBogoMIPS\t: 243.75\nFeatures\t: fp asimd fphp asimdhp bf16 sve\n" \
           "CPU implementer\t: 0x41\n"
ARM_OLD = "processor\t: 0\nFeatures\t: fp asimd evtstrm crc32\nCPU implementer\t: 0x41\n"


def _tree(tmp_path: Path, cpuinfo: str, files: dict[str, str] | None = None) -> str:
    (tmp_path / "proc").mkdir(exist_ok=True)
    (tmp_path / "proc" / "cpuinfo").write_text(cpuinfo)
    for rel, text in (files or {}).items():
        path = tmp_path / rel.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return str(tmp_path)


@pytest.mark.parametrize(("cpuinfo", "machine", "expected"), [
    (X86_PLAIN, "x86_64", ["float32"]),
    (X86_AVX512BF16, "x86_64", ["bfloat16", "float32"]),
    (X86_AMX, "x86_64", ["bfloat16", "float16", "float32"]),
    (ARM_BF16, "aarch64", ["bfloat16", "float16", "float32"]),
    (ARM_OLD, "aarch64", ["float32"]),
])
def test_native_dtypes_follow_the_flags(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cpuinfo: str, machine: str,
    expected: list[str],
) -> None:
    monkeypatch.setattr("platform.machine", lambda: machine)
    backend = CpuBackend(root=_tree(tmp_path, cpuinfo))
    assert backend.native_dtype_names() == expected
    assert backend.dtypes() == [getattr(torch, n) for n in expected]


@pytest.mark.parametrize(("cpuinfo", "machine", "fast", "emulated"), [
    (X86_PLAIN, "x86_64", [], ["bfloat16", "float16"]),
    (X86_AVX512BF16, "x86_64", None, ["float16"]),      # dot-product only: hal measures
    (X86_AMX, "x86_64", ["bfloat16"], []),              # avx512_fp16 alone does not pay
    (ARM_BF16, "aarch64", None, []),
    (ARM_OLD, "aarch64", [], ["bfloat16", "float16"]),
])
def test_fast_and_emulated_dtypes_follow_the_flags(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cpuinfo: str, machine: str,
    fast: list[str] | None, emulated: list[str],
) -> None:
    monkeypatch.setattr("platform.machine", lambda: machine)
    backend = CpuBackend(root=_tree(tmp_path, cpuinfo))
    assert backend.fast_dtype_names() == fast
    declared = backend.fast_dtypes()
    assert declared == (None if fast is None else [getattr(torch, n) for n in fast])
    assert backend.emulated_dtypes() == [getattr(torch, n) for n in emulated]


def test_cpu_facts_parse_model_vendor_and_relevant_flags(tmp_path: Path) -> None:
    facts = cpu_facts(_tree(tmp_path, X86_PLAIN))
    assert facts.model == "AMD EPYC 7302"
    assert facts.vendor == "AuthenticAMD"
    assert facts.flags == {"avx2"}  # only the relevant flags, from the first block


CGROUP_V2 = {"/proc/self/cgroup": "0::/job\n", "/sys/fs/cgroup/job/memory.max": "2147483648\n",
             "/sys/fs/cgroup/job/memory.current": "536870912\n"}
CGROUP_V1 = {"/proc/self/cgroup": "4:memory:/docker/abc\n1:cpu:/\n",
             "/sys/fs/cgroup/memory/docker/abc/memory.limit_in_bytes": "1073741824\n",
             "/sys/fs/cgroup/memory/docker/abc/memory.usage_in_bytes": "268435456\n"}
CGROUP_V1_UNLIMITED = {"/proc/self/cgroup": "4:memory:/\n",
                       "/sys/fs/cgroup/memory/memory.limit_in_bytes": "9223372036854771712\n",
                       "/sys/fs/cgroup/memory/memory.usage_in_bytes": "1000\n"}
CGROUP_V2_MAX = {"/proc/self/cgroup": "0::/\n", "/sys/fs/cgroup/memory.max": "max\n",
                 "/sys/fs/cgroup/memory.current": "1000\n"}


@pytest.mark.parametrize(("files", "limit", "usage"), [
    (CGROUP_V2, 2 << 30, 512 << 20),
    (CGROUP_V1, 1 << 30, 256 << 20),
    (CGROUP_V1_UNLIMITED, None, 1000),
    (CGROUP_V2_MAX, None, 1000),
    ({}, None, None),
])
def test_cgroup_limits(tmp_path: Path, files: dict[str, str], limit: int | None,
                       usage: int | None) -> None:
    assert cgroup_memory(_tree(tmp_path, X86_PLAIN, files)) == (limit, usage)


def test_memory_is_capped_by_the_cgroup_limit(tmp_path: Path) -> None:
    backend = CpuBackend(root=_tree(tmp_path, X86_PLAIN, CGROUP_V2))
    mem = backend.memory()
    assert mem.total == min(2 << 30, psutil.virtual_memory().total)
    assert mem.free <= (2 << 30) - (512 << 20)
    assert "cgroup limit" in mem.source
    assert backend.devices()[0].total_memory == mem.total
    assert backend.devices()[0].extras["cgroup_limit"] == 2 << 30


def test_real_memory_figures_are_consistent() -> None:
    backend = CpuBackend()
    mem = backend.memory()
    assert 0 < mem.free <= mem.total
    assert mem.allocated == mem.reserved > 0
    assert mem.peak >= mem.allocated
    assert "RSS" in mem.source
    info = backend.devices()[0]
    assert info.extras["logical_cores"] >= 1
    assert info.total_memory == mem.total


def test_is_oom_recognises_a_real_cpu_allocator_failure() -> None:
    backend = CpuBackend()
    with pytest.raises(RuntimeError) as info:
        torch.empty(1 << 50, dtype=torch.uint8)
    assert backend.is_oom(info.value)
    assert backend.is_oom(MemoryError())
    assert not backend.is_oom(RuntimeError("shape mismatch"))
    assert not backend.is_oom(ValueError("DefaultCPUAllocator"))


def test_reset_peak_memory_lowers_the_high_water_mark() -> None:
    code = (
        "from hal.backends.cpu import CpuBackend\n"
        "b = CpuBackend()\n"
        "x = bytearray(300 << 20)\n"
        "del x\n"
        "before = b.memory().peak\n"
        "b.reset_peak_memory()\n"
        "after = b.memory().peak\n"
        "print(before - after)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True)
    assert int(out.stdout) > 200 << 20


def test_probe_is_always_available() -> None:
    probe = CpuBackend().probe()
    assert probe.available and probe.device_count == 1
    assert CpuBackend().torch_device() == torch.device("cpu")
