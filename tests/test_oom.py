"""hal.is_oom against the real out-of-memory messages of every vendor and real CPU failures."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from helpers import BackendsPlugin, UnavailableBackend

import hal
from hal.backends.cpu.backend import CpuBackend
from hal.contract import DeviceModuleBackend, Probe
from hal.plugins import registered
from hal.selection import list_backends
from hal.testing import oom_corpus
from hal.testing.oom_corpus import CASES, OomCase


def _claimed(case: OomCase) -> bool:
    """What hal.is_oom must answer with the backends installed in this environment."""
    if not case.oom:
        return False
    exc = case.make()
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    return any(b.name == case.vendor for b in list_backends())


@pytest.mark.parametrize("case", CASES, ids=oom_corpus.ids(CASES))
def test_is_oom_on_the_corpus(case: OomCase) -> None:
    assert hal.is_oom(case.make()) is _claimed(case)


def test_every_near_miss_is_rejected_and_every_vendor_free_oom_accepted() -> None:
    assert not any(hal.is_oom(c.make()) for c in oom_corpus.cases(oom=False))
    vendor_free = [c for c in CASES if c.exc_type == "OutOfMemoryError"]
    assert {c.vendor for c in vendor_free} >= {"cuda", "rocm", "xpu", "ascend"}
    assert all(hal.is_oom(c.make()) for c in vendor_free)


def test_the_cpu_backend_conforms_to_the_corpus() -> None:
    assert oom_corpus.check_backend(CpuBackend().is_oom, "cpu") == []


def test_corpus_covers_every_vendor_with_oom_and_near_misses() -> None:
    for vendor in ("cuda", "rocm", "xpu", "ascend", "mps", "cpu"):
        assert oom_corpus.cases(vendor, oom=True), vendor
    for vendor in ("cuda", "rocm", "xpu", "ascend", "cpu"):
        assert oom_corpus.cases(vendor, oom=False), vendor
    with pytest.raises(ValueError, match="unknown vendor"):
        oom_corpus.cases("bogus")


def test_the_docs_count_the_corpus_as_it_is() -> None:
    """docs/memory-precision-batching.md states the corpus's size; a new case must update it."""
    text = " ".join((Path(__file__).parents[1] / "docs/memory-precision-batching.md").read_text().split())
    found = re.search(r"holds (\d+) real errors: (\d+) OOMs .*? and (\d+) near misses", text)
    assert found, "the corpus sentence is gone from docs/memory-precision-batching.md"
    counted = (len(CASES), len(oom_corpus.cases(oom=True)), len(oom_corpus.cases(oom=False)))
    assert tuple(map(int, found.groups())) == counted


def test_check_backend_reports_a_greedy_or_blind_backend() -> None:
    greedy = oom_corpus.check_backend(lambda exc: "memory" in str(exc).lower(), "cuda")
    assert any("cuda-illegal-memory-access" in p for p in greedy)
    assert any("nccl-cuda-failure-oom" in p for p in greedy)
    blind = oom_corpus.check_backend(lambda exc: False, "ascend")
    assert any("npu-caching-allocator-legacy" in p for p in blind)


def test_a_real_cpu_allocator_failure_is_oom() -> None:
    with pytest.raises(RuntimeError) as info:
        torch.empty(1 << 52, dtype=torch.uint8)
    assert "DefaultCPUAllocator" in str(info.value)
    assert hal.is_oom(info.value)


def test_a_real_python_memory_error_is_oom() -> None:
    with pytest.raises(MemoryError) as info:
        bytearray(1 << 62)
    assert hal.is_oom(info.value)


def test_the_chain_is_not_judged() -> None:
    try:
        try:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        except torch.OutOfMemoryError as oom:
            raise ValueError("while handling") from oom
    except ValueError as exc:
        assert not hal.is_oom(exc)
        assert exc.__cause__ is not None and hal.is_oom(exc.__cause__)


def test_non_exceptions_are_not_oom() -> None:
    assert not hal.is_oom("CUDA out of memory")  # type: ignore[arg-type]


class _MpsLike(DeviceModuleBackend):
    """What an mps plugin would do: declare its allocator's words; the core's base judges."""

    name = "mpslike"
    device_type = "mps"
    oom_markers = ("MPS backend out of memory",)

    def probe(self) -> Probe:
        return Probe(False, "test only", 0)


class _Broken(UnavailableBackend):
    name = "brokenoom"

    def is_oom(self, exc: BaseException) -> bool:
        raise RuntimeError("a buggy plugin")


def test_a_plugin_backend_extends_is_oom_and_a_broken_one_is_skipped() -> None:
    mps = oom_corpus.cases("mps", oom=True)[0].make()
    installed = any(b.device_type == "mps" for b in list_backends())
    assert hal.is_oom(mps) is installed  # hal itself knows no allocator's words

    with registered(BackendsPlugin(_Broken(), _MpsLike()), "test-oom-plugins"):
        assert hal.is_oom(mps)
        assert not hal.is_oom(RuntimeError("shape mismatch"))
        assert hal.is_oom(MemoryError())
    assert hal.is_oom(mps) is installed
