"""The real ``hal`` CLI in subprocesses: devices, plugins, fallback, strictness and bad input."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import make_dist, run_hal

pytestmark = pytest.mark.slow


def _no_traceback(result: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in result.stderr + result.stdout


def test_devices_names_the_cpu_selection() -> None:
    result = run_hal("devices")
    assert result.returncode == 0, result.stderr
    assert "cpu (priority 0, cpu, collectives gloo): available" in result.stdout
    assert "selected: cpu (cpu)" in result.stdout


def test_devices_json_has_every_backend_and_the_selection() -> None:
    result = run_hal("devices", "--json")
    data = json.loads(result.stdout)
    assert data["schema"] == "hal.devices/1"
    cpu = next(b for b in data["backends"] if b["name"] == "cpu")
    assert cpu["available"] and cpu["devices"][0]["memory"]["total"] > 0
    assert "float32" in cpu["devices"][0]["dtypes"]
    assert data["selection"]["device"] == "cpu"


def test_fallback_is_explained_and_exits_zero() -> None:
    result = run_hal("devices", env={"HAL_DEVICE": "cuda"})
    assert result.returncode == 0
    assert "fell back to cpu" in result.stdout
    warning_lines = [ln for ln in result.stderr.splitlines() if ln.startswith("hal: warning:")]
    assert len(warning_lines) == 1 and "HAL_DEVICE=cuda" in warning_lines[0]
    _no_traceback(result)


def test_strict_fallback_is_a_one_line_error() -> None:
    result = run_hal("devices", env={"HAL_DEVICE": "cuda", "HAL_STRICT": "1"})
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("hal: error:")
    assert "HAL_STRICT=1" in result.stderr


@pytest.mark.parametrize(("env", "args", "needle"), [
    ({"HAL_DEVICE": "bogus"}, ["devices"], "'bogus'"),
    ({"HAL_DEVICE": "cuda:abc"}, ["devices"], "'abc'"),
    ({"HAL_DEVICE": "cpu:7"}, ["devices"], "index 7"),
    ({"HAL_PLUGINS": ""}, ["devices"], "HAL_PLUGINS is set but empty"),
    ({"HAL_PLUGINS": "cpu,,x"}, ["plugins"], "HAL_PLUGINS"),
    ({}, ["devices", "--bogus"], "unrecognized arguments: --bogus"),
    ({}, ["frobnicate"], "invalid choice: 'frobnicate'"),
])
def test_bad_input_is_one_line_and_exit_2(env: dict[str, str], args: list[str],
                                          needle: str) -> None:
    result = run_hal(*args, env=env)
    assert result.returncode == 2
    assert needle in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    _no_traceback(result)


def test_console_script_and_module_agree() -> None:
    exe = shutil.which("hal", path=str(Path(sys.executable).parent))
    assert exe is not None
    script = subprocess.run([exe, "devices", "--json"], capture_output=True, text=True,
                            timeout=120)
    module = run_hal("devices", "--json")
    assert json.loads(script.stdout)["selection"] == json.loads(module.stdout)["selection"]


def test_help_and_version() -> None:
    result = run_hal("--help")
    assert result.returncode == 0 and "devices" in result.stdout
    assert run_hal("--version").stdout.startswith("hal ")


def test_plugin_that_raises_on_import_leaves_devices_working(tmp_path: Path) -> None:
    make_dist(tmp_path, "hal-broken", "0.9", {"broken": "broken_plugin"},
              {"broken_plugin": "raise ImportError('libbroken.so: cannot open shared object')"})
    env = {"PYTHONPATH": str(tmp_path)}
    devices = run_hal("devices", env=env)
    assert devices.returncode == 0 and "selected: cpu" in devices.stdout
    listed = json.loads(run_hal("plugins", "--json", env=env).stdout)
    broken = next(p for p in listed if p["name"] == "broken")
    assert broken["status"] == "failed"
    assert broken["distribution"] == "hal-broken" and broken["version"] == "0.9"
    assert "libbroken.so" in broken["error"]


def _toyaccel_installed() -> bool:
    from importlib import metadata

    return any(ep.name == "toyaccel" for ep in metadata.entry_points(group="hal"))


@pytest.mark.skipif(not _toyaccel_installed(), reason="tox installs tests/plugins/hal_toyaccel")
def test_pip_installed_third_party_plugin_is_listed_and_selectable() -> None:
    plain = json.loads(run_hal("devices", "--json").stdout)
    toy = next(b for b in plain["backends"] if b["name"] == "toyaccel")
    assert not toy["available"] and "TOYACCEL_DEVICES" in toy["reason"]
    by_priority = json.loads(run_hal("devices", "--json", env={"TOYACCEL_DEVICES": "2"}).stdout)
    assert by_priority["selection"]["device"] == "meta:0"
    by_name = json.loads(run_hal("devices", "--json", env={
        "TOYACCEL_DEVICES": "2", "HAL_DEVICE": "toyaccel:1"}).stdout)
    assert by_name["selection"]["device"] == "meta:1"
    pinned = json.loads(run_hal("devices", "--json", env={
        "TOYACCEL_DEVICES": "2", "HAL_DISABLE_PLUGINS": "toyaccel"}).stdout)
    assert pinned["selection"]["device"] == "cpu"


def test_one_dtype_vocabulary_for_plan_and_bench() -> None:
    """bf16 is a --dtype for both commands; MI300's float8_e4m3fnuz plans as fp8."""
    env = {"HAL_DEVICE": "cpu", "HAL_BENCH_SECONDS": "0.02"}
    for spelling in ("bf16", "BFloat16", "torch.bfloat16"):
        plan = run_hal("plan", "7B", "--no-local", "--dtype", spelling, "--json", env=env)
        assert plan.returncode == 0, plan.stderr
        assert json.loads(plan.stdout)["estimate"]["dtype"] == "bf16"
    bench = run_hal("bench", "--dtype", "bf16", "--json", env=env)
    assert bench.returncode == 0, bench.stderr
    assert [m["dtype"] for m in json.loads(bench.stdout)["matmul"]] == ["bf16"]
    fp8 = run_hal("plan", "7B", "--no-local", "--dtype", "float8_e4m3fnuz", "--json", env=env)
    assert fp8.returncode == 0, fp8.stderr
    assert json.loads(fp8.stdout)["estimate"]["dtype"] == "fp8"
    bad = run_hal("plan", "7B", "--no-local", "--dtype", "fp64", env=env)
    assert bad.returncode == 2 and "is not a weight format" in bad.stderr
    _no_traceback(bad)
