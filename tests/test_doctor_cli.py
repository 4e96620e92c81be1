"""The real ``hal doctor`` CLI in subprocesses: this machine, torch broken and missing for real,
hanging and crashing probes, broken plugins, secrets through every output format, --smoke."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from helpers import backend_source, hide_module_site, make_dist, plugin_site, pythonpath, run_hal
from test_redact import CORPUS, SECRET_ENV, SECRET_VALUES

pytestmark = pytest.mark.slow

OTHER_BACKENDS = ("cuda", "rocm", "ascend", "xpu", "toyaccel")


def doctor_json(*args: str, env: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    proc = run_hal("doctor", "--json", *args, env=env)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def ids(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {f["id"]: f for f in report["findings"]}


def test_this_machine_plain_names_cpu_and_why_not_the_others() -> None:
    proc = run_hal("doctor")  # piped: plain text
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "hal.get_device() -> cpu (backend cpu)" in out
    for name in OTHER_BACKENDS:
        line = next(x for x in out.splitlines() if x.strip().startswith(f"{name} (priority"))
        assert "not available: " in line and len(line.split("not available: ")[1]) > 5
    assert "\x1b[" not in out  # no colour codes in a pipe
    assert out.rstrip().splitlines()[-1].startswith("hal doctor: all good")


def test_json_schema_on_this_machine() -> None:
    code, report = doctor_json()
    assert code == 0 == report["exit_code"]
    assert report["schema"] == "hal.doctor/1"
    for key in ("system", "torch", "hardware", "backends", "plugins", "environment",
                "selection", "findings", "summary", "runs"):
        assert key in report
    assert report["selection"]["backend"] == "cpu"
    by_name = {b["name"]: b for b in report["backends"]}
    assert by_name["cpu"]["available"] and by_name["cpu"]["devices"][0]["dtypes"]
    assert all(not by_name[n]["available"] and by_name[n]["reason"] for n in OTHER_BACKENDS)
    assert report["torch"]["build"] == "CPU-only"
    assert {p["name"] for p in report["plugins"]} >= {"cpu", "toyaccel"}
    assert [r["outcome"] for r in report["runs"]] == ["done"]


def test_markdown_is_a_findings_table_then_sections() -> None:
    proc = run_hal("doctor", "--markdown")
    assert proc.returncode == 0
    assert proc.stdout.startswith("## hal doctor report (`hal.doctor/1`)")
    assert "| severity | id | source | message | fix |" in proc.stdout
    assert "### Backends" in proc.stdout and "```text" in proc.stdout


@pytest.mark.parametrize(("args", "named"), [
    (("--timeout", "0"), "--timeout=0"), (("--timeout", "soon"), "'soon'"),
    (("--timeout", "inf"), "--timeout='inf'"), (("--timeout", "1e400"), "--timeout=inf"),
    (("--timeout", "1e10"), "--timeout=1e+10"),
    (("--json", "--markdown"), "--markdown"), (("--bogus",), "--bogus")])
def test_usage_errors_exit_2_with_one_line(args: tuple[str, ...], named: str) -> None:
    proc = run_hal("doctor", *args)
    assert proc.returncode == 2
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("hal") and named in line and proc.stdout == ""


def autoload_extension(root: Path) -> Path:
    """A real installed-looking device extension in torch's autoload group whose import fails
    the way one does when its vendor runtime library is missing."""
    source = """
        raise ImportError(
            "libascendcl.so: cannot open shared object file: No such file or directory")
        def _autoload():
            pass
    """
    return make_dist(root, "fake-npu-ext", "1.0", {"fake_npu": "fake_npu_ext:_autoload"},
                     {"fake_npu_ext": source}, group="torch.backends")


def test_import_torch_broken_for_real(tmp_path: Path) -> None:
    site = autoload_extension(tmp_path / "site")
    env = pythonpath(site)
    import subprocess
    import sys
    check = subprocess.run([sys.executable, "-c", "import torch"], capture_output=True,
                           text=True, env={**os.environ, **env})
    assert check.returncode != 0 and "fake_npu" in check.stderr  # really broken

    proc = run_hal("doctor", env=env)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    out = proc.stdout
    assert "[ERROR] torch-import-failed" in out
    assert "'fake_npu'" in out and "fake-npu-ext 1.0" in out and "libascendcl.so" in out
    assert "export TORCH_DEVICE_BACKEND_AUTOLOAD=0" in out
    assert "pip uninstall fake-npu-ext" in out
    assert "hal.get_device() -> cpu" in out  # the report goes on (autoload off)

    code, report = doctor_json(env=env)
    assert code == 1
    assert report["torch"]["imports"] is False
    assert report["torch"]["autoload_disabled"]["imports"] is True
    assert report["torch"]["error"]["chain"][-1]["type"] == "ImportError"


def test_torch_missing(tmp_path: Path) -> None:
    site = hide_module_site(tmp_path / "site", "torch")
    code, report = doctor_json(env=pythonpath(site))
    assert code == 1
    f = ids(report)["torch-missing"]
    assert f["severity"] == "error" and f["fix"].startswith("pip install torch")
    assert report["selection"]["backend"] == "cpu"


HANG = backend_source("sleepy", "time.sleep(600)", priority="70", cls="Sleepy", head="import time\n")

CRASH = backend_source("crashy", "os.abort()", priority="70", cls="Crashy", head="import os\n")


def doctor_with_bad_probe(tmp_path: Path, name: str, source: str, timeout: str,
                          finding: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run the doctor with plugin ``name`` installed; check what every bad probe gets (exit 1, the
    finding names the plugin and how to switch it off, cpu selected); return the finding and report."""
    site = plugin_site(tmp_path / "site", name, source)
    code, report = doctor_json("--timeout", timeout, env=pythonpath(site))
    assert code == 1
    f = ids(report)[finding]
    assert f"'{name}'" in f["message"] and f"HAL_DISABLE_PLUGINS={name}" in f["fix"]
    assert report["selection"]["backend"] == "cpu"
    return f, report


