"""scripts/device-check.sh against a stand-in for the GPU machine's image, offline.

That machine's ``python3`` is itself a venv holding torch and hal's dependencies, with no network.
The stand-in is a venv whose site-packages reach this environment's packages through a ``.pth``
file (hal itself and the test plugins left out), used as "the system python" with every index
closed.  The check must install hal into it and run every section to a PASS/FAIL line, one file
per section; here, with no GPU, every section fails with its reason.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "device-check.sh"
#: Entries of this environment's site-packages that the GPU image does not have.
NOT_IN_IMAGE = ("torch_hal", "__editable__", "hal_mps", "hal_toyaccel", "_hal_")
SECTIONS = ["devices", "probe-precision", "memory", "oom", "bench", "nccl", "plan", "engine"]

pytestmark = pytest.mark.slow


def make_standin(tmp: Path, leave_out: tuple[str, ...] = ()) -> Path:
    """A venv that sees this environment's packages (minus hal and ``leave_out``); its python."""
    site = Path(sysconfig.get_paths()["purelib"])
    base = tmp / "image-packages"
    base.mkdir()
    for entry in site.iterdir():
        if entry.name.endswith(".pth") or entry.name.startswith(NOT_IN_IMAGE + leave_out):
            continue
        (base / entry.name).symlink_to(entry)
    venv = tmp / "standin"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True,
                   timeout=120)
    python = venv / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()"
                              "['purelib'])"], capture_output=True, text=True, check=True,
                             timeout=60).stdout.strip()
    Path(purelib, "image.pth").write_text(f"{base}\n")
    return python


def wheel_of_installed(dist: str, dest: Path) -> Path:
    """A wheel of an installed pure-Python distribution, zipped from its installed files."""
    from importlib import metadata

    d = metadata.distribution(dist)
    name = d.metadata["Name"].replace("-", "_")
    path = dest / f"{name}-{d.version}-py3-none-any.whl"
    root = Path(str(d.locate_file("")))
    with zipfile.ZipFile(path, "w") as z:
        for f in d.files or []:
            if "__pycache__" not in str(f) and not str(f).startswith(".."):
                z.write(root / f, str(f))
    return path


def run_check(python: Path, out: Path, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items()
            if not k.startswith(("PIP_", "HAL_", "VIRTUAL_ENV", "PYTHON"))}
    base.update(PYTHON=str(python), OUT=str(out), PATH=f"{python.parent}:{base['PATH']}",
                # no network: any index or proxy use fails at once
                http_proxy="http://127.0.0.1:9", https_proxy="http://127.0.0.1:9",
                PIP_CONFIG_FILE=os.devnull, TMPDIR=str(out.parent), **env)
    return subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, env=base,
                          timeout=600)


@pytest.mark.timeout(600)
def test_the_check_installs_into_the_image_python_and_runs_every_section(tmp_path: Path) -> None:
    python = make_standin(tmp_path)
    probe = subprocess.run([str(python), "-c", "import torch, pluggy; import hal"],
                           capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert "No module named 'hal'" in probe.stderr  # torch is there, hal is not: as on the image
    out = tmp_path / "out"
    done = run_check(python, out)
    setup = (out / "1.txt").read_text().split("$ hal devices")[0]
    assert "nothing missing: no wheels needed" in setup
    assert "installed: pip install --no-deps --no-build-isolation -e ." in setup, setup
    assert f"from {ROOT}/hal/__init__.py" in setup
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith(("PASS ", "FAIL "))]
    summary = lines[len(lines) // 2:]
    assert [ln.split(":")[0] for ln in summary] == [
        f"FAIL {n} {s}" for n, s in enumerate(SECTIONS, 1)], done.stdout
    # No GPU here: each section says why, and none ran out of time or lost its verdict.
    assert all("timed out" not in ln and "no verdict" not in ln for ln in summary), summary
    assert "cuda not available" in summary[0]
    assert all("no CUDA device" in ln for ln in summary[2:]), summary
    assert sorted(p.name for p in out.glob("*.txt")) == [f"{n}.txt" for n in range(1, 9)]
    assert done.returncode == 8
    assert (out / "1.txt").read_text().rstrip().endswith(summary[0])


@pytest.mark.timeout(600)
def test_a_missing_package_comes_from_the_carried_wheelhouse_only(tmp_path: Path) -> None:
    python = make_standin(tmp_path, leave_out=("rich",))
    wheels = tmp_path / "wheelhouse"
    wheels.mkdir()
    wheel_of_installed("rich", wheels)
    out = tmp_path / "out"
    done = run_check(python, out, HAL_CHECK_SECTIONS="devices", HAL_CHECK_WHEELHOUSE=str(wheels))
    setup = (out / "1.txt").read_text().split("$ hal devices")[0]
    assert "missing from" in setup and setup.split("missing from", 1)[1].split("\n")[0].endswith(
        ": rich"), setup
    assert "Successfully installed rich" in setup, setup
    assert "installed: pip install --no-deps --no-build-isolation -e ." in setup
    assert done.stdout.count("FAIL 1 devices: cuda not available") == 2, done.stdout


def test_hal_is_staged_with_its_entry_points_where_an_editable_install_cannot_run(
        tmp_path: Path) -> None:
    stage = tmp_path / "stage"
    subprocess.run([sys.executable, str(ROOT / "scripts" / "stage_hal.py"), str(ROOT), str(stage)],
                   check=True, timeout=60)
    code = ("import hal; print(sorted(p['name'] for p in hal.list_plugins() "
            "if p['distribution'] == 'torch-hal'))")
    env = {**os.environ, "PYTHONPATH": str(stage)}
    python = make_standin(tmp_path)
    done = subprocess.run([str(python), "-c", code], capture_output=True, text=True, env=env,
                          timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("[")[1].startswith("'accelerator', 'ascend', 'cpu', 'cuda'")
