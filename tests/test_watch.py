"""``hal watch`` as a user runs it: real subprocesses, a pipe, a pseudo-terminal, fake vendors.

The fake vendors come from a small launcher (the test hook) that registers, in-process, a
plugin whose backends are hal's real CudaBackend, RocmBackend, AscendBackend and XpuBackend on
the telemetry fakes, then runs the real CLI; the built-in vendor plugins are disabled so their
names are free (an installed outside plugin may not take a built-in name).
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import textwrap
import time
from pathlib import Path

import pytest
from helpers import (
    ISOLATED_VARS,
    backend_source,
    hide_module_site,
    plugin_site,
    pythonpath,
    read_terminal,
    run_hal,
)

FAKES = """
    import os
    import pathlib

    import hal
    from hal.backends.ascend.testing.fake_telemetry import make_backend as ascend
    from hal.backends.cuda.testing.fake_telemetry import make_backend as cuda
    from hal.backends.rocm.testing.fake_telemetry import make_backend as rocm
    from hal.backends.xpu.testing import fake_telemetry as xpu


    @hal.hookimpl
    def hal_backends():
        root = pathlib.Path(os.environ["HAL_TEST_FAKE_XPU_ROOT"])
        if not (root / "sys").exists():
            xpu.make_tree(root)
        return [cuda(environ={}), rocm(environ={}), ascend(), xpu.make_backend(root)]
"""

BROKEN = """
    import time

    import hal


    class Raising(hal.Backend):
        name = "raising"
        device_type = "meta"

        def probe(self):
            return hal.Probe(True, "one", 1)

        def telemetry(self, index=0):
            raise OSError("management library crashed")


    class Hanging(Raising):
        name = "hanging"

        def telemetry(self, index=0):
            time.sleep(600)


    @hal.hookimpl
    def hal_backends():
        return [Raising(), Hanging()]
"""


LAUNCH = """
    import sys

    import hal_fakes
    from hal.cli import main
    from hal.plugins import registered

    with registered(hal_fakes, "fakes"):
        raise SystemExit(main(sys.argv[1:]))
