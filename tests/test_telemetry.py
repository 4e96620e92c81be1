"""Telemetry: the value type and its checks, safe sampling, watch(), and every vendor's reader.

Vendor readers run on the fakes in ``hal.backends.<vendor>.testing`` (``fake_nvml``, the one fake
of pynvml the backend tests use too, and ``fake_telemetry`` for amdsmi, DCMI and the Intel sysfs
tree; written from each library's documented names and units, apart from the readers); the NVML
names are also checked against the real nvidia-ml-py installed here.
"""

from __future__ import annotations

import ast
import inspect
import os
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import StubBackend

import hal
from hal.backends.ascend.testing import fake_telemetry as fake_dcmi
from hal.backends.cpu import CpuBackend
from hal.backends.cpu.telemetry import CpuTelemetry
from hal.backends.cuda import telemetry as cuda_telemetry
from hal.backends.cuda.testing import fake_nvml
from hal.backends.cuda.testing import fake_telemetry as fake_cuda
from hal.backends.rocm.testing import fake_telemetry as fake_amdsmi
from hal.backends.xpu import telemetry as xpu_telemetry
from hal.backends.xpu.testing import fake_telemetry as fake_xpu
from hal.errors import ConfigError
from hal.telemetry import ProcessUsage, Sampler, Telemetry, check_telemetry, process_usage
from hal.testing import conformance
from hal.testing.fake_tree import make_fake_tree
from hal.validate import MAX_PROCESSES

MiB = 1 << 20
GONE = 2**22 + 1  # above the default pid_max: never a live process


# -- the value and its checks -------------------------------------------------------------


def test_exported_and_frozen() -> None:
    t = hal.Telemetry(source="test", memory_used=1, memory_total=4)
    assert hal.Telemetry is Telemetry and t.memory_fraction == 0.25
    with pytest.raises(AttributeError):
        t.power = 1.0  # type: ignore[misc]


@pytest.mark.parametrize(("fields", "needle"), [
    ({"utilization": 37.0}, "fraction 0..1"),
    ({"power": 87412.0}, "watts"),
    ({"temperature": 34000.0}, "degrees Celsius"),
    ({"clock": 1_410_000.0}, "MHz"),
    ({"memory_used": 1.5}, "int >= 0 (bytes)"),
    ({"memory_used": 5, "memory_total": 4}, "memory_used 5 > memory_total 4"),
    ({"power": float("nan")}, "finite"),
    ({"unit_utilization": (0.5, 2.0)}, "fractions 0..1"),
    ({"processes": (ProcessUsage(1, memory=-1),)}, "memory -1"),
    ({"processes": ({"pid": 1},)}, "expected ProcessUsage"),
    ({"source": ""}, "source"),
])
def test_check_telemetry_names_unit_mistakes(fields: dict[str, Any], needle: str) -> None:
    values: dict[str, Any] = {"source": "test", **fields}
    with pytest.raises(ValueError, match=re.escape(needle)):  # raises, as validate's check_* do
        check_telemetry(Telemetry(**values))


def test_check_telemetry_accepts_unknowns() -> None:
    unknown = Telemetry(source="none: no library")
    assert check_telemetry(unknown) is unknown
    with pytest.raises(ValueError, match=r"^returned str, expected hal\.Telemetry$"):
        check_telemetry("nope")


def test_process_usage_skips_exited_processes() -> None:
    got = process_usage([(GONE, 10 * MiB), (os.getpid(), 5 * MiB)])
    assert [p.pid for p in got] == [os.getpid()]
    me = got[0]
    assert me.memory == 5 * MiB and me.user and me.command and "python" in me.command


# -- sampling: a broken backend costs only its rows -----------------------------------------


class Steady(StubBackend):
    name = "steady"
    probe_reason, probe_count = "two", 2

    def telemetry(self, index: int = 0) -> hal.Telemetry:
        return hal.Telemetry(source="test", memory_used=index, memory_total=10)


class Raising(Steady):
    name = "raising"

    def telemetry(self, index: int = 0) -> hal.Telemetry:
        raise OSError("driver gone")


class Percent(Steady):
    name = "percent"

    def telemetry(self, index: int = 0) -> hal.Telemetry:
        return hal.Telemetry(source="test", utilization=50.0)


class Hanging(Steady):
    name = "hanging"

    def __init__(self) -> None:
        self.release = threading.Event()
        self.calls = 0

    def telemetry(self, index: int = 0) -> hal.Telemetry:
        self.calls += 1
        self.release.wait(60)
        return hal.Telemetry(source="late")


@pytest.fixture
def hanging() -> Iterator[Hanging]:
    h = Hanging()
    try:
        yield h
    finally:
        h.release.set()


