"""The selection policy: HAL_DEVICE forms, priorities, fallback with a reason, strictness, caching."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import warnings
from collections.abc import Sequence

import pytest
import torch

import hal
from hal import plugins
from hal.backends.cpu import CpuBackend
from hal.contract import Backend, Probe
from hal.errors import ConfigError, DeviceUnavailableError
from hal.selection import HalFallbackWarning, decide, parse_device_env


class Fake(Backend):
    """A backend whose availability and device count are constructor arguments."""

    def __init__(self, name: str, device_type: str, priority: int, available: bool,
                 count: int = 1, reason: str = "") -> None:
        self.name = name  # type: ignore[misc]
        self.device_type = device_type  # type: ignore[misc]
        self.priority = priority  # type: ignore[misc]
        self._probe = Probe(available, reason or ("ok" if available else "no driver"), count)
        self.calls = 0

    def probe(self) -> Probe:
        self.calls += 1
        return self._probe


def _world(*, gpu: bool = False, npu: bool = False, gpu_count: int = 2) -> list[Backend]:
    return [
        Fake("gpu", "meta", 100, gpu, gpu_count if gpu else 0, "" if gpu else "CPU build"),
        Fake("gpu2", "meta", 100, False, 0, "not this build"),
        Fake("npu", "npu_t", 90, npu, 8 if npu else 0, "" if npu else "extension not installed"),
        CpuBackend(),
    ]


def test_auto_picks_highest_priority_available() -> None:
    sel = decide(_world(gpu=True, npu=True), {})
    assert (sel.backend.name, sel.index, sel.fell_back) == ("gpu", 0, False)
    assert "highest-priority" in sel.reason
    sel = decide(_world(npu=True), {})
    assert sel.backend.name == "npu"
    assert "gpu: CPU build" in sel.reason


def test_auto_on_cpu_only_explains_every_other_backend() -> None:
    sel = decide(_world(), {})
    assert sel.backend.name == "cpu" and sel.index is None
    assert sel.device_string == "cpu"
    assert {c.name: c.available for c in sel.candidates} == {
        "gpu": False, "gpu2": False, "npu": False, "cpu": True}
    for why in ("gpu: CPU build", "gpu2: not this build", "npu: extension not installed"):
        assert why in sel.reason


@pytest.mark.parametrize(("env", "backend", "index"), [
    ("cpu", "cpu", None),
    ("npu", "npu", 0),
    ("npu:3", "npu", 3),
    ("npu_t:5", "npu", 5),          # a torch device type resolves to its backend
    ("gpu:1", "gpu", 1),
    ("meta:1", "gpu", 1),           # device type shared by two backends: the available one
    ("cpu:0", "cpu", 0),
    ("NPU", "npu", 0),
    ("gpu2,npu,cpu", "npu", 0),     # ordered list: first available, no warning
    (" npu , cpu ", "npu", 0),
])
def test_hal_device_forms(env: str, backend: str, index: int | None) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sel = decide(_world(gpu=True, npu=True), {"HAL_DEVICE": env})
    assert (sel.backend.name, sel.index, sel.fell_back) == (backend, index, False)


def test_a_name_that_is_also_a_device_type_reaches_the_other_backends() -> None:
    """On a ROCm build, HAL_DEVICE=cuda:1 is a torch device string for the rocm backend."""
    world = [Fake("cuda", "cuda", 100, False, 0, "not a CUDA build"),
             Fake("rocm", "cuda", 100, True, 2), CpuBackend()]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sel = decide(world, {"HAL_DEVICE": "cuda:1"})
    assert (sel.backend.name, sel.index, sel.fell_back) == ("rocm", 1, False)
    assert "skipped cuda: not a CUDA build" in sel.reason
    # the named backend still comes first when it is available
    world[0] = Fake("cuda", "cuda", 100, True, 4)
    assert decide(world, {"HAL_DEVICE": "cuda"}).backend.name == "cuda"


def test_unavailable_request_falls_back_with_a_reason() -> None:
    sel = decide(_world(npu=True), {"HAL_DEVICE": "gpu"})
    assert sel.fell_back and sel.backend.name == "npu"
    assert sel.warning is not None and "gpu: CPU build" in sel.warning
    assert "falling back to npu" in sel.warning


def test_strict_makes_fallback_an_error() -> None:
    with pytest.raises(DeviceUnavailableError, match="HAL_STRICT=1") as info:
        decide(_world(), {"HAL_DEVICE": "gpu", "HAL_STRICT": "1"})
    assert "gpu: CPU build" in str(info.value)
    # strict is satisfied by any entry of the list
    assert decide(_world(), {"HAL_DEVICE": "gpu,cpu", "HAL_STRICT": "1"}).backend.name == "cpu"


def test_unknown_torch_device_type_without_backend_falls_back() -> None:
    sel = decide(_world(), {"HAL_DEVICE": "mps"})
    assert sel.fell_back and sel.backend.name == "cpu"
    assert "no installed hal backend drives torch device type 'mps'" in sel.reason


@pytest.mark.parametrize(("value", "message"), [
    ("bogus", "unknown backend or device type 'bogus'; accepted: cpu, gpu, gpu2, meta, npu"),
    ("gpu:abc", "device index 'abc' in 'gpu:abc' is not a non-negative integer"),
    ("cpu:7", "index 7 in 'cpu:7' is out of range; cpu has 1 device(s)"),
    ("npu:8", "index 8 in 'npu:8' is out of range; npu has 8 device(s)"),
    ("gpu:-1", "device index '-1'"),
    ("", "HAL_DEVICE is set but empty"),
    ("cpu,,npu", "'' is not a backend name"),
    ("cpu:1:2", "is not a backend name"),
])
def test_bad_hal_device_is_a_one_line_value_error(value: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        decide(_world(npu=True), {"HAL_DEVICE": value})
    assert isinstance(info.value, ValueError)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_local_rank_picks_the_index_under_torchrun() -> None:
    assert decide(_world(gpu=True), {"LOCAL_RANK": "1"}).index == 1
    assert decide(_world(), {"LOCAL_RANK": "1"}).index is None  # host device has no index
    with pytest.raises(ConfigError, match="LOCAL_RANK=2 but gpu has only 2"):
        decide(_world(gpu=True), {"LOCAL_RANK": "2"})
    with pytest.raises(ConfigError, match="LOCAL_RANK='x'"):
        decide(_world(gpu=True), {"LOCAL_RANK": "x"})
    # an explicit index wins over LOCAL_RANK
    assert decide(_world(gpu=True), {"LOCAL_RANK": "1", "HAL_DEVICE": "gpu:0"}).index == 0


def test_priority_ties_are_broken_by_name_deterministically() -> None:
    a = Fake("b_second", "meta", 100, True)
    b = Fake("a_first", "meta", 100, True)
    assert decide([a, b, CpuBackend()], {}).backend.name == "a_first"


def test_a_probe_that_raises_or_lies_is_unavailable_not_fatal() -> None:
    class Raises(Fake):
        def probe(self) -> Probe:
            raise OSError("driver exploded")

    class Lies(Fake):
        def probe(self) -> Probe:
            return True  # type: ignore[return-value]

    sel = decide([Raises("r", "meta", 100, True), Lies("l", "meta", 99, True), CpuBackend()], {})
    assert sel.backend.name == "cpu"
    reasons = {c.name: c.reason for c in sel.candidates}
    assert reasons["r"] == "probe raised OSError: driver exploded"
    assert reasons["l"] == "probe() returned bool, expected hal.Probe"


def test_parse_device_env_returns_requests_in_order() -> None:
    reqs = parse_device_env("ascend,cuda:1,cpu")
    assert [(r.name, r.index) for r in reqs] == [("ascend", None), ("cuda", 1), ("cpu", None)]


class _Counting:
    """A plugin whose backend counts probes and is slow to answer, to expose races."""

    def __init__(self) -> None:
        self.backend = Fake("slow", "meta", 60, True, 4)
        orig = self.backend.probe

        def slow_probe() -> Probe:
            threading.Event().wait(0.05)
            return orig()

        self.backend.probe = slow_probe  # type: ignore[method-assign]

    @hal.hookimpl
    def hal_backends(self) -> Sequence[Backend]:
        return [self.backend]


def test_decided_once_for_32_threads_and_reset_forgets() -> None:
    plugin = _Counting()
    with plugins.registered(plugin, "slow"):
        hal.reset()
        barrier = threading.Barrier(32)
        results: list[torch.device] = []

        def worker() -> None:
            barrier.wait()
            results.append(hal.get_device())

        threads = [threading.Thread(target=worker) for _ in range(32)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert results == [torch.device("meta:0")] * 32
        assert plugin.backend.calls == 1
        assert all(r is results[0] for r in results)  # the same cached object
        hal.get_device()
        assert plugin.backend.calls == 1
        hal.reset()
        hal.get_device()
        assert plugin.backend.calls == 2


def test_reset_rereads_hal_device(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOYACCEL_DEVICES", "2")
    installed = {p["name"] for p in plugins.list_plugins()}
    if "toyaccel" not in installed:
        pytest.skip("hal-toyaccel test plugin is not installed (tox installs it)")
    hal.reset()
    assert hal.get_device() == torch.device("meta:0")
    monkeypatch.setenv("HAL_DEVICE", "cpu")
    assert hal.get_device() == torch.device("meta:0")  # cached until reset
    hal.reset()
    assert hal.get_device() == torch.device("cpu")
    assert hal.get_backend().name == "cpu"


def test_fallback_warns_once_per_decision(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HAL_DEVICE", "toyaccel")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if "toyaccel" not in {b.name for b in hal.list_backends()}:
            pytest.skip("hal-toyaccel test plugin is not installed (tox installs it)")
        for _ in range(5):
            assert hal.get_device() == torch.device("cpu")
    relevant = [w for w in caught if issubclass(w.category, HalFallbackWarning)]
    assert len(relevant) == 1
    assert "TOYACCEL_DEVICES is not set" in str(relevant[0].message)


def test_select_as_dict_is_json_ready() -> None:
    import json

    data = json.loads(json.dumps(hal.select().as_dict()))
    assert data["backend"] == "cpu" and data["device"] == "cpu"
    assert any(c["name"] == "cpu" and c["available"] for c in data["candidates"])


def test_contract_module_and_getters_work_in_either_import_order() -> None:
    """The contract module is a plain module whatever was imported first (no callable module)."""
    script = (
        "import hal, sys\n"
        "order = sys.argv[1]\n"
        "if order == 'getter-first':\n"
        "    assert hal.get_backend().name == 'cpu'\n"
        "import hal.contract as m\n"
        "assert m.Backend is hal.Backend and not callable(m)\n"
        "assert hal.get_backend().name == 'cpu' and hal.get_backend('cpu') is hal.get_backend()\n"
        "print('ok')\n"
    )
    for order in ("getter-first", "module-first"):
        done = subprocess.run(
            [sys.executable, "-c", script, order], capture_output=True, text=True, timeout=120,
            env={**os.environ, "HAL_DEVICE": "cpu"},
        )
        assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


def test_old_names_warn_once_and_still_work() -> None:
    script = (
        "import warnings, hal\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        "    assert hal.backend().name == 'cpu'\n"
        "    assert hal.backend().name == 'cpu'\n"
        "    assert {p['name'] for p in hal.plugin_list()} >= {'cpu'}\n"
        "dep = [str(w.message) for w in caught if w.category is DeprecationWarning]\n"
        "assert len(dep) == 2 and 'hal.get_backend' in dep[0] and 'hal.list_plugins' in dep[1], dep\n"
        "print('ok')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
        env={**os.environ, "HAL_DEVICE": "cpu"},
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


# -- per-rank device binding by the launcher (issue 14 finding 3) ---------------------------


class Bound(Fake):
    visible_devices_env = ("GPUX_VISIBLE_DEVICES",)


@pytest.mark.parametrize(("count", "rank"), [(1, 3), (2, 5)])
def test_a_rank_bound_by_the_launcher_uses_index_0_and_says_why(count: int, rank: int) -> None:
    """Slurm --gpus-per-task / per-task visible-device lists: LOCAL_RANK 0..n-1, each rank sees
    only its own device(s)."""
    world = [Bound("gpu", "meta", 100, True, count), CpuBackend()]
    sel = decide(world, {"LOCAL_RANK": str(rank), "GPUX_VISIBLE_DEVICES": "3"})
    assert (sel.backend.name, sel.index) == ("gpu", 0)
    assert f"LOCAL_RANK={rank} but GPUX_VISIBLE_DEVICES gives this rank {count} device(s)" in sel.reason


def test_true_oversubscription_is_still_refused() -> None:
    world = [Bound("gpu", "meta", 100, True, 1), CpuBackend()]
    with pytest.raises(ConfigError, match=r"LOCAL_RANK=3 but gpu has only 1 visible device.*GPUX_VISIBLE"):
        decide(world, {"LOCAL_RANK": "3"})
    assert decide(world, {"LOCAL_RANK": "0"}).index == 0  # within range: unchanged


@pytest.mark.parametrize(("env", "named"), [
    ({"HAL_DEVICE": "gpu:²"}, "device index '²'"),
    ({"HAL_DEVICE": "gpu:" + "9" * 5000}, "is not a non-negative integer"),
    ({"LOCAL_RANK": "²"}, "LOCAL_RANK='²'"),
    ({"LOCAL_RANK": "9" * 5000}, "LOCAL_RANK="),
    ({"HAL_STRICT": "garbage"}, "HAL_STRICT='garbage' is not a switch"),
])
def test_unicode_digits_and_huge_numbers_are_config_errors(env: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError, match=None) as info:
        decide(_world(gpu=True), env)
    assert named in str(info.value) and len(str(info.value)) < 400


@pytest.mark.parametrize("value", ["1", "true", "YES", "on", "0", "false", "No", "off", ""])
def test_hal_strict_accepts_its_documented_switch_words(value: str) -> None:
    decide(_world(gpu=True), {"HAL_STRICT": value})


_FORK_DURING_AN_IMPORT = r"""
import os, sys, threading
import hal
inside, release = threading.Event(), threading.Event()

