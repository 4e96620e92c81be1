"""torch_openreg, PyTorch's reference out-of-tree device, through hal's generic backend.

A real non-CPU device type with its own allocator, streams and memory statistics, loaded by
torch's backend autoload with no hal plugin.  Built outside this tree by scripts/build_openreg.py
(``tox -e openreg``); where it is not installed those tests skip with the reason.  The broken
install (entry point left, package gone) needs no build and runs everywhere.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from helpers import ISOLATED_VARS, make_dist

ROOT = Path(__file__).resolve().parents[1]
IN_ENV = os.environ.get("HAL_TEST_OPENREG") == "1"
installed = importlib.util.find_spec("torch_openreg") is not None
needs_openreg = pytest.mark.skipif(
    not installed,
    reason="torch_openreg is not installed: its source is not on any package registry "
           "(scripts/build_openreg.py says where it looks; see the tox -e openreg log)"
    if IN_ENV else "needs torch_openreg built and installed (tox -e openreg)")

pytestmark = pytest.mark.slow


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ISOLATED_VARS}
    env.update(extra)
    return env


def _python(code: str, cwd: Path, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, env=_env(**extra), timeout=300, cwd=cwd)


# -- a half-removed install: the entry point left behind, the package gone -------------------------


@pytest.fixture(scope="module")
def stale_entry_point(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """torch_openreg's distribution metadata with its torch.backends entry point, no package."""
    if installed:
        pytest.skip("torch_openreg is installed here, so its package is not gone; the "
                    "half-removed install is tested where it is not (the main suite)")
    return make_dist(tmp_path_factory.mktemp("stale-openreg"), "torch_openreg", "0.0.1",
                     {"torch_openreg": "torch_openreg:_autoload"}, {}, group="torch.backends")


def test_a_stale_entry_point_breaks_import_torch_for_real(stale_entry_point: Path) -> None:
    env = {"PYTHONPATH": str(stale_entry_point)}
    done = _python("import torch", stale_entry_point, **env)
    assert done.returncode != 0
    assert "Failed to load the backend extension: torch_openreg" in done.stderr


def test_doctor_names_the_stale_extension_and_the_fixes(stale_entry_point: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "hal", "doctor", "--json"], capture_output=True,
                          text=True, env=_env(PYTHONPATH=str(stale_entry_point)), timeout=300,
                          cwd=stale_entry_point)
    assert done.returncode == 1, done.stderr
    report = json.loads(done.stdout)
    assert report["torch"]["imports"] is False
    finding = next(f for f in report["findings"] if f["id"] == "torch-import-failed")
    assert ("device extension 'torch_openreg' (entry point torch_openreg = "
            "torch_openreg:_autoload, from torch_openreg 0.0.1)") in finding["message"]
    assert "ModuleNotFoundError: No module named 'torch_openreg'" in finding["message"]
    assert "export TORCH_DEVICE_BACKEND_AUTOLOAD=0" in finding["fix"]
    assert "pip uninstall torch_openreg" in finding["fix"]
    assert report["selection"]["backend"] == "cpu"  # probed with autoload off


def test_hal_devices_says_it_in_one_line(stale_entry_point: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "hal", "devices"], capture_output=True,
                          text=True, env=_env(PYTHONPATH=str(stale_entry_point)), timeout=300,
                          cwd=stale_entry_point)
    assert done.returncode != 0
    assert "Traceback" not in done.stderr + done.stdout
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "torch_openreg" in lines[0], done.stderr


# -- the real device ------------------------------------------------------------------------------


SELECT = """
    import json, torch, hal
    sel = hal.select()
    b = hal.get_backend()
    before = b.memory(0)
    x = torch.ones(1000, device=hal.get_device())
    during = b.memory(0)
    y = (x + 1).sum().item()
    b.synchronize(0)
    del x
    after = b.memory(0)
    print(json.dumps({"backend": sel.backend.name, "device": str(hal.get_device()),
                      "reason": sel.reason, "sum": y, "count": sel.candidates and
                      next(c.device_count for c in sel.candidates if c.name == "accelerator"),
                      "allocated": [before.allocated, during.allocated, after.allocated],
                      "source": during.source}))
"""


@needs_openreg
def test_hal_selects_openreg_with_no_hal_plugin(tmp_path: Path) -> None:
    done = _python(SELECT, tmp_path)
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout)
    assert (got["backend"], got["device"]) == ("accelerator", "openreg:0")
    assert "accelerator 'openreg' with 2 device(s)" in got["reason"]
    assert got["sum"] == 2000.0 and got["count"] == 2
    before, during, after = got["allocated"]
    assert during - before >= 4000 and after == before  # its own allocator's statistics
    assert "torch.accelerator" in got["source"]


@needs_openreg
def test_the_reference_engine_runs_there_unchanged(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, str(ROOT / "examples" / "generate.py")],
                          capture_output=True, text=True, env=_env(), timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "openreg" in done.stdout + done.stderr
