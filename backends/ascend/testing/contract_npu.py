"""The real torch_npu API, read from its wheel without importing it (importing needs CANN).

``obtain_wheel`` fetches the torch-npu wheel that matches a torch release with ``pip download``
into a cache directory (or uses ``HAL_TEST_TORCH_NPU_WHEEL``); ``npu_names`` parses
``torch_npu/npu/*.py`` straight out of the zip with ``ast`` (star imports resolved through
``__all__``); ``binary_strings_present`` checks names that only exist in the C++ extension
(device-property attributes, the allocator's OOM text) in ``libtorch_npu.so``.
"""

from __future__ import annotations

import ast
import glob
import inspect
import os
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterable
from pathlib import Path

from hal.testing.contract import names_from_source

WHEEL_ENV = "HAL_TEST_TORCH_NPU_WHEEL"
CACHE_ENV = "HAL_TEST_CACHE"
_PACKAGE = "torch_npu/npu/"
_LIBRARY = "torch_npu/lib/libtorch_npu.so"


def cache_dir() -> Path:
    """Where downloaded wheels are kept between runs (HAL_TEST_CACHE or ~/.cache/hal-test)."""
    base = os.environ.get(CACHE_ENV) or os.path.join(os.path.expanduser("~"), ".cache", "hal-test")
    path = Path(base) / "torch-npu"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _cached(directory: Path, release: str | None) -> Path | None:
    pattern = f"torch_npu-{release}*.whl" if release else "torch_npu-*.whl"
    found = sorted(glob.glob(str(directory / pattern)))
    return Path(found[-1]) if found else None


def obtain_wheel(torch_release: str, directory: Path | None = None,
                 timeout: float = 180) -> tuple[Path | None, str]:
    """The torch-npu wheel for ``torch_release`` (else the newest release), and how it was found.

    Returns ``(None, reason)`` when neither the cache nor the registry can provide one.
    """
    explicit = os.environ.get(WHEEL_ENV)
    if explicit:
        path = Path(explicit)
        return (path, f"{WHEEL_ENV}={explicit}") if path.is_file() else (
            None, f"{WHEEL_ENV}={explicit} is not a file")
    where = directory or cache_dir()
    hit = _cached(where, torch_release)
    if hit:
        return hit, f"cached {hit.name}"
    errors = []
    specs = [f"torch-npu~={torch_release}", "torch-npu"]
    # Sources are the same on every platform: fall back to a wheel tag pip can always fetch.
    platform = ["--python-version", "3.11", "--platform", "manylinux_2_28_x86_64"]
    for spec in specs:
        for extra in ([], platform):
            cmd = [sys.executable, "-m", "pip", "download", spec, "--no-deps",
                   "--only-binary=:all:", "--quiet", "-d", str(where), *extra]
            try:
                done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
            except (OSError, subprocess.TimeoutExpired) as exc:
                errors.append(f"{spec}: {exc}")
                continue
            if done.returncode == 0:
                hit = _cached(where, torch_release if spec != "torch-npu" else None)
                if hit:
                    return hit, f"downloaded {hit.name} ({spec})"
            errors.append(f"{spec}: {(done.stderr or done.stdout).strip().splitlines()[-1:]}")
    return None, "pip download torch-npu failed: " + "; ".join(errors)


def _read(z: zipfile.ZipFile, name: str) -> str:
    return z.read(name).decode("utf-8")


def _all_names(source: str) -> list[str] | None:
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets):
            try:
                value = ast.literal_eval(node.value)
            except ValueError:
                return None
            return [str(v) for v in value]
    return None


def _module_names(z: zipfile.ZipFile, module: str, tmp: Path) -> dict[str, inspect.Signature | None]:
    """Top-level names of ``torch_npu/npu/<module>.py`` (or the package __init__) via ast."""
    member = f"{_PACKAGE}{module}.py"
    path = tmp / member.replace("/", "_")
    path.write_text(_read(z, member), encoding="utf-8")
    return names_from_source(path)


def npu_names(wheel: Path) -> dict[str, inspect.Signature | None]:
    """Every public name of ``torch_npu.npu`` (dotted for submodules), with function signatures.

    The package ``__init__`` is parsed; each ``from .x import *`` adds module x's ``__all__``
    (with x's own signatures); each submodule's names are also available as ``x.name``.
    """
    names: dict[str, inspect.Signature | None] = {}
    with zipfile.ZipFile(wheel) as z, tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        modules = sorted(n[len(_PACKAGE):-3] for n in z.namelist()
                         if n.startswith(_PACKAGE) and n.endswith(".py") and
                         "/" not in n[len(_PACKAGE):])
        per_module = {m: _module_names(z, m, tmp) for m in modules}
        init_source = _read(z, f"{_PACKAGE}__init__.py")
        names.update(per_module["__init__"])
        for node in ast.walk(ast.parse(init_source)):
            if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module in per_module:
                sub = per_module[node.module]
                for alias in node.names:
                    if alias.name == "*":
                        exported = _all_names(_read(z, f"{_PACKAGE}{node.module}.py"))
                        for name in exported if exported is not None else [
                                n for n in sub if not n.startswith("_")]:
                            if name in sub:
                                names[name] = sub[name]
                    elif alias.name in sub:
                        names[alias.asname or alias.name] = sub[alias.name]
        for module, sub in per_module.items():
            if module != "__init__":
                names[module] = None
                for name, sig in sub.items():
                    names[f"{module}.{name}"] = sig
    return names


def binary_strings_present(wheel: Path, strings: Iterable[str]) -> dict[str, bool]:
    """Whether each string occurs in libtorch_npu.so (pybind attribute names, error texts).

    Identifiers must appear as whole NUL-terminated C strings; other texts as substrings.
    """
    with zipfile.ZipFile(wheel) as z:
        data = z.read(_LIBRARY)
    return {s: (b"\0" + s.encode() + b"\0" if s.isidentifier() else s.encode()) in data
            for s in strings}


def wheel_version(wheel: Path) -> str:
    """The version part of a wheel's file name (``torch_npu-2.13.0-...whl`` -> ``2.13.0``)."""
    return wheel.name.split("-")[1]
