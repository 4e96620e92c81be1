"""The generic doctor findings on hand-made report data: torch, /dev/shm, plugins, selection."""

from __future__ import annotations

from typing import Any

import pytest

from hal.doctor import findings as g
from hal.doctor.render import render
from hal.doctor.torchinfo import build_label, build_runtimes, version_attributes

MiB = 1 << 20


def torch_error(*chain: tuple[str, str], extensions: list[dict[str, Any]] | None = None,
                traceback: str = "") -> dict[str, Any]:
    return {"installed": True, "imports": False, "distribution_version": "2.13.0",
            "error": {"type": chain[0][0], "message": chain[0][1], "traceback": traceback,
                      "chain": [{"type": t, "message": m} for t, m in chain]},
            "autoload": {"enabled": True, "extensions": extensions or []}}


EXT = {"name": "myext", "value": "my_ext:_autoload", "distribution": "my-ext", "version": "2.0"}


def test_autoload_failure_names_extension_library_and_fixes() -> None:
    info = torch_error(
        ("RuntimeError", "Failed to load the backend extension: myext. You can disable ..."),
        ("ImportError", "libfoo_rt.so.3: cannot open shared object file"), extensions=[EXT])
    (f,) = g.torch_findings(info, retry={"imports": True, "version": "2.13.0"})
    assert (f.id, f.severity) == ("torch-import-failed", "error")
    assert "'myext'" in f.message and "my-ext 2.0" in f.message
    assert "libfoo_rt.so.3" in f.message and "libfoo_rt.so.3" in f.fix
    assert f.fix.startswith("export TORCH_DEVICE_BACKEND_AUTOLOAD=0")
    assert "checked" in f.fix and "pip uninstall my-ext" in f.fix


def test_failure_traced_to_an_extension_module_without_torch_message() -> None:
    info = torch_error(("ValueError", "bad"), extensions=[EXT],
                       traceback='File "/site/my_ext/__init__.py", line 1')
    (f,) = g.torch_findings(info)
    assert "'myext'" in f.message and "it raised ValueError: bad" in f.message


@pytest.mark.parametrize(("message", "fix_part"), [
    ("libc10.so: cannot open shared object file", "pip install --force-reinstall torch==2.13.0"),
    ("undefined symbol: _ZN3c10", "matching versions"),
    ("something else", "pip install --force-reinstall torch==2.13.0"),
])
def test_plain_import_failures(message: str, fix_part: str) -> None:
    (f,) = g.torch_findings(torch_error(("ImportError", message)))
    assert f.id == "torch-import-failed" and fix_part in f.fix and message in f.message


def test_torch_missing_and_ok() -> None:
    (missing,) = g.torch_findings({"installed": False}, executable="/x/python")
    assert missing.id == "torch-missing" and "/x/python" in missing.message
    (ok,) = g.torch_findings({"installed": True, "version": "2.13.0", "build": "CPU-only"})
    assert (ok.id, ok.severity) == ("torch-ok", "ok")


@pytest.mark.parametrize(("total", "expected"), [
    (64 * MiB, "shm-small"), (1023 * MiB, "shm-small"), (1024 * MiB, "shm-ok"),
    (None, "shm-missing")])
def test_shm_threshold(total: int | None, expected: str) -> None:
    shm = None if total is None else {"total": total, "free": total}
    (f,) = g.shm_findings(shm)
    assert f.id == expected
    if expected != "shm-ok":
        assert f.severity == "warn" and "--shm-size" in f.fix


def test_plugin_statuses() -> None:
    found = g.plugin_findings([
        {"name": "a", "status": "failed", "error": "import failed: boom",
         "distribution": "hal-a", "version": "1"},
        {"name": "b", "status": "missing", "error": "named in HAL_PLUGINS but not installed"},
        {"name": "c", "status": "blocked", "error": "listed in HAL_DISABLE_PLUGINS"},
        {"name": "d", "status": "loaded", "error": None}])
    assert [(f.id, f.severity) for f in found] == [("plugin-failed", "error"),
                                                   ("plugin-missing", "warn")]
    assert "HAL_DISABLE_PLUGINS=a" in found[0].fix and "boom" in found[0].message


def test_selection_findings() -> None:
    (failed,) = g.selection_findings(None, {"type": "ConfigError", "message": "HAL_DEVICE bad"})
    assert failed.id == "selection-failed" and failed.severity == "error"
    (fell,) = g.selection_findings({"fell_back": True, "warning": "w"}, None)
    assert fell.id == "selection-fell-back"
    (ok,) = g.selection_findings({"fell_back": False, "device": "cpu", "backend": "cpu"}, None)
    assert ok.severity == "ok"


def test_isolation_findings() -> None:
    hung = g.isolation_finding("hung", {"step": "backend x", "backend": "x"}, "no answer",
                               "xplug")
    assert hung.id == "probe-hung" and "HAL_DISABLE_PLUGINS=xplug" in hung.fix
    crashed = g.isolation_finding("crashed", {"step": "import torch"}, "killed by SIGSEGV", None,
                                  "line one\nSegmentation fault\n")
    assert crashed.id == "torch-import-crashed" and "Segmentation fault" in crashed.message


class _Version:
    __all__ = ("__version__", "debug", "git_version", "alpha", "beta")
    __version__ = "2.13.0+alpha12.6"
    debug = False
    git_version = "1234567890abcdef"
    alpha = "12.6"
    beta = None


def test_build_flavour_from_torch_version_attributes() -> None:
    attrs = version_attributes(_Version)
    assert attrs["beta"] is None and attrs["git_version"] == "1234567890abcdef"
    runtimes = build_runtimes(attrs)
    assert runtimes == {"alpha": "12.6"}
    assert build_label(runtimes) == "alpha 12.6" and build_label({}) == "CPU-only"


def test_renderers_handle_a_minimal_report() -> None:
    report = {"schema": "hal.doctor/1", "summary": {"error": 1, "warn": 0, "info": 0, "ok": 0},
              "findings": [{"id": "x", "severity": "error", "message": "m | n", "fix": "f",
                            "source": "doctor"}],
              "torch": None, "selection": None, "backends": [], "plugins": [],
              "hardware": [], "environment": {}, "system": {}, "seconds": 0.1}
    assert "[ERROR] x (doctor): m | n" in render(report, "plain")
    assert "m \\| n" in render(report, "markdown")
    assert "problems found" in render(report, "rich")