def test_hanging_probe_is_reported_within_the_timeout(tmp_path: Path) -> None:
    _, report = doctor_with_bad_probe(tmp_path, "sleepy", HANG, "3", "probe-hung")
    assert report["seconds"] < 60


def test_crashing_probe_is_named_and_the_report_completes(tmp_path: Path) -> None:
    f, report = doctor_with_bad_probe(tmp_path, "crashy", CRASH, "20", "probe-crashed")
    assert "SIGABRT" in f["message"]
    assert report["runs"][-1]["outcome"] == "done" and "crashy" in report["runs"][-1]["skipped"]


def test_secrets_never_leave_in_any_format(tmp_path: Path) -> None:
    """A broken plugin whose error carries secrets, and secret-bearing variables: every format."""
    leaks = "; ".join(text for text, _ in CORPUS)
    site = plugin_site(tmp_path / "site", "leaky", f"raise ImportError({leaks!r})\n")
    env = {**pythonpath(site), **SECRET_ENV}
    secrets = [*SECRET_VALUES, *(secret for _, secret in CORPUS)]
    for fmt in ("--json", "--markdown", "--plain", "--rich"):
        proc = run_hal("doctor", fmt, env=env)
        assert proc.returncode == 1, fmt  # the broken plugin is an error
        assert "plugin-failed" in proc.stdout and "leaky" in proc.stdout
        for secret in secrets:
            assert secret not in proc.stdout and secret not in proc.stderr, (fmt, secret)
    _, report = doctor_json(env=env)
    assert report["environment"]["HAL_API_TOKEN"] == "<redacted>"


def test_smoke_on_the_cpu() -> None:
    code, report = doctor_json("--smoke")
    assert code == 0, report["findings"]
    steps = {s["name"]: s for s in report["smoke"]["steps"]}
    assert {"allocate", "matmul float32", "collective"} <= set(steps)
    assert all(s["ok"] and s["seconds"] >= 0 for s in steps.values())
    assert "smoke-collective" in ids(report)
