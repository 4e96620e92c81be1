"""hal.distributed in one process: backend strings, the environment, the dtype table, the world
of one, and ``hal run``'s argument handling.  Multi-process runs: test_distributed_multiproc.py.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar

import pytest
import torch
import torch.distributed as dist

import hal
from hal import distributed as hd
from hal.distributed import collectives, faults, plans
from hal.distributed.state import STATE
from hal.plugins import load_plugins

ENV = {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "MASTER_ADDR": "127.0.0.1",
       "MASTER_PORT": "29500"}


class _Minimal(hal.Backend):
    """The smallest vendor backend: a device type, a collective backend, devices to count."""

    priority = 50
    index_set: ClassVar[list[int]] = []

    def probe(self) -> hal.Probe:
        return hal.Probe(True, "fake", 2)

    def set_device(self, index: int) -> None:
        type(self).index_set.append(index)


def _minimal(name: str, device_type: str, dist_backend: str) -> _Minimal:
    cls = type(f"Fake{name.title()}", (_Minimal,), {
        "name": name, "device_type": device_type, "dist_backend": dist_backend,
        "index_set": [],
    })
    return cls()  # type: ignore[no-any-return]


FAKE_VENDORS = [("fakecuda", "cuda", "nccl", "cpu:gloo,cuda:nccl"),
                ("fakenpu", "npu", "hccl", "cpu:gloo,npu:hccl"),
                ("fakexpu", "xpu", "xccl", "cpu:gloo,xpu:xccl")]


@pytest.fixture(autouse=True)
def _no_world(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for var in hd.ENV_VARS:
        monkeypatch.delenv(var, raising=False)
    hd.shutdown()
    try:
        yield
    finally:
        hd.shutdown()
        assert not dist.is_initialized()


@pytest.fixture
def register() -> Iterator[Any]:
    """Register backends as a plugin for one test; unregistered in ``finally``."""
    names: list[str] = []

    def add(*backends: hal.Backend) -> None:
        class Plugin:
            @staticmethod
            @hal.hookimpl
            def hal_backends() -> Sequence[hal.Backend]:
                return list(backends)

        name = f"test-dist-{len(names)}"
        assert load_plugins().register(Plugin(), name)
        names.append(name)

    try:
        yield add
    finally:
        for name in names:
            load_plugins().unregister(name)


# -- backend strings ------------------------------------------------------------------------


def test_cpu_backend_string_is_gloo_alone() -> None:
    assert hd.backend_string(hal.get_backend("cpu")) == "gloo"


@pytest.mark.parametrize(("name", "device_type", "dist_backend", "want"), FAKE_VENDORS)
def test_backend_string_for_each_fake_vendor(name: str, device_type: str, dist_backend: str,
                                             want: str) -> None:
    assert hd.backend_string(_minimal(name, device_type, dist_backend)) == want
    assert dist.Backend(want) == want  # torch parses it as a device-to-backend map


@pytest.mark.parametrize(("module", "cls", "want"), [
    ("hal.backends.cuda", "CudaBackend", "cpu:gloo,cuda:nccl"),
    ("hal.backends.rocm", "RocmBackend", "cpu:gloo,cuda:nccl"),
    ("hal.backends.ascend", "AscendBackend", "cpu:gloo,npu:hccl"),
    ("hal.backends.xpu", "XpuBackend", "cpu:gloo,xpu:xccl"),
])
def test_backend_string_for_the_real_vendor_backends(module: str, cls: str, want: str) -> None:
    backend_cls = getattr(pytest.importorskip(module), cls, None)
    if backend_cls is None:
        pytest.skip(f"{module} has no {cls} yet")
    assert hd.backend_string(backend_cls) == want


@pytest.mark.parametrize(("name", "device_type", "dist_backend", "want"),
                         [v for v in FAKE_VENDORS if v[1] != "npu"])
def test_init_uses_the_selected_backend_and_sets_the_device(
        register: Any, monkeypatch: pytest.MonkeyPatch, name: str, device_type: str,
        dist_backend: str, want: str) -> None:
    backend = _minimal(name, device_type, dist_backend)
    register(backend)
    monkeypatch.setenv("HAL_DEVICE", name)
    world = hd.init()
    assert world.backend == want
    assert world.device == torch.device(f"{device_type}:0")
    assert type(backend).index_set == [0]
    assert not dist.is_initialized()  # a world of one makes no process group


# -- the environment ------------------------------------------------------------------------


def test_no_torchrun_env_is_a_world_of_one() -> None:
    assert hd.read_env({}) is None


def test_full_env_is_parsed() -> None:
    env = hd.read_env(ENV)
    assert env is not None
    assert (env.rank, env.world_size, env.local_rank, env.master_addr, env.master_port) == \
        (1, 2, 1, "127.0.0.1", 29500)


def test_incomplete_env_names_what_is_missing() -> None:
    with pytest.raises(hal.ConfigError, match=r"MASTER_ADDR, MASTER_PORT not set"):
        hd.read_env({"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0"})


@pytest.mark.parametrize(("var", "value", "match"), [
    ("RANK", "one", r"RANK='one' is not a whole number; expected 0\.\.1048576"),
    ("RANK", "2", r"RANK=2 with WORLD_SIZE=2: expected 0 <= RANK < WORLD_SIZE"),
    ("MASTER_PORT", "70000", r"MASTER_PORT=70000 is out of range; expected 1\.\.65535"),
])
def test_bad_env_values_are_one_line_config_errors(var: str, value: str, match: str) -> None:
    with pytest.raises(hal.ConfigError, match=match) as info:
        hd.read_env({**ENV, var: value})
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("timeout", [0, -1.0])
def test_timeout_must_be_positive(timeout: float) -> None:
    with pytest.raises(hal.ConfigError, match="timeout"):
        hd.init(timeout=timeout)


# -- the world of one -----------------------------------------------------------------------


def test_world_of_one_is_idempotent_and_makes_no_group() -> None:
    world = hd.init(timeout=5)
    assert world == hd.World(0, 1, 0, torch.device("cpu"), "gloo", 5.0)
    assert world.is_main
    assert hd.init() is world and hd.world() is world and hd.is_initialized()
    assert not dist.is_initialized()
    hd.shutdown()
    assert not hd.is_initialized()
    hd.shutdown()  # twice is fine


@pytest.mark.parametrize("op", hd.OPS)
def test_world_of_one_reductions_are_identities(op: str) -> None:
    t = torch.tensor([1.0, -2.0, 3.5])
    assert hd.all_reduce(t, op) is t
    assert t.tolist() == [1.0, -2.0, 3.5]
    assert hd.reduce_scatter(t, op).tolist() == [1.0, -2.0, 3.5]


def test_world_of_one_data_movement() -> None:
    t = torch.arange(6).view(2, 3)
    gathered = hd.all_gather(t)
    assert gathered.shape == (1, 2, 3) and torch.equal(gathered[0], t)
    assert gathered.data_ptr() != t.data_ptr()
    assert hd.broadcast(t, 0) is t
    hd.barrier()
    with pytest.raises(hal.ConfigError, match=r"src=1 is not a rank of this world \(0..0\)"):
        hd.broadcast(t, 1)
    with pytest.raises(hal.ConfigError, match=r"dst=1 is not another rank.*rank 0 of 1"):
        hd.send(t, 1)
    with pytest.raises(hal.ConfigError, match=r"src=0 is not another rank"):
        hd.recv(t, 0)


def test_world_of_one_still_refuses_what_a_real_world_refuses() -> None:
    with pytest.raises(hal.ConfigError, match=r"cannot reduce torch\.int64 tensors"):
        hd.all_reduce(torch.ones(2, dtype=torch.int64), "avg")
    with pytest.raises(hal.ConfigError, match=r"op='prod' is not one of sum, avg, max, min"):
        hd.all_reduce(torch.ones(2), "prod")


def test_out_arguments_are_checked_and_filled() -> None:
    t = torch.arange(4.0)
    out = torch.empty(1, 4)
    assert hd.all_gather(t, out=out) is out and torch.equal(out[0], t)
    flat = torch.empty(4)  # torch's concatenated layout is accepted as it is
    assert hd.all_gather(t, out=flat) is flat and torch.equal(flat, t)
    with pytest.raises(hal.ConfigError, match=r"expected a contiguous torch.float32 tensor of "
                       r"shape \(1, 4\) or \(4,\)"):
        hd.all_gather(t, out=torch.empty(3))
    with pytest.raises(hal.ConfigError, match=r"shape \(2,\)"):
        hd.reduce_scatter(torch.ones(2, dtype=torch.int32), out=torch.empty(2))
    with pytest.raises(hal.ConfigError, match="cannot be split evenly"):
        hd.reduce_scatter(torch.tensor(1.0))


def test_wrap_gives_ddp_over_a_one_rank_group_and_shutdown_destroys_it() -> None:
    model = hd.wrap(torch.nn.Linear(2, 1))
    assert isinstance(model, torch.nn.parallel.DistributedDataParallel)
    assert dist.is_initialized() and dist.get_world_size() == 1
    model(torch.ones(3, 2)).sum().backward()
    assert model.module.weight.grad is not None
    hd.shutdown()
    assert not dist.is_initialized()


def test_mesh_on_a_world_of_one() -> None:
    m = hd.mesh((1,), ("dp",))
    assert m.device_type == "cpu" and m.mesh_dim_names == ("dp",) and m.size() == 1
    with pytest.raises(hal.ConfigError, match=r"shape \(2,\) holds 2 ranks but the world has 1"):
        hd.mesh(2)
    with pytest.raises(hal.ConfigError, match="1 names"):
        hd.mesh((1, 1), ("dp",))


# -- the dtype table (docs/distributed.md) --------------------------------------------------

NATIVE, REFUSED = "native", "refused"
TABLE: list[tuple[torch.dtype, dict[str, str | torch.dtype]]] = [
    (torch.float32, dict.fromkeys(hd.OPS, NATIVE)),
    (torch.bfloat16, dict.fromkeys(hd.OPS, NATIVE)),
    (torch.float16, dict.fromkeys(hd.OPS, NATIVE)),
    (torch.float64, dict.fromkeys(hd.OPS, NATIVE)),
    (torch.float8_e4m3fn, dict.fromkeys(hd.OPS, torch.float32)),
    (torch.float8_e5m2, dict.fromkeys(hd.OPS, torch.float32)),
    (torch.complex64, {"sum": NATIVE, "avg": NATIVE, "max": REFUSED, "min": REFUSED}),
    (torch.complex32, {"sum": torch.complex64, "avg": torch.complex64, "max": REFUSED,
                       "min": REFUSED}),
    (torch.int64, {"sum": NATIVE, "avg": REFUSED, "max": NATIVE, "min": NATIVE}),
    (torch.int32, {"sum": NATIVE, "avg": REFUSED, "max": NATIVE, "min": NATIVE}),
    (torch.int8, {"sum": NATIVE, "avg": REFUSED, "max": NATIVE, "min": NATIVE}),
    (torch.uint8, {"sum": NATIVE, "avg": REFUSED, "max": NATIVE, "min": NATIVE}),
    (torch.int16, {"sum": torch.int32, "avg": REFUSED, "max": torch.int32, "min": torch.int32}),
    (torch.uint16, {"sum": torch.int32, "avg": REFUSED, "max": torch.int32,
                    "min": torch.int32}),
    (torch.uint32, {"sum": torch.int64, "avg": REFUSED, "max": torch.int64,
                    "min": torch.int64}),
    (torch.uint64, {"sum": torch.int64, "avg": REFUSED, "max": REFUSED, "min": REFUSED}),
    (torch.bool, {"sum": REFUSED, "avg": REFUSED, "max": NATIVE, "min": NATIVE}),
]


@pytest.mark.parametrize(("dtype", "row"), TABLE, ids=[str(d) for d, _ in TABLE])
def test_reduce_plan_matches_the_documented_table(
        dtype: torch.dtype, row: dict[str, str | torch.dtype]) -> None:
    for op, want in row.items():
        if want == REFUSED:
            with pytest.raises(hal.ConfigError, match=rf"op='{op}'\) cannot reduce {dtype}"):
                hd.reduce_plan(op, dtype)
            continue
        _, compute = hd.reduce_plan(op, dtype)
        assert compute == (None if want == NATIVE else want), (op, dtype)


@pytest.mark.parametrize(("dtype", "view"), [
    (torch.float32, None), (torch.int16, torch.float16), (torch.uint32, torch.int32),
    (torch.uint64, torch.int64), (torch.float8_e5m2, torch.uint8),
])
def test_dtypes_gloo_cannot_move_travel_as_same_size_bit_views(
        dtype: torch.dtype, view: torch.dtype | None) -> None:
    t = torch.zeros(3, dtype=dtype)
    moved = plans.move_view(t)
    assert moved.dtype == (view or dtype) and moved.data_ptr() == t.data_ptr()


# -- error translation ----------------------------------------------------------------------


def test_peer_failures_become_one_line_distributed_errors() -> None:
    hd.init(timeout=7)
    reset = RuntimeError("[/x/gloo/transport/tcp/pair.cc:537] Read error [127.0.0.1]:1: "
                         "Connection reset by peer. This is typically caused by a remote worker "
                         "hanging or bugs in the application. GLHF!")
    err = faults.peer_error("all_reduce", reset, hd.world())
    assert isinstance(err, hd.DistributedError) and isinstance(err, hal.HalError)
    assert str(err) == ("all_reduce failed on rank 0 of 1 (timeout 7 s): a peer rank closed its "
                        "connection (it crashed or exited): Read error [127.0.0.1]:1: "
                        "Connection reset by peer")
    stuck = RuntimeError("[../unbound_buffer.cc:78] Timed out waiting 7000ms for recv operation")
    assert "did not take part in time" in str(faults.peer_error("barrier", stuck, hd.world()))
    other = RuntimeError("shape mismatch")
    assert faults.peer_error("all_reduce", other, hd.world()) is other  # user errors pass through untouched


# -- hal run ---------------------------------------------------------------------------------


def _run_args(*argv: str) -> argparse.Namespace:
    from hal.cli import build_parser

    return build_parser().parse_args(["run", *argv])


def test_run_defaults_to_standalone_and_keeps_script_args() -> None:
    from hal.commands.run import torchrun_argv

    args = _run_args("-n", "2", "train.py", "--lr", "0.1", "-n", "5")
    assert torchrun_argv(args, 2) == ["--nproc-per-node=2", "--standalone", "train.py",
                                      "--lr", "0.1", "-n", "5"]


def test_rendezvous_flags_pass_through_and_turn_standalone_off() -> None:
    from hal.commands.run import torchrun_argv

    args = _run_args("--nnodes", "2", "--node-rank", "1", "--rdzv-endpoint", "10.0.0.1:29400",
                     "--rdzv-backend", "c10d", "--rdzv-id", "job7", "--master-addr", "10.0.0.1",
                     "--master-port", "29500", "s.py")
    assert torchrun_argv(args, 4) == [
        "--nproc-per-node=4", "--nnodes=2", "--node-rank=1", "--rdzv-endpoint=10.0.0.1:29400",
        "--rdzv-backend=c10d", "--rdzv-id=job7", "--master-addr=10.0.0.1",
        "--master-port=29500", "s.py"]
    from torch.distributed.run import parse_args

    parsed = parse_args(torchrun_argv(args, 4))  # torchrun itself accepts what hal forwards
    assert (parsed.nnodes, parsed.node_rank, parsed.rdzv_id, parsed.standalone) == \
        ("2", 1, "job7", False)


def test_default_process_count_follows_the_selected_backend(
        register: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from hal.commands.run import default_nproc

    assert default_nproc()[0] == 1  # cpu: one process
    register(_minimal("fakecuda", "cuda", "nccl"))
    hal.reset()
    monkeypatch.setenv("HAL_DEVICE", "fakecuda")
    assert default_nproc() == (2, "fakecuda: 2 device(s)")


def test_run_refuses_more_processes_than_devices(
        register: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    from hal.commands.run import run

    register(_minimal("fakexpu", "xpu", "xccl"))
    monkeypatch.setenv("HAL_DEVICE", "fakexpu")
    script = tmp_path / "s.py"
    script.write_text("")
    with pytest.raises(hal.ConfigError, match=r"hal run -n 3: fakexpu: 2 device\(s\)"):
        run(_run_args("-n", "3", str(script)))


class _FakeScatter:
    """torch's reduce_scatter for rank 0 of 2 whose peer holds the same tensor; can fail once."""

    def __init__(self) -> None:
        self.calls = 0
        self.fail_next: Exception | None = None

    def __call__(self, out: torch.Tensor, full: torch.Tensor, op: Any = None) -> None:
        self.calls += 1
        if self.fail_next is not None:
            exc, self.fail_next = self.fail_next, None
            raise exc
        if out.numel() * 2 != full.numel():
            raise RuntimeError("Check failed: outputShape[0] * worldSize == inputShape[0]")
        out.copy_(full[: out.numel()] * 2)


