"""Helpers for hal's tests: real installed-looking distributions and real CLI subprocesses."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

#: Environment variables that change hal's decisions; tests start without them.
ISOLATED_VARS = ("HAL_DEVICE", "HAL_STRICT", "HAL_PLUGINS", "HAL_DISABLE_PLUGINS",
                 "HAL_PRECISION", "LOCAL_RANK", "RANK", "WORLD_SIZE", "TOYACCEL_DEVICES")


def make_dist(
    root: Path, dist: str, version: str, entry_points: dict[str, str], modules: dict[str, str]
) -> Path:
    """Write a real installed-looking distribution (dist-info + modules) under ``root``.

    importlib.metadata finds it through sys.path or PYTHONPATH exactly like a pip install.
    """
    info = root / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    eps = "\n".join(f"{name} = {target}" for name, target in entry_points.items())
    (info / "entry_points.txt").write_text(f"[hal]\n{eps}\n")
    for name, source in modules.items():
        (root / f"{name}.py").write_text(textwrap.dedent(source))
    return root


def run_hal(*args: str, env: dict[str, str] | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run the real ``hal`` CLI (``python -m hal``) in a subprocess with a clean HAL_* env."""
    base = {k: v for k, v in os.environ.items() if k not in ISOLATED_VARS}
    base.update(env or {})
    return subprocess.run([sys.executable, "-m", "hal", *args], capture_output=True,
                          text=True, env=base, timeout=timeout)
