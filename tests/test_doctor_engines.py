"""hal doctor's serving-engine findings (hal/doctor/engines.py): pins read from metadata only.

The cheap tests write engine distributions' metadata; the real ones (``tox -e integrations``)
install vLLM's and SGLang's real wheels from the registry without their dependencies and run
``hal doctor --json`` over them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from helpers import run_hal

from hal.doctor import engines
from hal.versions import torch_version

#: Engines and an engine platform plugin (vllm-ascend pins torch-npu, read through its
#: ``vllm.platform_plugins`` entry point), as wheels only: building an sdist is never needed.
REAL = {"vllm": "0.34.0", "sglang": "0.5.23", "vllm-ascend": "0.23.0"}


def write_dist(root: Path, name: str, version: str, requires: list[str], entry_points: str = "") -> None:
    """A dist-info with ``Requires-Dist`` lines, as pip writes it (no module: nothing to import)."""
    info = root / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    lines = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}",
             *(f"Requires-Dist: {r}" for r in requires)]
    (info / "METADATA").write_text("\n".join(lines) + "\n")
    if entry_points:
        (info / "entry_points.txt").write_text(textwrap.dedent(entry_points))


def found(root: Path) -> dict[str, engines.Finding]:
    return {f.id: f for f in engines.findings(engines.installed([str(root), *sys.path]))}


def test_an_engine_whose_torch_pin_is_met_is_ok(tmp_path: Path) -> None:
    have = torch_version()
    assert have is not None
    write_dist(tmp_path, "vllm", "9.9", [f"torch=={have.split('+')[0]}", "pydantic>=999",
                                         "torch-nosuch==1.0; extra == 'extra'"])
    got = found(tmp_path)["engine-pins-vllm"]
    assert got.severity == "ok", got  # a non-torch pin is pip's business; extras do not apply


def test_a_mismatched_torch_and_a_missing_extension_are_named_with_the_fix(tmp_path: Path) -> None:
    write_dist(tmp_path, "sglang", "1.0", ["torch==1.0.0", "torch-accel-ext==3.1; python_version >= '3'"])
    got = found(tmp_path)["engine-pins-sglang"]
    assert got.severity == "error"
    assert f"torch==1.0.0 but {torch_version()} is installed" in got.message
    assert "torch-accel-ext==3.1 is not installed" in got.message
    assert got.fix.startswith("pip install 'torch==1.0.0' 'torch-accel-ext==3.1'")


def test_an_engines_platform_plugin_is_found_by_its_entry_point_group(tmp_path: Path) -> None:
    write_dist(tmp_path, "engine-plugin-x", "0.2", ["torch-x-ext==2.5.1"],
               "[vllm.platform_plugins]\nx = engine_plugin_x:register\n")
    got = found(tmp_path)["engine-pins-engine-plugin-x"]
    assert got.severity == "error" and "torch-x-ext==2.5.1 is not installed" in got.message


def test_a_distribution_that_is_no_engine_gets_no_engine_finding(tmp_path: Path) -> None:
    write_dist(tmp_path, "some-trainer", "1.0", ["torch==1.0.0"])
    assert "engine-pins-some-trainer" not in found(tmp_path)


# -- real metadata from the registry (tox -e integrations) -----------------------------------------


@pytest.fixture(scope="session")
def real_engines(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if os.environ.get("HAL_TEST_INTEGRATIONS") != "1":
        pytest.skip("downloads vLLM's and SGLang's wheels: runs in `tox -e integrations`")
    work = tmp_path_factory.mktemp("engines")
    wheels, target, meta = work / "wheels", work / "target", work / "meta"
    pins = [f"{n}=={v}" for n, v in REAL.items()]
    for cmd in (["download", "--no-deps", "-q", "--retries", "1", "--timeout", "120",
                 "-d", str(wheels), *pins],
                ["install", "--no-deps", "-q", "--no-index", "--find-links", str(wheels),
                 "--target", str(target), *pins]):
        done = subprocess.run([sys.executable, "-m", "pip", *cmd], capture_output=True, text=True,
                              timeout=900)
        if done.returncode != 0:
            pytest.skip(f"the registry could not deliver {' '.join(pins)}: {done.stderr.strip()[-300:]}")
    meta.mkdir()
    for info in target.glob("*.dist-info"):  # the metadata only: the engines' code is never needed
        subprocess.run(["cp", "-r", str(info), str(meta)], check=True)
    return meta


@pytest.mark.slow
def test_hal_doctor_names_real_vllm_and_sglang_torch_mismatches(real_engines: Path) -> None:
    done = run_hal("doctor", "--json", env={"PYTHONPATH": str(real_engines)}, timeout=300)
    report = json.loads(done.stdout)
    by_id = {f["id"]: f for f in report["findings"]}
    for name, version in REAL.items():
        dist = next(real_engines.glob(f"{name.replace('-', '_')}-{version}.dist-info"))
        meta = (dist / "METADATA").read_text().splitlines()
        pin = next(line.split(": ", 1)[1] for line in meta if line.startswith("Requires-Dist: torch=="))
        label = next(line.split(": ", 1)[1] for line in meta if line.startswith("Name: "))
        got = by_id[f"engine-pins-{name}"]
        assert got["severity"] == "error", got
        assert f"{label} {version} was built for another torch stack" in got["message"]
        assert f"{pin} but {torch_version()} is installed" in got["message"]
        assert f"'{pin}'" in got["fix"]
        for ext in (line.split(": ", 1)[1] for line in meta if line.startswith("Requires-Dist: torch-npu")):
            assert f"{ext} is not installed" in got["message"]  # the plugin's own extension pin
    assert done.returncode == 1  # errors found: the doctor's exit status says so