def test_sampler_isolates_raising_wrong_and_hanging_backends(hanging: Hanging) -> None:
    # A generous timeout: a loaded machine must not make the healthy backends look hung.
    sampler = Sampler([Steady(), Raising(), Percent(), hanging], timeout=3)
    try:
        sampler.discover(timeout=60)
        assert sampler.devices == {"steady": 2, "raising": 2, "percent": 2, "hanging": 2}
        first = {(r.backend, r.index): r for r in sampler.sample()}
        assert first[("steady", 1)].telemetry is not None
        assert first[("steady", 1)].telemetry.memory_used == 1
        assert first[("raising", 0)].error == "telemetry raised OSError: driver gone"
        assert "outside 0..1" in (first[("percent", 0)].error or "")
        assert "did not answer within 3 s" in (first[("hanging", 1)].error or "")
        second = {(r.backend, r.index): r for r in sampler.sample()}
        assert "has not answered" in (second[("hanging", 0)].error or "")
        assert second[("steady", 0)].telemetry is not None  # the others keep updating
        assert hanging.calls == 1  # a hung backend is not called again until it answers
    finally:
        hanging.release.set()
        sampler.close()


class Exits(Steady):
    name = "exits"

    def telemetry(self, index: int = 0) -> hal.Telemetry:
        raise SystemExit(3)


class Interrupts(Steady):
    name = "interrupts"

    def telemetry(self, index: int = 0) -> hal.Telemetry:
        raise KeyboardInterrupt


class ExitsPlugin:
    @hal.hookimpl
    def hal_backends(self) -> list[hal.Backend]:
        return [Exits()]


def test_sys_exit_in_a_telemetry_reader_is_recorded_on_its_plugin() -> None:
    # Neither swallowed silently nor the end of hal: the rows say so, the plugin's record too.
    from hal import plugins

    with plugins.registered(ExitsPlugin(), "exits-plugin") as host:
        backend = next(b for b in host.backends() if b.name == "exits")
        sampler = Sampler([backend, Steady()], timeout=30)
        sampler.discover(timeout=60)
        rows = {(r.backend, r.index): r for r in sampler.sample()}
        record = next(p for p in plugins.list_plugins() if p["name"] == "exits-plugin")
    assert rows[("exits", 1)].error == "telemetry() called sys.exit(3) (recorded, hal keeps running)"
    assert rows[("steady", 0)].telemetry is not None  # the others keep their rows
    assert "backend 'exits': telemetry() called sys.exit(3)" in str(record["error"]), record


def test_keyboard_interrupt_in_a_reader_propagates_from_sampler_and_watch() -> None:
    from hal.validate import PluginInterrupt

    sampler = Sampler([Interrupts()], timeout=30)
    sampler.discover(timeout=60)
    with pytest.raises(PluginInterrupt, match="'interrupts': telemetry"):
        sampler.sample()
    with pytest.raises(KeyboardInterrupt), hal.telemetry.watch(Interrupts(), interval=60):
        raise AssertionError("the first sample must already stop the block")


def test_no_blanket_except_base_exception_outside_the_boundary() -> None:
    # hal/validate.py is the plugin boundary; elsewhere a handler of BaseException must end by
    # re-raising (cleanup), or be listed here with why it is not a plugin call swallowed.
    allowed = {
        "doctor/torchinfo.py": "import torch in the doctor: re-raises KeyboardInterrupt, reports "
                               "an extension's SystemExit as the import's failure",
        "planner/hub.py": "a Hub name lookup in a thread: the exception is raised in the caller",
        "testing/fake_allocator.py": "a test helper that returns the OOM it provoked",
    }
    root = Path(hal.__file__).parent
    found: dict[str, list[int]] = {}
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.ExceptHandler):
                continue
            caught = ast.unparse(node.type) if node.type is not None else "BaseException"
            if "BaseException" not in caught or rel == "validate.py":
                continue
            last = node.body[-1]
            if isinstance(last, ast.Raise) and last.exc is None:
                continue  # cleanup, then the same exception goes on
            found.setdefault(rel, []).append(node.lineno)
    assert set(found) == set(allowed), found


def test_sampler_records_unavailable_backends() -> None:
    class Absent(Steady):
        name = "absent"

        def probe(self) -> hal.Probe:
            return hal.Probe(False, "no absent device here", 0)

    sampler = Sampler([Absent(), CpuBackend()], timeout=60)
    sampler.discover()
    assert sampler.unavailable == {"absent": "no absent device here"}
    rows = sampler.sample()
    assert [(r.backend, r.index) for r in rows] == [("cpu", 0)]
    sampler.close()


