"""Build and install torch_openreg (PyTorch's reference out-of-tree device) into this python.

    python scripts/build_openreg.py [--check]

torch_openreg is not on any package registry: its source is pytorch's
``test/cpp_extensions/open_registration_extension/torch_openreg``, taken file by file at the
versions that compile against torch 2.13 (docs/backends-accelerator.md), and it is never kept in
this project's tree.  This script looks for that source in ``$HAL_OPENREG_SRC`` or
``~/.cache/hal-test/openreg/src``, builds a wheel in a temporary folder (g++, cmake, ninja or make;
cached per source and torch version in ``~/.cache/hal-test/openreg/wheels``) and installs it.
Without the source it says so and exits 3, and tests/test_openreg.py skips with that reason;
under tox it also writes the reason to ``$HAL_TOX_SKIP_FILE``, so the env's own result line
says SKIP instead of OK (toxfile.py).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

CACHE = Path(os.environ.get("HAL_TEST_CACHE", Path.home() / ".cache" / "hal-test")) / "openreg"
NO_SOURCE = 3


def source_dir() -> Path:
    """Where the torch_openreg source is expected."""
    return Path(os.environ.get("HAL_OPENREG_SRC", CACHE / "src"))


def digest(src: Path, torch_version: str) -> str:
    """A hash of every source file and the torch version: the cached wheel's key."""
    h = hashlib.sha256(torch_version.encode())
    for f in sorted(p for p in src.rglob("*") if p.is_file() and "build" not in p.parts):
        h.update(str(f.relative_to(src)).encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


def cannot(reason: str) -> int:
    """Say why torch_openreg cannot be built (and tell tox, where it runs us); NO_SOURCE."""
    print(reason)
    marker = os.environ.get("HAL_TOX_SKIP_FILE")
    if marker:
        Path(marker).write_text(f"torch_openreg was not built: {reason}\n")
    return NO_SOURCE


def main(argv: list[str]) -> int:
    """Build (or reuse) the wheel and pip-install it; 3 when the source cannot be had."""
    src = source_dir()
    if not (src / "setup.py").is_file() or not (src / "csrc").is_dir():
        return cannot(f"torch_openreg source not found at {src}: it is not on any package registry "
                      "(pytorch's test/cpp_extensions/open_registration_extension/torch_openreg "
                      "at the file versions in docs/backends-accelerator.md); set HAL_OPENREG_SRC "
                      "to a copy")
    missing = [t for t in ("cmake", "g++") if shutil.which(t) is None]
    if missing:
        return cannot(f"cannot build torch_openreg: {', '.join(missing)} not found")
    import torch

    wheels = CACHE / "wheels" / digest(src, torch.__version__)
    built = sorted(wheels.glob("torch_openreg-*.whl"))
    env = {**os.environ, "TORCH_DEVICE_BACKEND_AUTOLOAD": "0",
           "MAX_JOBS": os.environ.get("MAX_JOBS", "2")}
    if not built:
        with tempfile.TemporaryDirectory(prefix="torch-openreg-") as tmp:
            work = Path(tmp) / "torch_openreg"
            shutil.copytree(src, work, ignore=shutil.ignore_patterns("build", "*.so", "*.egg-info"))
            wheels.mkdir(parents=True, exist_ok=True)
            subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-build-isolation",
                            "--no-deps", "-w", str(wheels), str(work)], check=True, env=env)
        built = sorted(wheels.glob("torch_openreg-*.whl"))
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--force-reinstall",
                    str(built[-1])], check=True, env=env)
    print(f"installed {built[-1].name} for torch {torch.__version__}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