def hold(event, args):
    # Park the selecting thread inside torch's import (torch's module lock held), so the fork
    # below lands there every time, however loaded the machine is.
    if (event == "import" and str(args[0]).startswith(sys.argv[1]) and not inside.is_set()
            and threading.current_thread().name == "selecting"):
        inside.set()
        release.wait(60)

sys.addaudithook(hold)
threading.Thread(target=hal.select, name="selecting", daemon=True).start()
assert inside.wait(60)
pid = os.fork()
if pid == 0:
    try:
        print("child", hal.get_device(), flush=True)
    except hal.HalError as exc:
        print("child refused:", exc, flush=True)
    os._exit(0)
release.set()
_, status = os.waitpid(pid, 0)
print("parent", os.waitstatus_to_exitcode(status), hal.get_device(), flush=True)
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.parametrize(("parked_at", "named"), [
    ("torch.", "'torch"),  # select() importing torch before its probes
    ("hal.backends.", "'hal.backends."),  # select() loading the built-in plugins
])
def test_a_child_forked_while_another_thread_imports_inside_select_refuses_at_once(
        parked_at: str, named: str) -> None:
    # Before: the child waited forever on the import lock of a thread it does not have.
    env = {**os.environ, "HAL_PROBE_TIMEOUT": "30"}
    env.pop("HAL_DEVICE", None)
    proc = subprocess.run([sys.executable, "-c", _FORK_DURING_AN_IMPORT, parked_at],
                          capture_output=True, text=True, timeout=120, env=env)
    lines = proc.stdout.splitlines()
    assert len(lines) == 2, (proc.stdout, proc.stderr[-2000:])
    assert lines[0].startswith("child refused: this process was forked while another thread was "
                               f"importing {named}"), lines
    assert "'spawn'" in lines[0]
    assert lines[1] == "parent 0 cpu"  # the parent's own selection is unharmed
