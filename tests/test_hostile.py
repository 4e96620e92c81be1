"""Hostile plugins (issue 12): none takes hal over, hangs it, or makes it leak a secret.

Each family in tests/hostile is installed as a real distribution (dist-info + module).  In this
process every family is recorded against its plugin with the reason while cpu stays selectable;
through the real CLI, all of them installed at once leave `hal devices`, `hal plugins`,
`hal doctor` and `hal.get_device()` answering, with parseable JSON and no traceback; the
families that kill the process are survived by the doctor's isolated child, which names them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from helpers import ISOLATED_VARS, backend_source, make_dist
from hostile import FAMILIES, LEAK, install

import hal
from hal import plugins
from hal.commands import devices

#: family -> text that must appear in its plugin's record or in its backend's reason.
EXPECT = {
    "import_sleeps": "its import did not answer within 4.5 s",  # 3 x HAL_PROBE_TIMEOUT
    "import_sysexit": "its import called sys.exit(7)",
    "hook_hangs": "hal_backends did not answer within 1.5 s",
    "hook_sysexit": "hal_backends called sys.exit(5)",
    "probe_sysexit": "probe called sys.exit(4)",
    "takes_cpu": "plugin name 'cpu' is reserved for hal's built-in plugin",
    "backend_named_cpu": "backend name 'cpu' is reserved for hal's built-in backend",
    "priority_str": "invalid priority '100'",
    "priority_none": "invalid priority None",
    "priority_nan": "invalid priority nan",
    "priority_bool": "invalid priority True",
    "device_type_injection": "invalid device_type 'cuda;rm'",
    "probe_str_available": "available='no'",
    "probe_negative_count": "device_count is -3",
    "probe_str_count": "device_count is '2'",
    "memory_dict": "memory() returned dict, expected hal.MemoryInfo",
    "devices_ints": "devices() returned a int in its list",
    "versions_int": "versions() returned int",
    "memory_nan": "MemoryInfo.total is nan",
    "name_newline": "invalid name 'evil\\n'",
    "probe_hangs": "probe did not answer within 1.5 s",
    "probe_reenters": "hal.select()/hal.get_device() was called from inside backend 'reenter'",
    "probe_resets": "hal.reset() was called from inside backend 'resetter'",
    "probe_memory_info": "was called from inside backend 'meminfo'",
    "prints": "",
    "env_changer": "its import changed the environment: set HAL_DEVICE",
    "leaky": "probe raised RuntimeError: cannot log in",
}


HANGS = ("import_sleeps", "hook_hangs", "probe_hangs")


def test_every_family_has_an_expectation() -> None:
    assert set(EXPECT) == set(FAMILIES)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_each_family_is_recorded_and_cpu_stays_selectable(
        family: str, plugin_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Short for the families that hang (the test waits for them), generous for the rest so a
    # loaded machine never makes the real cpu backend miss it.
    monkeypatch.setenv("HAL_PROBE_TIMEOUT", "1.5" if family in HANGS else "10")
    path_before = os.environ.get("PATH")
    install(plugin_dir, family)
    data = devices.collect()  # probes and describes every backend under the timeout
    json.dumps(data, allow_nan=False)  # nothing unchecked reaches the JSON encoder
    said = [str(p["error"]) for p in plugins.list_plugins()]
    said += [n for p in plugins.list_plugins() for n in p["notes"]]
    said += [str(b["reason"]) for b in data["backends"]] + [e for b in data["backends"] for e in b["errors"]]
    assert EXPECT[family] in " | ".join(said), said
    assert type(hal.get_backend("cpu")).__module__ == "hal.backends.cpu.backend"
    assert os.environ.get("PATH") == path_before and "HAL_DEVICE" not in os.environ
    available = {b["name"] for b in data["backends"] if b["available"]}
    assert "cpu" in available and data["selection"]["backend"] in available
    monkeypatch.setenv("HAL_DEVICE", "cpu")
    hal.reset()
    assert hal.get_device().type == "cpu"


def test_hal_devices_ends_naming_the_plugins_that_failed(
        plugin_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from hal.cli import main

    install(plugin_dir, "import_sysexit", "priority_nan")
    assert main(["devices"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last == "plugins that failed to load: prionan, quitter (see `hal plugins` for why)"


def test_a_plugin_cannot_widen_the_environment_allowlist_with_a_secret_name() -> None:
    from hal.doctor.report import environment_section

    class Db(hal.Backend):
        name, device_type = "db", "meta"
        visible_devices_env = ("DB_PASSWORD",)

        def probe(self) -> hal.Probe:
            return hal.Probe(False, "no", 0)

    env = {"DB_PW": "s3cr3t-pw", "DB_PASSWORD": "x", "DB_HOST": "db.local", "HAL_API_TOKEN": "t0ken-value",
           "MASTER_ADDR": "admin:pw4admin@10.0.0.1"}
    shown = environment_section([Db()], env)
    assert "DB_PW" not in shown and "DB_PASSWORD" not in shown and shown["DB_HOST"] == "db.local"
    assert shown["HAL_API_TOKEN"] == "<redacted>"  # hal's own prefix: listed, masked
    assert shown["MASTER_ADDR"] == "admin:<redacted>@10.0.0.1"


def test_mixed_case_names_select_and_lists_compare_case_insensitively(
        plugin_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = backend_source("MyAccel", priority="1")
    make_dist(plugin_dir, "hal-myaccel", "1.0", {"MyAccel": "myaccel_plugin"}, {"myaccel_plugin": source})
    monkeypatch.setenv("HAL_DEVICE", "myaccel")
    assert hal.select().backend.name == "MyAccel"
    assert hal.get_backend("MYACCEL").name == "MyAccel"
    monkeypatch.setenv("HAL_DISABLE_PLUGINS", "MYACCEL")
    hal.reset(plugins=True)
    records = {p["name"]: p for p in plugins.list_plugins()}
    assert records["myaccel"]["status"] == "blocked"


def test_builtin_name_is_reserved_whatever_the_enumeration_order(
        plugin_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A .pth-style path first on sys.path lists the outside 'cpu' before hal's own."""
    install(plugin_dir, "takes_cpu")
    from importlib import metadata

    eps = [ep for ep in metadata.entry_points(group="hal") if ep.name == "cpu"]
    assert eps[0].dist is not None and eps[0].dist.metadata["Name"] == "hal-hostile-takes-cpu"
    records = {p["name"]: p for p in plugins.list_plugins()}
    assert records["cpu"]["distribution"] == "torch-hal" and records["cpu"]["status"] == "loaded"
    refused = records["cpu@hal-hostile-takes-cpu"]
    assert refused["status"] == "failed" and "reserved" in refused["error"]
    monkeypatch.setenv("HAL_DEVICE", "cpu")
    assert str(hal.get_device()) == "cpu"


