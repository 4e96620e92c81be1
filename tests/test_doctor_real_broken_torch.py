"""``import torch`` broken for real: torch-npu from the registry installed without its runtime.

torch autoloads every ``torch.backends`` entry point at ``import torch``; torch-npu's cannot load
CANN's libraries here, so ``import torch`` itself raises.  The real-environment tests run only in
tox's ``broken-torch`` env (which sets HAL_TEST_REAL_BROKEN_TORCH=1 and installs torch-npu); they
skip with a reason when the registry could not deliver torch-npu.  The last test, ``hal devices``
against a fake autoloaded extension, runs in the ordinary env.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
from helpers import run_hal

pytestmark = pytest.mark.slow

REAL = os.environ.get("HAL_TEST_REAL_BROKEN_TORCH") == "1"
AUTOLOAD_OFF = {"TORCH_DEVICE_BACKEND_AUTOLOAD": "0"}
_LIB_RE = re.compile(r"(lib[\w.+-]+\.so[\d.]*): cannot open shared object file")
real_only = pytest.mark.skipif(
    not REAL, reason="needs tox -e broken-torch (HAL_TEST_REAL_BROKEN_TORCH=1)")


def _npu_dist() -> metadata.Distribution | None:
    try:
        return metadata.distribution("torch-npu")
    except metadata.PackageNotFoundError:
        return None


@pytest.fixture(scope="module")
def broken() -> dict[str, Any]:
    """The real failure of ``python -c 'import torch'`` here: the extension and missing library."""
    dist = _npu_dist()
    if dist is None:
        pytest.skip("torch-npu is not installed: the registry could not deliver it "
                    "(see the pip error in tox's commands_pre)")
    if os.environ.get("ASCEND_TOOLKIT_HOME") or os.environ.get("ASCEND_HOME_PATH"):
        pytest.skip("a CANN environment is set up here: import torch is not broken")
    proc = subprocess.run([sys.executable, "-c", "import torch"], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode != 0, "import torch works: the premise of this module is gone"
    assert "Failed to load the backend extension: torch_npu" in proc.stderr, proc.stderr
    match = _LIB_RE.search(proc.stderr)
    assert match, proc.stderr
    return {"distribution": dist.metadata["Name"], "version": dist.version,
            "library": match.group(1)}


def _no_traceback(proc: subprocess.CompletedProcess[str], *, stdout: bool = True) -> None:
    assert "Traceback" not in proc.stderr, proc.stderr
    if stdout:
        assert "Traceback" not in proc.stdout, proc.stdout


def _check_cause_and_fix(text: str, b: dict[str, Any]) -> None:
    """The torch-import-failed finding: extension, distribution, version, library, the 3 fixes."""
    assert "torch-import-failed" in text
    assert (f"device extension 'torch_npu' (entry point torch_npu = torch_npu:_autoload, "
            f"from {b['distribution']} {b['version']})") in text
    assert f"needs the shared library {b['library']}" in text
    assert f"Cause: ImportError: {b['library']}: cannot open shared object file" in text
    assert "export TORCH_DEVICE_BACKEND_AUTOLOAD=0" in text
    assert "checked: with TORCH_DEVICE_BACKEND_AUTOLOAD=0, torch 2.13.0" in text
    assert f"pip uninstall {b['distribution']}" in text
    assert "source /usr/local/Ascend/ascend-toolkit/set_env.sh" in text  # the backend's fix


@real_only
def test_doctor_plain_names_torch_npu_its_library_and_the_fixes(broken: dict[str, Any]) -> None:
    proc = run_hal("doctor")
    _no_traceback(proc)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    out = proc.stdout
    assert "[ERROR] torch-import-failed (doctor)" in out
    _check_cause_and_fix(out, broken)
    # The report goes on, probed with autoload off: every section, the selection, a summary.
    for section in ("Selection", "System", "torch", "Backends", "Plugins", "Findings"):
        assert f"\n{section}\n" in f"\n{out}"
    assert "hal.get_device() -> cpu (backend cpu)" in out
    assert "(probed with TORCH_DEVICE_BACKEND_AUTOLOAD=0: import torch fails otherwise)" in out
    assert out.rstrip().splitlines()[-1].startswith("hal doctor: problems found:")


@real_only
def test_doctor_json_carries_the_chain_and_the_autoload_off_retry(broken: dict[str, Any]) -> None:
    proc = run_hal("doctor", "--json")
    _no_traceback(proc, stdout=False)  # torch.error.traceback carries it, as documented
    assert proc.returncode == 1
    report = json.loads(proc.stdout)
    assert report["exit_code"] == 1 and report["summary"]["error"] >= 1
    torch = report["torch"]
    assert torch["installed"] is True and torch["imports"] is False
    assert broken["library"] in torch["error"]["traceback"]
    chain = torch["error"]["chain"]
    assert chain[0]["type"] == "RuntimeError" and "torch_npu" in chain[0]["message"]
    assert chain[-1] == {"type": "ImportError", "message":
                         f"{broken['library']}: cannot open shared object file: "
                         "No such file or directory"}
    assert {"name": "torch_npu", "value": "torch_npu:_autoload",
            "distribution": broken["distribution"],
            "version": broken["version"]} in torch["autoload"]["extensions"]
    assert torch["autoload_disabled"]["imports"] is True
    assert torch["autoload_disabled"]["build"] == "CPU-only"
    findings = {f["id"]: f for f in report["findings"]}
    f = findings["torch-import-failed"]
    assert f["severity"] == "error" and f["source"] == "doctor"
    _check_cause_and_fix(f"torch-import-failed {f['message']} {f['fix']} "
                         f"{findings['ascend.cann_env']['fix']}", broken)
    assert findings["ascend.import_failed"]["severity"] == "error"
    assert report["selection"]["backend"] == "cpu"
    assert [r["outcome"] for r in report["runs"]] == ["done", "done"]
    assert report["runs"][1]["env"] == AUTOLOAD_OFF


@real_only
def test_doctor_markdown_leads_with_the_finding(broken: dict[str, Any]) -> None:
    proc = run_hal("doctor", "--markdown")
    _no_traceback(proc)
    assert proc.returncode == 1
    rows = [x for x in proc.stdout.splitlines() if x.startswith("| error | `torch-import-failed`")]
    assert len(rows) == 1
    _check_cause_and_fix(rows[0] + proc.stdout, broken)


@real_only
@pytest.mark.parametrize("env", [{}, {"HAL_DEVICE": "ascend"}, {"HAL_DEVICE": "ascend",
                                                                "HAL_STRICT": "1"}])
@pytest.mark.parametrize("json_flag", [(), ("--json",)])
def test_devices_says_in_one_line_that_torch_cannot_be_imported(
        broken: dict[str, Any], env: dict[str, str], json_flag: tuple[str, ...]) -> None:
    proc = run_hal("devices", *json_flag, env=env)
    _no_traceback(proc)
    assert proc.returncode == 1 and proc.stdout == ""
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("hal: error: torch is installed but `import torch` fails: "
                           "RuntimeError: Failed to load the backend extension: torch_npu.")
    assert f"(caused by ImportError: {broken['library']}: cannot open" in line
    assert line.endswith("run `hal doctor` for the cause and the fix")


@real_only
def test_devices_with_autoload_off_names_why_ascend_is_not_available(
        broken: dict[str, Any]) -> None:
    proc = run_hal("devices", env=AUTOLOAD_OFF)
    _no_traceback(proc)
    assert proc.returncode == 0, proc.stderr
    ascend = next(x for x in proc.stdout.splitlines() if x.startswith("ascend (priority"))
    assert f"torch_npu {broken['version']} is installed but cannot load the CANN library " \
           f"{broken['library']}" in ascend
    assert "selected: cpu (cpu)" in proc.stdout

    asked = run_hal("devices", env={**AUTOLOAD_OFF, "HAL_DEVICE": "ascend"})
    assert asked.returncode == 0
    assert f"why: fell back to cpu: HAL_DEVICE=ascend cannot be used (ascend: torch_npu " \
           f"{broken['version']} is installed but cannot load the CANN library " \
           f"{broken['library']}" in asked.stdout
    assert "hal: warning:" in asked.stderr and "Traceback" not in asked.stderr


@pytest.mark.skipif(REAL and _npu_dist() is not None,
                    reason="the real extension is autoloaded first in this env")
def test_devices_one_line_with_a_fake_broken_extension(tmp_path: Path) -> None:
    from test_doctor_cli import autoload_extension, pythonpath

    env = pythonpath(autoload_extension(tmp_path / "site"))
    proc = run_hal("devices", env=env)
    _no_traceback(proc)
    assert proc.returncode == 1 and proc.stdout == ""
    (line,) = proc.stderr.strip().splitlines()
    assert "`import torch` fails: RuntimeError: Failed to load the backend extension: " \
           "fake_npu" in line
    assert "(caused by ImportError: libascendcl.so: cannot open shared object file" in line
    assert line.endswith("run `hal doctor` for the cause and the fix")
    assert run_hal("devices", env={**env, **AUTOLOAD_OFF}).returncode == 0