# -- in-process watch() ---------------------------------------------------------------------


def test_watch_returns_series_and_peak() -> None:
    data: list[bytearray] = []
    with hal.telemetry.watch(CpuBackend(), interval=0.05) as w:
        data.append(bytearray(64 * MiB))
    del data
    assert len(w.samples) >= 2 and len(w.times) == len(w.samples)  # at start and at end
    assert w.backend == "cpu" and w.errors == []
    used = [s.memory_used for s in w.samples]
    assert w.peak_memory == max(u for u in used if u is not None)
    assert [v for _, v in w.series("memory_used")] == used
    assert w.times == sorted(w.times)


def test_watch_defaults_to_the_selected_device() -> None:
    with hal.telemetry.watch(interval=1) as w:
        pass
    assert w.backend == hal.select().backend.name and len(w.samples) >= 2


@pytest.mark.parametrize("bad", [0, -1, float("nan"), 1e9, "fast"])
def test_watch_rejects_bad_interval(bad: Any) -> None:
    with pytest.raises(ConfigError, match="interval"), hal.telemetry.watch(interval=bad):
        pass


# -- CPU: real figures here, exact figures from a fake tree ---------------------------------


def test_cpu_telemetry_real_figures() -> None:
    b = CpuBackend()
    first = b.telemetry(0)
    assert first.memory_total and first.memory_total > 0
    assert first.memory_used is not None and 0 < first.memory_used <= first.memory_total
    second = b.telemetry(0)
    assert second.utilization is not None and 0.0 <= second.utilization <= 1.0
    assert second.unit_utilization and len(second.unit_utilization) == len(os.sched_getaffinity(0))
    assert second.processes and all(isinstance(p, ProcessUsage) for p in second.processes)
    checked = check_telemetry(second)  # real figures pass; only the strings may come back escaped
    assert (checked.memory_total, checked.memory_used, checked.utilization) == (
        second.memory_total, second.memory_used, second.utilization)
    assert [p.pid for p in checked.processes or ()] == [p.pid for p in second.processes][:MAX_PROCESSES]
    assert all(p.command is None or p.command.isprintable() for p in checked.processes or ())
    conformance.check_telemetry(b)


def test_cpu_telemetry_process_with_a_newline_in_its_command_is_escaped(tmp_path: Path) -> None:
    """A real process whose argv holds a newline (``bash -c "...\n..."``, as CI runs) is listed
    on one escaped line, with its figures intact (CI once failed on exactly this).

    The list holds the largest processes only, so the root given to the backend holds just
    the child's real /proc entry (a symlink): the listing cannot depend on the host's load."""
    import subprocess
    import sys

    child = subprocess.Popen([sys.executable, "-c", "import time\ntime.sleep(60)"])
    try:
        (tmp_path / "proc").mkdir()
        (tmp_path / "proc" / str(child.pid)).symlink_to(f"/proc/{child.pid}")
        deadline = time.monotonic() + 30  # the exec'd interpreter's argv, not the fork's
        while "time.sleep" not in Path(f"/proc/{child.pid}/cmdline").read_text(errors="replace"):
            assert time.monotonic() < deadline, "the child never exec'd"
            time.sleep(0.01)
        b = CpuBackend(str(tmp_path))
        checked = check_telemetry(b.telemetry(0))
        mine = [p for p in checked.processes or () if p.pid == child.pid]
        assert mine, "the child is not listed"
        assert mine[0].memory is not None and mine[0].memory > 0
        assert mine[0].command is not None and mine[0].command.isprintable()
        assert "import time" in mine[0].command and "time.sleep(60)" in mine[0].command
    finally:
        child.kill()
        child.wait()