"""


class Fakes:
    """Runs ``hal`` through the launcher that installs the vendor fakes."""

    def __init__(self, tmp_path: Path) -> None:
        self.site = tmp_path / "fakes-site"
        self.site.mkdir()
        (self.site / "hal_fakes.py").write_text(textwrap.dedent(FAKES))
        (self.site / "launch.py").write_text(textwrap.dedent(LAUNCH))
        self.env = {k: v for k, v in os.environ.items() if k not in ISOLATED_VARS}
        self.env.update({"PYTHONPATH": str(self.site),
                         "HAL_DISABLE_PLUGINS": "cuda,rocm,ascend,xpu",
                         "HAL_TEST_FAKE_XPU_ROOT": str(tmp_path / "xpu-root")})

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, str(self.site / "launch.py"), *args],
                              capture_output=True, text=True, env=self.env, timeout=300)


@pytest.fixture
def fakes(tmp_path: Path) -> Fakes:
    return Fakes(tmp_path)


def test_once_to_a_pipe_is_plain_text_with_real_cpu_figures() -> None:
    proc = run_hal("watch", "--once")
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    out = proc.stdout
    assert "\x1b" not in out  # no colour, no cursor movement: it is a pipe
    # used/total in whatever unit the figures take: the used part is MiB on a quiet host
    assert "cpu:0" in out and re.search(r"\d [KMGT]iB/\d+(\.\d+)? [GT]iB", out) and "%" in out


def test_pipe_without_flags_is_one_snapshot() -> None:
    proc = run_hal("watch", "--interval", "0.1")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("device  name") == 1 and "\x1b" not in proc.stdout


def test_json_stream_shows_every_fake_vendor(fakes: Fakes) -> None:
    proc = fakes.run("watch", "--json", "--count", "3", "--interval", "0.2")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 3
    ticks = [json.loads(line) for line in lines]
    assert [t["tick"] for t in ticks] == [1, 2, 3]
    assert {t["schema"] for t in ticks} == {"hal.watch/1"}
    assert ticks[0]["time"] <= ticks[1]["time"] <= ticks[2]["time"]
    devices = {d["device"]: d for d in ticks[-1]["devices"]}
    assert set(devices) >= {"cpu:0", "cuda:0", "cuda:1", "rocm:0", "rocm:1", "ascend:0",
                            "ascend:1", "xpu:0", "xpu:1"}
    assert all(d["error"] is None for d in devices.values()), devices
    cpu = devices["cpu:0"]
    assert cpu["memory_total"] > 0 and 0.0 <= cpu["utilization"] <= 1.0  # primed: real rate
    assert len(cpu["unit_utilization"]) == len(os.sched_getaffinity(0))
    assert devices["cuda:0"]["name"] == "NVIDIA A100-SXM4-80GB"
    assert devices["cuda:0"]["power"] == 87.412 and devices["cuda:0"]["source"].startswith("NVML")
    assert devices["rocm:0"]["name"] == "AMD Instinct MI300X"
    assert devices["ascend:0"]["name"] == "Ascend910B3" and devices["ascend:0"]["power"] == 93.7
    assert "8086:0bd5" in devices["xpu:0"]["name"]
    procs = devices["cuda:0"]["processes"]
    assert [p["pid"] for p in procs] == [procs[0]["pid"]] and procs[0]["memory"] == 4096 << 20


def test_once_shows_each_fake_device_under_its_backend(fakes: Fakes) -> None:
    proc = fakes.run("watch", "--once")
    assert proc.returncode == 0, proc.stderr
    rows: dict[str, str] = {}
    for line in proc.stdout.splitlines():  # the device table comes before the process table
        parts = line.split()
        if parts and ":" in parts[0] and parts[0] not in rows:
            rows[parts[0]] = line
    assert "A100" in rows["cuda:0"] and "87 W/400" in rows["cuda:0"]
    assert "MI300X" in rows["rocm:0"] and "398 W/750" in rows["rocm:0"]
    assert "910B3" in rows["ascend:0"] and "36 C" in rows["ascend:0"]
    assert "8086:0bd5" in rows["xpu:0"] and "1600 MHz" in rows["xpu:0"]
    assert "cpu:0" in rows


@pytest.mark.parametrize("args", [
    ("--interval", "0"), ("--interval", "-1"), ("--interval", "nan"), ("--interval", "1e9"),
    ("--interval", "fast"), ("--count", "0"), ("--count", "²"), ("--timeout", "0"),
    ("--plot", "out.png"),
], ids=lambda a: " ".join(a))
def test_bad_input_is_one_line_exit_2(args: tuple[str, str]) -> None:
    proc = run_hal("watch", *args)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hal: error: "), lines
    assert proc.stdout == ""


def test_raising_and_hanging_backends_get_rows_others_keep_updating(tmp_path: Path) -> None:
    env = pythonpath(plugin_site(tmp_path / "site", "broken", BROKEN))
    start = time.monotonic()
    proc = run_hal("watch", "--json", "--count", "3", "--interval", "0.1", "--timeout", "2",
                   env=env)
    assert proc.returncode == 0, proc.stderr
    assert time.monotonic() - start < 120  # a hung telemetry never hangs the monitor
    ticks = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(ticks) == 3
    rows = [{d["device"]: d for d in t["devices"]} for t in ticks]
    assert rows[0]["raising:0"]["error"] == "telemetry raised OSError: management library crashed"
    # The priming sample already waited its 2 s; from then on the hung backend is not
    # called again, its row says so, and every tick still arrives.
    assert all("has not answered" in r["hanging:0"]["error"] for r in rows), rows
    assert all(r["cpu:0"]["error"] is None and r["cpu:0"]["memory_total"] for r in rows)


INTERRUPTING = backend_source("interrupting", priority=None, extra="""
    def telemetry(self, index=0):
        raise KeyboardInterrupt
