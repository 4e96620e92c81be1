"""The cuda-compat mode in this process, on the CPU: what it maps, refuses and restores.

Every test enables the mode in a fixture and disables it in ``finally``, so nothing leaks; the
restore test compares every attribute of the objects the mode may touch, before and after.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.utils._device
from helpers import BackendsPlugin
from torch.nn.parallel import DistributedDataParallel

import hal
from hal import cuda_compat
from hal.contract import Backend, Probe
from hal.cuda_compat import _namespace, _patches
from hal.errors import UnmappedCallError
from hal.plugins import registered

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "cuda-compat.md"


@pytest.fixture
def compat() -> Iterator[cuda_compat.Mapping]:
    mapping = cuda_compat.enable(quiet=True)
    try:
        yield mapping
    finally:
        cuda_compat.disable()


def snapshot() -> dict[str, Any]:
    """Every attribute of every object the mode may patch, by identity, plus the mode stack."""
    owners = {"torch": torch, "torch.amp": torch.amp, "torch.distributed": dist,
              "DDP": DistributedDataParallel, "torch.Tensor": torch.Tensor,
              "torch.nn.Module": torch.nn.Module,
              "DeviceContext": torch.utils._device.DeviceContext,
              "torch.multiprocessing": torch.multiprocessing,
              "torch.multiprocessing.spawn": sys.modules["torch.multiprocessing.spawn"]}
    seen: dict[str, Any] = {f"{name}.{k}": id(v) for name, owner in owners.items()
                            for k, v in vars(owner).items()}
    seen.update({f"sys.modules[{k}]": id(v) for k, v in sys.modules.items()
                 if k.startswith("torch.cuda")})
    seen["torch function modes"] = torch._C._len_torch_function_stack()
    return seen


def test_disable_restores_every_object_the_mode_patched() -> None:
    before = snapshot()
    cuda_compat.enable(quiet=True)
    try:
        during = snapshot()
        assert torch.cuda.is_available() and torch.zeros(1, device="cuda").device.type == "cpu"
    finally:
        cuda_compat.disable()
    after = snapshot()
    changed = sorted(k for k in before.keys() | during.keys() if during.get(k) != before.get(k))
    assert {"torch.cuda", "torch.autocast", "sys.modules[torch.cuda]", "DDP.__init__",
            "torch.distributed.init_process_group", "torch.zeros", "torch.zeros_like",
            "torch.Tensor.to", "torch.Tensor.cuda", "DeviceContext.__init__",
            "torch.multiprocessing.spawn.start_processes"} <= set(changed)
    assert after == before
    assert not torch.cuda.is_available()  # the real CPU build's answer again
    assert not cuda_compat.is_enabled()


def test_importing_the_package_changes_nothing() -> None:
    code = ("import sys, torch; before = (torch.cuda, torch.autocast, torch.load, "
            "torch._C._len_torch_function_stack()); import hal.cuda_compat, hal.cuda_compat._patches,"
            " hal.cuda_compat._namespace; after = (torch.cuda, torch.autocast, torch.load, "
            "torch._C._len_torch_function_stack()); print(before == after, "
            "hal.cuda_compat.is_enabled())")
    lazy = ("import sys, hal; m = hal.cuda_compat; print(m.is_enabled(), 'torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.split() == ["True", "False"], done.stderr
    assert done.stderr == ""
    done = subprocess.run([sys.executable, "-c", lazy], capture_output=True, text=True, timeout=120)
    assert done.stdout.split() == ["False", "False"], done.stderr  # hal.cuda_compat: lazy, torch-free


def test_devices_map_in_factories_to_cuda_and_constructors(compat: cuda_compat.Mapping) -> None:
    assert (compat.backend, compat.device_type, compat.active) == ("cpu", "cpu", True)
    x = torch.ones(2, 3, device="cuda:0")
    assert torch.zeros_like(x, device="cuda").device.type == "cpu"
    assert torch.arange(3, device=torch.device("cuda", 1)).device.type == "cpu"
    assert torch.nn.Linear(2, 2, device="cuda").weight.device.type == "cpu"
    with torch.device("cuda"):
        assert torch.empty(1).device.type == "cpu"
    assert x.device.type == "cpu"
    assert torch.empty(2, device=torch.device("cuda")).device.type == "cpu"
    assert x.new_zeros(4, device="cuda").device.type == "cpu"
    assert x.cuda().device.type == x.cuda(0).device.type == x.to("cuda").device.type == "cpu"
    assert x.to(torch.device("cuda", 0), torch.float64).dtype == torch.float64
    assert x.to(device="cuda:1").device.type == "cpu"
    m = torch.nn.Linear(3, 2).cuda()
    assert m.weight.device.type == "cpu"
    assert m.to("cuda:0")(x.cuda(non_blocking=True)).shape == (2, 2)
    assert x.pin_memory() is x  # pinning is for host-to-device copies: none here


def test_torch_cuda_calls_answer_with_the_backends_figures(compat: cuda_compat.Mapping) -> None:
    backend = hal.get_backend()
    assert torch.cuda.is_available() and torch.cuda.device_count() == 1
    torch.cuda.set_device(1)  # every index is the host
    assert torch.cuda.current_device() == 1
    torch.cuda.set_device(0)
    assert torch.cuda.get_device_name(0) == backend.devices()[0].name
    props = torch.cuda.get_device_properties(0)
    assert props.total_memory == backend.devices()[0].total_memory > 0
    free, total = torch.cuda.mem_get_info()
    assert 0 < free <= total == backend.memory(0).total
    assert torch.cuda.memory_allocated() > 0
    assert torch.cuda.max_memory_allocated() >= torch.cuda.memory_allocated() // 2
    stats = torch.cuda.memory_stats()
    assert set(stats) == set(_namespace.STATS_KEYS)
    summary = torch.cuda.memory_summary()
    assert summary.splitlines()[0] == "cpu (cpu) memory" and "source:" in summary
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    assert torch.cuda.is_bf16_supported() == (torch.bfloat16 in backend.dtypes(0))
    torch.cuda.manual_seed_all(3)
    a = torch.randn(3, device="cuda")
    torch.cuda.manual_seed(3)
    assert torch.equal(a, torch.randn(3, device="cuda"))
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    with torch.cuda.stream(torch.cuda.Stream()):
        torch.ones(8) @ torch.ones(8)
    end.record()
    assert start.elapsed_time(end) >= 0.0
    assert torch.cuda.OutOfMemoryError is torch.OutOfMemoryError


def test_cudnn_flags_are_harmless_no_ops(compat: cuda_compat.Mapping) -> None:
    before = torch.backends.cudnn.benchmark
    try:
        torch.backends.cudnn.benchmark = True
        torch.backends.cudnn.deterministic = True
        torch.backends.cuda.matmul.allow_tf32 = True
        assert torch.nn.functional.conv1d(torch.ones(1, 1, 4), torch.ones(1, 1, 2)).sum() == 6
    finally:
        torch.backends.cudnn.benchmark = before
        torch.backends.cudnn.deterministic = False
        torch.backends.cuda.matmul.allow_tf32 = False


def test_the_compute_capability_is_below_every_feature_threshold(
        compat: cuda_compat.Mapping) -> None:
    """transformers' kernels dependency asks it on every load to "cuda": it must answer, and no
    feature check may pass on a device that is not NVIDIA's."""
    assert torch.cuda.get_device_capability() == (0, 0)
    assert torch.cuda.get_device_capability(0) == (0, 0)
    assert not torch.cuda.get_device_capability() >= (7, 0)