def _env(site: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ISOLATED_VARS}
    env["PYTHONPATH"] = os.pathsep.join([str(site), env.get("PYTHONPATH", "")]).strip(os.pathsep)
    env.update(extra)
    return env


def _hal(site: Path, *args: str, timeout: float = 120, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hal", *args], capture_output=True, text=True,
                          env=_env(site, **extra), timeout=timeout)


@pytest.mark.slow
def test_all_families_at_once_through_the_cli(tmp_path: Path) -> None:
    site = install(tmp_path / "site", *FAMILIES)
    env = {"HAL_PROBE_TIMEOUT": "1", "LEAKY_TOKEN": "plain-value-xyz1",
           "MASTER_ADDR": "admin:pw4admin@10.0.0.1",
           "HAL_NOTE": "--password hunter2 --wandb-key " + "ab" * 20}
    dev = _hal(site, "devices", "--json", **env)
    assert dev.returncode == 0, dev.stderr[-2000:]
    assert "Traceback" not in dev.stderr
    data = json.loads(dev.stdout)  # the printing plugin's noise went to stderr
    assert "IMPORT NOISE" in dev.stderr and "PROBE NOISE" in dev.stderr
    assert {"sleepy", "quitter", "hookhang", "prio"} <= set(data["failed_plugins"])
    listed = _hal(site, "plugins", "--json", **env)
    assert listed.returncode == 0 and "Traceback" not in listed.stderr
    records = {p["name"]: p for p in json.loads(listed.stdout)}
    assert records["cpu"]["distribution"] == "torch-hal"
    assert "set HAL_DEVICE" in " ".join(records["envy"]["notes"])
    script = "import hal; print(hal.get_device())"
    got = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                         env=_env(site, HAL_DEVICE="cpu", **env))
    assert got.returncode == 0 and got.stdout.strip().splitlines()[-1] == "cpu", got.stderr[-2000:]
    doc = _hal(site, "doctor", "--json", "--timeout", "5", **env)
    assert doc.returncode == 1 and "Traceback" not in doc.stderr
    report = json.loads(doc.stdout)
    failed = {p["name"] for p in report["plugins"] if p["status"] == "failed"}
    assert {"sleepy", "quitter", "hookhang", "prio", "inject", "memdict"} <= failed
    for secret in (LEAK, "plain-value-xyz1", "pw4admin", "hunter2", "ab" * 20):
        assert secret not in doc.stdout and secret not in doc.stderr, secret
    assert "plain-value-xyz1" in dev.stdout  # hal devices is not a report for pasting: unmasked
    ids = {f["id"] for f in report["findings"]}
    assert "plugin-changed-environment" in ids and "doctor-step-hung" not in ids