""")


def test_keyboard_interrupt_in_a_telemetry_reader_stops_hal_watch(tmp_path: Path) -> None:
    # A plugin call like any other: Ctrl-C raised inside the reader stops hal with 130, one line.
    env = pythonpath(plugin_site(tmp_path / "site", "interrupting", INTERRUPTING))
    proc = run_hal("watch", "--once", env=env)
    assert proc.returncode == 130, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr and proc.stderr.strip() == "hal: interrupted"


def test_csv_log_then_plot(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    log, png = tmp_path / "log.csv", tmp_path / "log.png"
    proc = run_hal("watch", "--csv", str(log), "--count", "2", "--interval", "0.1", "--json")
    assert proc.returncode == 0, proc.stderr
    header, *rows = log.read_text().splitlines()
    assert header.startswith("time,device,name,memory_used,memory_total,utilization")
    assert len(rows) == 2 and all(",cpu:0," in r for r in rows)
    proc = run_hal("watch", "--plot", str(png), "--csv", str(log))
    assert proc.returncode == 0, proc.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_without_matplotlib_names_the_extra(tmp_path: Path) -> None:
    site = hide_module_site(tmp_path / "nompl", "matplotlib")
    log = tmp_path / "log.csv"
    log.write_text("time,device,utilization\n1.0,cpu:0,0.5\n")
    proc = run_hal("watch", "--plot", str(tmp_path / "x.png"), "--csv", str(log),
                   env={"PYTHONPATH": str(site)})
    assert proc.returncode == 2
    root = Path(__file__).resolve().parent.parent  # a checkout: the hint installs from it, quoted
    assert proc.stderr.strip() in (f"hal: error: --plot needs matplotlib: pip install -e '{w}[plot]'"
                                   for w in (".", root))


# -- the live view in a pseudo-terminal -----------------------------------------------------


def _drain(fd: int, until: float) -> bytes:
    out = b""
    while time.monotonic() < until:
        ready, _, _ = select.select([fd], [], [], 0.1)
        if not ready:
            return out
        try:
            chunk = os.read(fd, 65536)
        except OSError:
            return out
        if not chunk:
            return out
        out += chunk
    return out


def _live(tmp_path: Path) -> tuple[subprocess.Popen[bytes], int, int, list[object]]:
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 150, 0, 0))
    before = termios.tcgetattr(slave)
    env = {k: v for k, v in os.environ.items() if k not in ISOLATED_VARS}
    env.update({"TERM": "xterm-256color", "COLUMNS": "150", "LINES": "40"})
    proc = subprocess.Popen([sys.executable, "-m", "hal", "watch", "--interval", "0.3"],
                            stdin=slave, stdout=slave, stderr=slave, env=env, close_fds=True)
    return proc, master, slave, before


def _wait_for_refreshes(proc: subprocess.Popen[bytes], master: int, n: int) -> bytes:
    seen = b""
    deadline = time.monotonic() + 120
    while seen.count(b"hal watch: every") < n and time.monotonic() < deadline:
        assert proc.poll() is None, seen.decode(errors="replace")
        seen += _drain(master, time.monotonic() + 0.5)
    assert seen.count(b"hal watch: every") >= n, seen.decode(errors="replace")
    return seen


def _finish(proc: subprocess.Popen[bytes], master: int) -> tuple[int, bytes]:
    out = b""
    deadline = time.monotonic() + 60
    while proc.poll() is None and time.monotonic() < deadline:
        out += _drain(master, time.monotonic() + 0.2)
    rc = proc.wait(timeout=5)
    return rc, out + _drain(master, time.monotonic() + 0.5)


def test_live_view_in_a_pty_refreshes_and_quits_on_q(tmp_path: Path) -> None:
    proc, master, slave, before = _live(tmp_path)
    try:
        seen = _wait_for_refreshes(proc, master, 2)  # at least one refresh after the first
        text = seen.decode(errors="replace")
        assert "cpu:0" in text and "last minute" in text and "\x1b[" in text
        os.write(master, b"q")
        rc, rest = _finish(proc, master)
        assert rc == 0, rest.decode(errors="replace")
        assert b"Traceback" not in seen + rest
        assert b"\x1b[?25h" in seen + rest  # the cursor is shown again
        assert termios.tcgetattr(slave) == before  # cbreak mode undone
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
        os.close(slave)


def test_live_view_exits_cleanly_on_ctrl_c(tmp_path: Path) -> None:
    proc, master, slave, before = _live(tmp_path)
    try:
        _wait_for_refreshes(proc, master, 1)
        proc.send_signal(signal.SIGINT)
        rc, rest = _finish(proc, master)
        assert rc == 0 and b"Traceback" not in rest, rest.decode(errors="replace")
        assert termios.tcgetattr(slave) == before
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
        os.close(slave)


@pytest.mark.parametrize("content", ["my notes\n", "a,b,c\n1,2,3\n",
                                     "time,device,name\n1.0,cpu:0,x\n"])  # an older, shorter log
def test_csv_refuses_a_file_that_is_not_its_log_and_leaves_it_alone(
        tmp_path: Path, content: str) -> None:
    # Issue 20: rows were appended, without a header, into whatever file --csv named.
    notes = tmp_path / "notes.txt"
    notes.write_text(content)
    proc = run_hal("watch", "--once", "--csv", str(notes))
    assert proc.returncode == 2 and proc.stdout == ""
    (line,) = proc.stderr.splitlines()
    assert line.startswith(f"hal: error: --csv {str(notes)!r} already holds something that is "
                           "not a `hal watch --csv` log")
    assert notes.read_text() == content


def test_csv_appends_to_its_own_log_under_one_header(tmp_path: Path) -> None:
    from hal.commands import watch
    from hal.telemetry import DeviceReading

    log = tmp_path / "log.csv"
    reading = DeviceReading(backend="cpu", index=0, time=1.5, telemetry=None, error=None)
    for _ in range(2):
        writer = watch.CsvLog(str(log))
        writer.write([reading])
        writer.close()
        assert writer.error is None
    header, *rows = log.read_text().splitlines()
    assert header == ",".join(watch.CSV_FIELDS) and len(rows) == 2 and rows[0] == rows[1]


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_a_full_csv_disk_is_blamed_on_the_csv_and_the_snapshot_still_printed() -> None:
    # Issue 20: --csv /dev/full said "cannot write the output" and printed no snapshot.
    proc = run_hal("watch", "--once", "--csv", "/dev/full")
    assert proc.returncode == 1
    assert "cpu:0" in proc.stdout  # the snapshot meant for stdout
    assert proc.stderr.splitlines()[-1] == ("hal: error: --csv '/dev/full' cannot be written: "
                                            "No space left on device")


ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def _once_on_a_terminal(fakes: Fakes, env: dict[str, str], columns: int
                        ) -> tuple[int, str]:
    """``hal watch --once`` with stdout a pseudo-terminal ``columns`` wide: its pid and text."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    proc = subprocess.Popen([sys.executable, str(fakes.site / "launch.py"), "watch", "--once"],
                            stdin=subprocess.DEVNULL, stdout=slave, stderr=slave, env=env)
    os.close(slave)
    out = read_terminal(master)
    assert proc.wait(timeout=300) == 0, out.decode(errors="replace")
    return proc.pid, ANSI.sub("", out.decode()).replace("\r\n", "\n")