@pytest.mark.parametrize("call, expected", [
    (lambda: torch.cuda.nvtx.range_push("x"), "torch.cuda.nvtx.range_push"),
    (lambda: torch.cuda.CUDAGraph(), "torch.cuda.CUDAGraph"),
    (lambda: torch.cuda.graph(None).__enter__(), "torch.cuda.graph"),
    (lambda: torch.cuda.get_device_properties(0).major, "torch.cuda.get_device_properties().major"),
    (lambda: torch.cuda.memory_stats()["num_ooms"], "torch.cuda.memory_stats()['num_ooms']"),
    (lambda: torch.cuda.memory_stats().get("num_ooms", 0), "torch.cuda.memory_stats()['num_ooms']"),
    (lambda: torch.cuda.max_memory_reserved(), "torch.cuda.max_memory_reserved"),
    (lambda: torch.cuda.FloatTensor(2), "torch.cuda.FloatTensor"),
])
def test_a_call_with_no_equivalent_is_one_line_naming_call_and_backend(
        compat: cuda_compat.Mapping, call: Any, expected: str) -> None:
    with pytest.raises(UnmappedCallError) as info:
        call()
    text = str(info.value)
    assert "\n" not in text
    assert text.startswith(f"{expected} has no equivalent on cpu under hal's cuda-compat mode: ")
    assert len(text.split(": ", 1)[1]) > 20  # says what to do


def test_refused_names_are_still_there_for_probing_and_annotations(
        compat: cuda_compat.Mapping) -> None:
    assert hasattr(torch.cuda, "nvtx") and getattr(torch.cuda, "graphs", None) is not None
    assert (torch.cuda.CUDAGraph | None) is not None
    assert not isinstance(object(), torch.cuda.CUDAGraph)
    assert torch.cuda.CUDAGraph is torch.cuda.CUDAGraph
    assert torch.cuda._is_compiled is sys.modules["torch"].cuda._hal_real._is_compiled