@pytest.mark.slow
def test_the_doctor_survives_plugins_that_kill_its_child(tmp_path: Path) -> None:
    """An import calling os._exit, a hook calling os._exit and a probe killed by SIGKILL: each
    child that dies names the plugin or backend, the next runs without it."""
    site = install(tmp_path / "site", "import_os_exit", "hook_os_exit", "probe_sigkill")
    proc = _hal(site, "doctor", "--json", "--timeout", "10", timeout=300)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    report = json.loads(proc.stdout)
    found = {f["id"] for f in report["findings"]}
    messages = " | ".join(f["message"] for f in report["findings"])
    assert "plugin 'exiter' ended the doctor's probe process during 'import plugin exiter' " \
           "(exit code 7); last output: password=<redacted>" in messages
    assert "plugin 'hookosexit' ended the doctor's probe process during " \
           "'plugin hookosexit: hal_backends' (exit code 9)" in messages
    assert "backend 'killer' crashed while being probed (killed by SIGKILL)" in messages
    assert report["selection"]["backend"] == "cpu"
    assert report["runs"][-1]["outcome"] == "done"
    status = {p["name"]: p["status"] for p in report["plugins"]}
    assert status["exiter"] == status["hookosexit"] == status["killer"] == "failed"
    assert LEAK not in proc.stdout  # the crashed child's last output is redacted too
    assert "plugin-exited" in found and "probe-crashed" in found