def test_cpu_telemetry_from_fake_tree(tmp_path: Path) -> None:
    """/proc/stat deltas per core, RAPL watts from the energy counter, coretemp, cpufreq."""
    stat, rapl, hw = "proc/stat", "sys/class/powercap/intel-rapl:0", "sys/class/hwmon/hwmon2"
    make_fake_tree(tmp_path, files={
        stat: "cpu  1 1 1 1\ncpu0 100 0 100 800 0 0 0 0\ncpu1 0 0 0 1000 0 0 0 0\n",
        f"{rapl}/name": "package-0\n", f"{rapl}/energy_uj": "1000000\n",
        f"{rapl}/max_energy_range_uj": "262143328850\n",
        f"{rapl}/constraint_0_power_limit_uw": "125000000\n",
        "sys/class/powercap/intel-rapl:0:0/name": "core\n",
        f"{hw}/name": "coretemp\n", f"{hw}/temp1_label": "Package id 0\n",
        f"{hw}/temp1_input": "47000\n", f"{hw}/temp2_label": "Core 0\n", f"{hw}/temp2_input": "52000\n",
        **{f"sys/devices/system/cpu/cpu{cpu}/cpufreq/scaling_cur_freq": f"{khz}\n"
           for cpu, khz in ((0, 2_400_000), (1, 3_000_000))},
        "proc/4242/statm": "1000 300 10 1 0 100 0\n", "proc/4242/cmdline": "python\0serve.py\0",
        "proc/4243/statm": "1000 50 10 1 0 100 0\n", "proc/4243/comm": "kworker\n",
        "proc/4243/cmdline": "",
    }, name="")
    now = [100.0]
    reader = CpuTelemetry(str(tmp_path), memory=lambda: (8 << 30, 6 << 30),
                          clock=lambda: now[0], cpus={0, 1})
    first = reader.read("Fake CPU")
    assert first.utilization is None and first.power is None and first.power_limit == 125.0
    make_fake_tree(tmp_path, files={
        stat: "cpu  1 1 1 1\ncpu0 150 0 150 900 0 0 0 0\ncpu1 0 0 0 1100 0 0 0 0\n",
        f"{rapl}/energy_uj": "31000000\n"}, name="")
    now[0] = 102.0
    t = reader.read("Fake CPU")
    assert t.unit_utilization == (0.5, 0.0) and t.utilization == 0.25
    assert t.power == 15.0  # 30 J over 2 s
    assert t.temperature == 47.0  # the package sensor, not the hottest core
    assert t.clock == 2700.0
    assert (t.memory_used, t.memory_total) == (2 << 30, 8 << 30)
    page = os.sysconf("SC_PAGE_SIZE")
    assert t.processes is not None
    assert [(p.pid, p.memory, p.command) for p in t.processes] == [
        (4242, 300 * page, "python serve.py"), (4243, 50 * page, "[kworker]")]
    assert check_telemetry(t) is t


# -- vendor readers on their fakes ----------------------------------------------------------


def assert_reading(t: Telemetry, **expected: object) -> None:
    """Each named field of the reading ``t`` equals its expected value (the failure shows them all)."""
    assert {field: getattr(t, field) for field in expected} == expected


def test_cuda_telemetry_from_nvml() -> None:
    b = fake_cuda.make_backend(environ={})
    a100 = b.telemetry(0)
    assert_reading(a100, source="NVML (nvidia-ml-py)", name="NVIDIA A100-SXM4-80GB",
                   memory_used=4213 * MiB, memory_total=81920 * MiB, utilization=0.37, power=87.412,
                   power_limit=400.0, temperature=34.0, clock=1410.0, memory_clock=1593.0)
    assert a100.processes == (ProcessUsage(os.getpid(), a100.processes[0].user, 4096 * MiB,
                                           a100.processes[0].command),)  # the exited pid is gone
    h100 = b.telemetry(1)
    assert h100.power is None and h100.power_limit == 700.0 and h100.processes == ()
    conformance.check_telemetry(b)


def test_cuda_visible_devices_pick_the_nvml_device() -> None:
    nvml = fake_nvml.busy_nvml()
    uuid = fake_nvml.gpu_uuid(nvml, 1)
    for value in ("1", uuid[:12]):
        b = fake_cuda.make_backend(nvml, environ={"CUDA_VISIBLE_DEVICES": value})
        assert b.probe().device_count == 1
        assert b.telemetry(0).name == "NVIDIA H100 80GB HBM3"
    assert cuda_telemetry.physical_index("MIG-abc", 0, ["GPU-1"]) is None
    lost = fake_cuda.make_backend(nvml, environ={"CUDA_VISIBLE_DEVICES": "0"}).telemetry(1)
    assert lost.source.startswith("none: NVML: LookupError") and lost.memory_used is None


def test_xpu_without_sysfs_says_so(tmp_path: Path) -> None:
    t = fake_xpu.make_backend(tmp_path).telemetry(0)  # an empty tree: no Intel GPU in sysfs
    assert t.source.startswith("none: sysfs: LookupError") and t.power is None


def test_cuda_without_nvml_says_so_without_torch_cuda() -> None:
    b = fake_cuda.make_backend(nvml=False, environ={})  # nvidia-ml-py not installed
    assert b.probe().device_count == 2
    t = b.telemetry(0)
    assert t.memory_used is None and "pip install nvidia-ml-py" in t.source


