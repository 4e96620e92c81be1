"""Helpers for hal's tests: real installed-looking distributions and real CLI subprocesses."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hal import hookimpl
from hal.contract import Backend, Probe

#: Environment variables that change hal's decisions; tests start without them.
ISOLATED_VARS = ("HAL_DEVICE", "HAL_STRICT", "HAL_PLUGINS", "HAL_DISABLE_PLUGINS",
                 "HAL_PRECISION", "LOCAL_RANK", "RANK", "WORLD_SIZE", "TOYACCEL_DEVICES")


def make_dist(
    root: Path, dist: str, version: str, entry_points: dict[str, str], modules: dict[str, str],
    group: str = "hal",
) -> Path:
    """Write a real installed-looking distribution (dist-info + modules) under ``root``.

    importlib.metadata finds it through sys.path or PYTHONPATH exactly like a pip install;
    ``group`` is the entry-point group (``hal``, or ``torch.backends`` for a torch device extension).
    """
    info = root / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    eps = "\n".join(f"{name} = {target}" for name, target in entry_points.items())
    (info / "entry_points.txt").write_text(f"[{group}]\n{eps}\n")
    for name, source in modules.items():
        (root / f"{name}.py").write_text(textwrap.dedent(source))
    return root


def plugin_site(root: Path, name: str, source: str) -> Path:
    """Install one hal plugin ``hal-<name>`` (module ``hal_<name>``) under ``root``; return ``root``."""
    return make_dist(root, f"hal-{name}", "0.1", {name: f"hal_{name}"}, {f"hal_{name}": source})


def pythonpath(*dirs: Path) -> dict[str, str]:
    """An env update that puts ``dirs`` first on the child's PYTHONPATH, keeping the current one."""
    return {"PYTHONPATH": os.pathsep.join([*map(str, dirs), os.environ.get("PYTHONPATH", "")])}


_BACKEND = '''
import hal

class {cls}(hal.Backend):
    name = {name!r}
    device_type = {device_type!r}
{priority}
    def probe(self):
{probe}

{extra}

@hal.hookimpl
def hal_backends():
    return [{cls}()]
'''


def backend_source(name: str, probe: str = "return hal.Probe(True, 'here', 1)", *,
                   device_type: str = "meta", priority: str | None = "60", extra: str = "",
                   head: str = "", cls: str = "B") -> str:
    """Source of a plugin module with one backend class ``cls``; ``probe`` is the body of probe().

    ``priority`` is source text (None leaves the class attribute out); ``extra`` adds methods and
    ``head`` goes before everything (imports, import-time side effects).
    """
    body = textwrap.indent(textwrap.dedent(probe).strip(), " " * 8)
    return textwrap.dedent(head) + _BACKEND.format(
        cls=cls, name=name, device_type=device_type, probe=body,
        priority="" if priority is None else f"    priority = {priority}\n",
        extra=textwrap.indent(textwrap.dedent(extra).strip(), "    "))


def hide_module_site(root: Path, module: str) -> Path:
    """Write a ``sitecustomize`` under ``root`` that makes ``module`` (and its submodules) not
    importable, as if it were not installed; put ``root`` on PYTHONPATH to use it."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "sitecustomize.py").write_text(textwrap.dedent(f"""
        import sys
        class _Hide:
            def find_spec(self, name, path=None, target=None):
                if name == {module!r} or name.startswith({module + "."!r}):
                    raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
                return None
        sys.meta_path.insert(0, _Hide())
    """))
    return root


class BackendsPlugin:
    """An in-process plugin object whose ``hal_backends`` hook returns the given backends."""

    def __init__(self, *backends: Any) -> None:
        self._backends = list(backends)

    @hookimpl
    def hal_backends(self) -> list[Any]:
        """The backends given at construction."""
        return self._backends


def run_hal(*args: str, env: dict[str, str] | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run the real ``hal`` CLI (``python -m hal``) in a subprocess with a clean HAL_* env."""
    base = {k: v for k, v in os.environ.items() if k not in ISOLATED_VARS}
    base.update(env or {})
    return subprocess.run([sys.executable, "-m", "hal", *args], capture_output=True,
                          text=True, env=base, timeout=timeout)


def read_terminal(fd: int) -> bytes:
    """Everything a child writes to the pseudo-terminal whose leader is ``fd``, until its last
    writer is gone (EOF, or EIO on Linux); ``fd`` is closed after."""
    out = b""
    try:
        while True:
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            out += chunk
    finally:
        os.close(fd)
    return out


class StubBackend(Backend):
    """A test-only meta backend whose probe reports its ``probe_*`` class attributes; subclasses set
    ``name`` and the behaviour under test."""

    device_type = "meta"
    probe_available, probe_reason, probe_count = True, "test only", 1

    def probe(self) -> Probe:
        """The probe the class attributes describe."""
        return Probe(self.probe_available, self.probe_reason, self.probe_count)


class UnavailableBackend(StubBackend):
    """A stub backend that is never available, so selection never picks it."""

    probe_available, probe_count = False, 0


def conformance_suite(make: Callable[[], Backend], oom_error: BaseException, vendor: str) -> type:
    """hal's conformance test class with its three fixtures set: the backend ``make()`` builds, an
    OOM its allocator raises and its vendor's name in the OOM corpus.  Bind it to a ``Test*`` name."""
    import pytest

    from hal.testing import conformance  # imports torch: only where a suite is built

    class Suite(conformance.TestHalConformance):
        @pytest.fixture
        def hal_backend_under_test(self) -> Backend:
            return make()

        @pytest.fixture
        def hal_oom_error(self) -> BaseException:
            return oom_error

        @pytest.fixture
        def hal_oom_corpus_vendor(self) -> str:
            return vendor

    return Suite