@pytest.mark.slow
def test_the_doctor_runs_nothing_from_the_working_directory(tmp_path: Path) -> None:
    work = tmp_path / "work"
    (work / "hal").mkdir(parents=True)
    marker = tmp_path / "ran"
    for name in ("torch.py", "json.py", "hal/__init__.py", "pluggy.py"):
        (work / name).write_text(f"open({str(marker)!r}, 'a').write({name!r} + '\\n')\n"
                                 "raise SystemExit('hijacked')\n")
    site = tmp_path / "site"  # an absolute PYTHONPATH entry is honoured: plugins install so
    pids = tmp_path / "pids"
    make_dist(site, "hal-pidwriter", "0.1", {"pidwriter": "pidwriter_plugin"}, {
        "pidwriter_plugin": f"import os\nopen({str(pids)!r}, 'a').write(str(os.getpid()) + '\\n')\n"})
    hal_script = Path(sys.executable).parent / "hal"
    env = {k: v for k, v in os.environ.items() if k not in ISOLATED_VARS}
    env["PYTHONPATH"] = str(site)
    proc = subprocess.Popen([str(hal_script), "doctor", "--json"], cwd=work, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    out, _ = proc.communicate(timeout=240)
    assert not marker.exists(), marker.read_text()
    loaded_in = pids.read_text().split()
    assert loaded_in and str(proc.pid) not in loaded_in  # plugins load in the child only
    report = json.loads(out)
    import torch

    assert report["torch"]["version"] == str(torch.__version__)
    assert report["torch"]["path"].startswith(str(Path(torch.__file__).parent))
    assert report["selection"]["backend"] == "cpu"


def test_a_forked_child_never_inherits_a_held_selection_lock(tmp_path: Path) -> None:
    script = textwrap.dedent("""
        import os, sys, threading, time
        import hal
        from hal import selection, plugins
        entered, release = threading.Event(), threading.Event()

        class Slow(hal.Backend):
            name, device_type, priority = "slow", "meta", 5
            def probe(self):
                entered.set()
                release.wait(30)
                return hal.Probe(True, "late", 1)

        class P:
            @hal.hookimpl
            def hal_backends(self):
                return [Slow()]

        plugins.load_plugins().register(P(), "slowplugin")
        os.environ["HAL_DEVICE"] = "cpu"
        t = threading.Thread(target=selection.select, daemon=True)
        t.start()
        entered.wait(30)  # the other thread is inside select(), holding the lock
        pid = os.fork()
        if pid == 0:
            plugins.load_plugins().unregister("slowplugin")
            selection.reset()
            print("child", hal.get_device(), flush=True)
            os._exit(0)
        release.set()
        _, status = os.waitpid(pid, 0)
        print("parent", os.waitstatus_to_exitcode(status), flush=True)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "HAL_PROBE_TIMEOUT": "20"})
    assert "child cpu" in proc.stdout and "parent 0" in proc.stdout, proc.stderr[-2000:]


def test_doctor_labels_a_step_that_ends_at_once_not_as_hung() -> None:
    from hal.doctor.child import _no_answer
    from hal.doctor.findings import isolation_finding
    from hal.validate import Outcome

    exited = _no_answer("plugin findings", Outcome("exited", error=SystemExit(3)), "hook")
    nothing = _no_answer("selection", Outcome("ok", None), "selection")
    hung = _no_answer("selection", Outcome("hung", seconds=2.0), "selection")
    assert exited["type"] == "step_failed" and exited["outcome"] == "exited"
    assert "sys.exit(3)" in exited["detail"]
    assert nothing["outcome"] == "returned nothing"
    assert hung["type"] == "hung" and "2 s" in hung["detail"]
    f = isolation_finding("returned nothing", nothing, nothing["detail"], None)
    assert f.id == "doctor-step-no-answer" and "hung" not in f.message


def test_doctor_hook_that_exits_is_recorded_not_hung(monkeypatch: pytest.MonkeyPatch) -> None:
    from hal.doctor import Options, collect

    class Quits:
        @hal.hookimpl
        def hal_doctor_findings(self, report: Any) -> list[hal.Finding]:
            raise SystemExit(3)

    monkeypatch.setenv("HAL_DISABLE_PLUGINS", "cuda,rocm,ascend,xpu,toyaccel,mps,accelerator")
    hal.reset(plugins=True)
    with plugins.registered(Quits(), "quits"):
        report = collect(Options(isolate=False, timeout=5))
    mine = next(p for p in report["plugins"] if p["name"] == "quits")
    assert mine["status"] == "failed" and "hal_doctor_findings called sys.exit(3)" in mine["error"]
    assert not [f for f in report["findings"] if "hung" in f["id"]]


def test_keyboard_interrupt_from_plugin_code_still_stops_hal() -> None:
    from hal.validate import call_plugin

    def interrupt() -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        call_plugin(interrupt, "plugin 'x': probe()", 5)