@pytest.mark.parametrize("columns", [60, 80, 120])
@pytest.mark.parametrize("where", ["terminal", "pipe", "ascii pipe"])
def test_once_fits_the_width_keeping_device_pid_user_and_memory(
        fakes: Fakes, tmp_path: Path, columns: int, where: str) -> None:
    import pwd

    env = dict(fakes.env, COLUMNS=str(columns), TERM="xterm-256color")
    env["PYTHONPATH"] += os.pathsep + str(plugin_site(tmp_path / "site", "broken", BROKEN))
    if where == "ascii pipe":  # a cut is marked "..." there: still within the width
        env["PYTHONIOENCODING"] = "ascii"
    if where == "terminal":
        pid, out = _once_on_a_terminal(fakes, env, columns)
    else:
        proc = subprocess.Popen([sys.executable, str(fakes.site / "launch.py"), "watch",
                                 "--once"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, env=env)
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        pid = proc.pid
    lines = out.splitlines()
    assert lines and all(len(line) <= columns for line in lines), "\n".join(lines)
    rows = {}
    for line in lines:  # the first line of each key is its device row
        rows.setdefault(line.split(" ", 1)[0], line)
    for key in ("cuda:0", "cuda:1", "rocm:0", "ascend:1", "xpu:0", "cpu:0"):
        assert rows[key].startswith(key + "  "), rows
    assert "4.1 GiB/80.0 GiB" in rows["cuda:0"] and "37%" in rows["cuda:0"]
    assert "11.6 GiB/192.0 GiB" in rows["rocm:0"]
    # A device without figures: its reason starts on its own row, after the key.
    assert re.match(r"raising:0 +telemetry raised OSError", rows["raising:0"]), rows
    assert re.match(r"hanging:0 +telemetry has not answered", rows["hanging:0"]), rows
    header = next(line for line in lines if line.startswith("device") and "pid" in line)
    assert header.split()[:4] == ["device", "pid", "user", "memory"], header
    # cuda:0's fake process is the watching process itself: every field but the command whole.
    user = pwd.getpwuid(os.getuid()).pw_name
    assert re.search(rf"^cuda:0 +{pid} +{re.escape(user)} +4\.0 GiB( |$)", out, re.M), out
    if columns >= 80:
        assert re.search(r"^xpu:0 +\d+ +\S+ +2\.0 GiB +python train\.py$", out, re.M), out