def test_reduce_scatter_skips_its_checks_for_the_same_buffers_and_rechecks_after_a_failure(
        monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _FakeScatter()
    checks: list[int] = []
    real_ok = collectives._scatter_shapes_ok
    monkeypatch.setattr(STATE, "world", hd.World(0, 2, 0, torch.device("cpu"), "gloo"))
    monkeypatch.setattr(STATE, "scatter", fake)
    monkeypatch.setattr(collectives, "_scatter_shapes_ok",
                        lambda *a: checks.append(1) or real_ok(*a))
    monkeypatch.setattr(STATE, "last_scatter", [])
    full, out = torch.arange(4.0), torch.empty(2)
    assert hd.reduce_scatter(full, out=out).tolist() == [0.0, 2.0] and len(checks) == 1
    hd.reduce_scatter(full, out=out)
    assert (fake.calls, len(checks)) == (2, 1)  # same buffers: straight to torch
    hd.reduce_scatter(full, "max", out=out)
    assert len(checks) == 2  # another op: checked again
    fake.fail_next = RuntimeError("a non-peer hiccup")
    assert hd.reduce_scatter(full, "max", out=out).tolist() == [0.0, 2.0]
    assert len(checks) == 3  # the failure dropped the shortcut and the checks ran again
    out.resize_(3)  # resized in place: torch refuses, hal explains
    with pytest.raises(hal.ConfigError, match="reduce_scatter: out has shape"):
        hd.reduce_scatter(full, "max", out=out)