def test_nvml_names_exist_in_real_pynvml() -> None:
    """Every pynvml function the reader calls, and every one the fake offers, is real."""
    pynvml = pytest.importorskip("pynvml")
    tree = ast.parse(inspect.getsource(cuda_telemetry))
    used = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)
            and n.attr.startswith("nvml") and n.attr != "nvml"}
    offered = {n for n in dir(fake_nvml.FakeNvml) if n.startswith(("nvml", "NVML"))}
    assert used and used <= offered
    missing = sorted(n for n in used | offered if not hasattr(pynvml, n))
    assert missing == []
    for name in sorted(n for n in offered if n.startswith("NVML_")):
        assert getattr(pynvml, name) == getattr(fake_nvml.FakeNvml, name), name
    assert issubclass(pynvml.NVMLError_NotSupported, pynvml.NVMLError)
    assert pynvml.NVMLError_NotSupported(3).value == fake_nvml.FakeNVMLNotSupported().value


def test_rocm_telemetry_from_amdsmi() -> None:
    b = fake_amdsmi.make_backend(environ={})
    mi300 = b.telemetry(0)
    assert_reading(mi300, source="amdsmi", name="AMD Instinct MI300X", memory_used=11834 * MiB,
                   memory_total=196592 * MiB, utilization=0.62, power=398.0, power_limit=750.0,
                   temperature=48.0,  # hotspot: MI300 has no edge sensor
                   clock=2100.0, memory_clock=1300.0)
    assert mi300.processes is not None and [p.pid for p in mi300.processes] == [os.getpid()]
    mi250 = b.telemetry(1)
    assert mi250.power == 92.0  # average socket power where the current one is N/A
    assert mi250.processes == ()
    conformance.check_telemetry(b)


def test_rocm_visible_devices_pick_the_amdsmi_device() -> None:
    smi = fake_amdsmi.FakeAmdsmi()
    serial = smi.gpus[1].serial[2:8]
    for env in ({"HIP_VISIBLE_DEVICES": "1"}, {"ROCR_VISIBLE_DEVICES": "1"},
                {"ROCR_VISIBLE_DEVICES": "1,0", "HIP_VISIBLE_DEVICES": "0"},
                {"HIP_VISIBLE_DEVICES": serial}):
        b = fake_amdsmi.make_backend(smi, environ=env)
        assert b.telemetry(0).name == "AMD Instinct MI250X", env


def test_ascend_telemetry_from_dcmi() -> None:
    b = fake_dcmi.make_backend()
    t = b.telemetry(0)
    assert_reading(t, source="DCMI (libdcmi.so)", name="Ascend910B3", memory_used=3378 * MiB,
                   memory_total=65536 * MiB, utilization=0.0, power=93.7, temperature=36.0,
                   clock=1800.0, memory_clock=1600.0)
    assert t.processes is not None and [p.pid for p in t.processes] == [os.getpid()]
    p310 = b.telemetry(1)
    assert p310.memory_total is None and p310.memory_clock is None and p310.power == 20.1
    conformance.check_telemetry(b)
    visible = fake_dcmi.make_backend(environ={"ASCEND_RT_VISIBLE_DEVICES": "1"})
    assert visible.probe().device_count == 1 and visible.telemetry(0).name == "Ascend310P3"


def test_ascend_without_dcmi_says_so() -> None:
    from hal.backends.ascend.backend import AscendBackend

    t = AscendBackend(environ={}).telemetry(0)
    assert "libdcmi.so" in t.source and t.memory_used is None


def test_xpu_telemetry_from_sysfs_and_fdinfo(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    root = fake_xpu.make_tree(tmp_path)
    now = [10.0]
    b = fake_xpu.make_backend(root)
    reader = xpu_telemetry.XpuTelemetry(str(root), {}, clock=lambda: now[0])
    first = reader.read(0)
    assert first.name and "8086:0bd5" in first.name
    assert (first.power, first.power_limit, first.temperature, first.clock) == (
        None, 600.0, 41.0, 1600.0)
    assert first.memory_used == 2 << 30  # two fds of one DRM client count once
    assert first.processes is not None and [p.command for p in first.processes] == [
        "python train.py"]
    fake_xpu.advance(root, 2)
    now[0] = 20.0  # energy +700 J over 10 s; a new process scan (older than 5 s)
    t = reader.read(0)
    assert t.power == 70.0
    assert t.utilization == 0.45  # 900 of 2000 engine cycles
    flex = reader.read(1)
    assert (flex.temperature, flex.clock, flex.power_limit) == (None, 2050.0, 150.0)
    conformance.check_telemetry(b)
    masked = xpu_telemetry.XpuTelemetry(str(root), {"ZE_AFFINITY_MASK": "1"})
    assert masked.read(0).name and "8086:56c0" in masked.read(0).name