def test_autocast_and_grad_scaler_follow_hals_precision_policy(
        compat: cuda_compat.Mapping, monkeypatch: pytest.MonkeyPatch) -> None:
    policy = hal.precision.policy()
    lin = torch.nn.Linear(4, 4)
    for ctx in (torch.cuda.amp.autocast(), torch.autocast("cuda", dtype=torch.float16),
                torch.amp.autocast(device_type="cuda")):
        with ctx:
            got = lin(torch.ones(2, 4)).dtype
        assert got == (policy.autocast_dtype or torch.float32)
    assert torch.cuda.amp.GradScaler().is_enabled() == policy.needs_scaler
    assert torch.amp.GradScaler("cuda").is_enabled() == policy.needs_scaler
    monkeypatch.setenv("HAL_PRECISION", "fp32")
    with torch.autocast("cuda"):
        assert lin(torch.ones(2, 4)).dtype == torch.float32
    with torch.autocast("cpu", dtype=torch.bfloat16):  # not "cuda": untouched
        assert lin(torch.ones(2, 4)).dtype == torch.bfloat16


def test_load_maps_a_cuda_map_location(compat: cuda_compat.Mapping, tmp_path: Path) -> None:
    path = tmp_path / "t.pt"
    torch.save({"w": torch.arange(3)}, path)
    for loc in ("cuda", "cuda:0", torch.device("cuda", 0), {"cpu": "cuda:0"}):
        assert torch.load(path, map_location=loc)["w"].device.type == "cpu"


@pytest.mark.parametrize("given, expected", [
    ("nccl", "gloo"), ("NCCL", "gloo"), ("gloo", "gloo"), ("cuda:nccl,cpu:gloo", "cpu:gloo"),
    ("cpu:gloo,cuda:nccl", "cpu:gloo"), (None, None),
])
def test_the_collective_name_maps_to_the_backends_library(
        compat: cuda_compat.Mapping, given: Any, expected: Any) -> None:
    target = cuda_compat._state.target
    assert target is not None and target.backend.dist_backend == "gloo"
    assert _patches.collective_name(target, given) == expected
    assert dist.is_nccl_available() == dist.is_gloo_available()


# -- the contract: the names the mode maps exist in the pinned torch and are the documented ones --


def test_every_mapped_name_exists_in_the_pinned_torch() -> None:
    real = sys.modules["torch.cuda"]
    assert not cuda_compat.is_enabled()
    missing = [n for n in _namespace.MAPPED if not hasattr(real, n)]
    missing += [f"amp.{n}" for n in _namespace.MAPPED_AMP if not hasattr(real.amp, n)]
    assert not missing, f"torch {torch.__version__} has no torch.cuda.{missing}"
    public = {n for n in dir(real) if not n.startswith("_")}
    assert set(_namespace.MAPPED) <= public


def test_the_docs_list_exactly_the_mapped_names() -> None:
    text = DOC.read_text(encoding="utf-8")
    section = text.split("<!-- mapped-names -->", 2)[1]
    documented = set(re.findall(r"`torch\.cuda\.([A-Za-z0-9_.]+)`", section))
    assert documented == set(cuda_compat.mapped_names())


class _TwoDevices(Backend):
    """A two-device backend on torch's meta device that records what it is asked to bind."""

    name, device_type, priority = "twodev", "meta", 300

    def __init__(self) -> None:
        self.bound: list[int] = []

    def probe(self) -> Probe:
        return Probe(True, "two test devices", 2)

    def set_device(self, index: int) -> None:
        self.bound.append(index)


def test_each_rank_binds_its_own_device_and_cuda_n_is_device_n(
        monkeypatch: pytest.MonkeyPatch) -> None:
    backend = _TwoDevices()
    monkeypatch.setenv("LOCAL_RANK", "1")
    with registered(BackendsPlugin(backend), "test-twodev"):
        hal.reset()
        mapping = cuda_compat.enable(quiet=True)
        try:
            assert (mapping.backend, mapping.device_type) == ("twodev", "meta")
            assert backend.bound == [1]  # the rank's own device, bound at enable()
            assert torch.cuda.current_device() == 1 and torch.cuda.device_count() == 2
            assert torch.zeros(2, device="cuda:0").device.type == "meta"  # meta keeps no index
            assert torch.ones(1).cuda().device.type == "meta"
            target = cuda_compat._state.target
            assert target is not None
            mapped = _patches.device_mapper(target)
            assert mapped("cuda:1") == mapped(torch.device("cuda", 1)) == torch.device("meta", 1)
            assert mapped("cuda") == torch.device("meta")  # bare: the current device
            torch.cuda.set_device(0)
            assert backend.bound == [1, 0]
            with pytest.raises(UnmappedCallError, match="device 2 does not exist: twodev sees 2"):
                torch.cuda.set_device(2)
            with pytest.raises(UnmappedCallError, match="twodev does not report memory"):
                torch.cuda.memory_allocated()
        finally:
            cuda_compat.disable()
            hal.reset()
