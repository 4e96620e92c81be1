"""Plugin loading through real entry points: isolation of each kind of breakage, allow/deny lists."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from helpers import BackendsPlugin, backend_source, make_dist

import hal
from hal import plugins
from hal.errors import ConfigError


def _good(name: str) -> str:
    """Source of a well-behaved plugin module: one available meta backend called ``name``."""
    return backend_source(name, "return hal.Probe(True, 'always', 2)", priority="40", cls="GoodBackend")


GOOD = _good("good")


def _records() -> dict[str, dict[str, object]]:
    return {p["name"]: p for p in plugins.list_plugins()}


def test_builtin_cpu_loads_through_its_entry_point() -> None:
    rec = _records()["cpu"]
    assert rec["status"] == "loaded"
    assert rec["distribution"] == "torch-hal"
    assert rec["version"] == hal.__version__
    assert rec["hooks"] == ["hal_backends"]
    assert rec["backends"] == ["cpu"]


def test_third_party_plugin_is_loaded_and_listed(plugin_dir: Path) -> None:
    make_dist(plugin_dir, "hal-good", "1.2.3", {"good": "good_plugin"}, {"good_plugin": GOOD})
    rec = _records()["good"]
    assert rec == {"name": "good", "distribution": "hal-good", "version": "1.2.3",
                   "status": "loaded", "error": None, "hooks": ["hal_backends"],
                   "backends": ["good"], "notes": []}
    assert "good" in [b.name for b in hal.list_backends()]


BROKEN = {
    "import_error": ("raise ImportError('libfoo.so: cannot open shared object file')",
                     "import failed: ImportError: libfoo.so"),
    "system_exit": ("raise SystemExit(3)", "import failed: its import called sys.exit(3)"),
    "hook_raises": ("import hal\n@hal.hookimpl\ndef hal_backends():\n    raise RuntimeError('boom')",
                    "hal_backends raised RuntimeError: boom"),
    "not_a_list": ("import hal\n@hal.hookimpl\ndef hal_backends():\n    return 42",
                   "hal_backends returned int, expected a list of hal.Backend"),
    "wrong_items": ("import hal\n@hal.hookimpl\ndef hal_backends():\n    return ['cpu']",
                    "a str in its list, expected hal.Backend instances"),
    "misspelled": ("import hal\n@hal.hookimpl\ndef hal_backend():\n    return []",
                   "unknown hook(s) hal_backend"),
    "bad_signature": ("import hal\n@hal.hookimpl\ndef hal_backends(extra):\n    return []",
                      "registration failed"),
    "no_probe": ("import hal\nclass B(hal.Backend):\n    name='noprobe'\n    device_type='meta'\n"
                 "@hal.hookimpl\ndef hal_backends():\n    return [B()]",
                 "does not implement probe()"),
    "taken_name": ("import hal\nclass B(hal.Backend):\n    name='cpu'\n    device_type='meta'\n"
                   "    def probe(self):\n        return hal.Probe(True, 'x', 1)\n"
                   "@hal.hookimpl\ndef hal_backends():\n    return [B()]",
                   "backend name 'cpu' is reserved for hal's built-in backend"),
}


@pytest.mark.parametrize("kind", sorted(BROKEN))
def test_broken_plugin_is_recorded_and_skipped(plugin_dir: Path, kind: str) -> None:
    source, expected = BROKEN[kind]
    make_dist(plugin_dir, "hal-broken", "0.1", {"broken": f"broken_{kind}"},
              {f"broken_{kind}": source, "good_plugin": GOOD})
    make_dist(plugin_dir, "hal-good", "1.0", {"good": "good_plugin"}, {})
    records = _records()
    assert records["broken"]["status"] == "failed"
    assert expected in str(records["broken"]["error"])
    assert records["broken"]["distribution"] == "hal-broken"
    # everything else keeps working
    assert records["good"]["status"] == "loaded"
    names = [b.name for b in hal.list_backends()]
    assert "good" in names and "cpu" in names
    assert hal.select().backend.name == "good"
    if kind == "taken_name":
        assert type(hal.get_backend("cpu")).__module__ == "hal.backends.cpu.backend"


MARKER = backend_source("denied", "return hal.Probe(True, 'x', 1)", priority=None, cls="D",
                        head='import sys\nsys.modules.setdefault("denied_was_imported", sys)\n')


@pytest.mark.parametrize("env", [
    {"HAL_PLUGINS": "cpu,good"},
    {"HAL_PLUGINS": "good"},
    {"HAL_DISABLE_PLUGINS": "denied"},
    {"HAL_DISABLE_PLUGINS": "denied, other"},
])
def test_blocked_plugin_module_is_never_imported(
    plugin_dir: Path, monkeypatch: pytest.MonkeyPatch, env: dict[str, str]
) -> None:
    make_dist(plugin_dir, "hal-denied", "0.1", {"denied": "denied_plugin"},
              {"denied_plugin": MARKER, "good_plugin": GOOD})
    make_dist(plugin_dir, "hal-good", "1.0", {"good": "good_plugin"}, {})
    monkeypatch.delitem(sys.modules, "denied_was_imported", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    records = _records()
    assert records["denied"]["status"] == "blocked"
    assert "denied_was_imported" not in sys.modules
    assert "denied_plugin" not in sys.modules
    assert records["good"]["status"] == "loaded"
    assert records["cpu"]["status"] == "loaded"  # the CPU backend always loads


def test_cpu_always_loads_even_when_denied(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HAL_DISABLE_PLUGINS", "cpu")
    monkeypatch.setenv("HAL_PLUGINS", "toyaccel")
    assert hal.get_device().type == "cpu"


def test_allowlisted_but_missing_plugin_is_listed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HAL_PLUGINS", "cpu,notinstalled")
    rec = _records()["notinstalled"]
    assert rec["status"] == "missing"
    assert "not installed" in str(rec["error"])


@pytest.mark.parametrize("value", ["", "  ", "cpu,,good", "cpu;good", "-x", "a b"])
def test_malformed_allowlist_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("HAL_PLUGINS", value)
    with pytest.raises(ConfigError, match="HAL_PLUGINS") as info:
        hal.get_device()
    assert isinstance(info.value, ValueError)
    assert "\n" not in str(info.value)


def test_empty_denylist_means_no_denial(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HAL_DISABLE_PLUGINS", "")
    assert _records()["cpu"]["status"] == "loaded"


def test_registered_context_registers_and_unregisters() -> None:
    import good_module_for_registered as mod  # type: ignore[import-not-found]

    with plugins.registered(mod, "inline"):
        hal.reset()
        assert hal.select().backend.name == "inline"
    hal.reset()
    assert "inline" not in _records()
    assert hal.select().backend.name == "cpu"


@pytest.fixture(autouse=False)
def _inline_module(plugin_dir: Path) -> None:
    (plugin_dir / "good_module_for_registered.py").write_text(_good("inline"))


test_registered_context_registers_and_unregisters = pytest.mark.usefixtures("_inline_module")(
    test_registered_context_registers_and_unregisters
)


def test_registering_a_broken_object_raises_plugin_error() -> None:
    class Misspelled:
        @staticmethod
        @hal.hookimpl
        def hal_backendz() -> list[hal.Backend]:
            return []

    with pytest.raises(hal.PluginError, match="hal_backendz"), plugins.registered(Misspelled(), "x"):
        pass


def test_plugins_load_lazily_not_at_import() -> None:
    plugins.reset_plugins()
    assert plugins._host is None
    import importlib

    importlib.reload(hal)
    assert plugins._host is None
    hal.list_backends()
    assert plugins._host is not None


def test_registering_under_a_taken_name_raises_and_keeps_the_original() -> None:
    with pytest.raises(hal.PluginError, match="already used"), plugins.registered(BackendsPlugin(), "cpu"):
        pass
    rec = _records()["cpu"]
    assert rec["status"] == "loaded" and rec["distribution"] == "torch-hal"
    assert hal.get_backend("cpu").name == "cpu"


def test_a_hostile_list_or_attribute_is_recorded_not_raised() -> None:
    class Endless(list):  # type: ignore[type-arg]
        def __iter__(self):  # type: ignore[no-untyped-def]
            while True:
                yield 1

    class Raising(hal.Backend):
        @property  # type: ignore[misc]
        def name(self) -> str:  # type: ignore[override]
            raise RuntimeError("no name for you")

        def probe(self) -> hal.Probe:
            return hal.Probe(True, "x", 1)

    class Plugin:
        @hal.hookimpl
        def hal_backends(self) -> list[hal.Backend]:
            return Endless()

    class Plugin2:
        @hal.hookimpl
        def hal_backends(self) -> list[hal.Backend]:
            return [Raising()]

    with plugins.registered(Plugin(), "endless"), plugins.registered(Plugin2(), "raising"):
        records = _records()
    assert "a int in its list" in str(records["endless"]["error"])
    assert "cannot be read (RuntimeError: no name for you)" in str(records["raising"]["error"])


def test_a_hook_that_calls_back_into_hal_gets_an_error_not_a_recursion() -> None:
    class Recursive:
        @hal.hookimpl
        def hal_backends(self) -> list[hal.Backend]:
            hal.list_plugins()
            return []

    with plugins.registered(Recursive(), "recursive"):
        records = _records()
    assert "was called from inside plugin 'recursive': hal_backends" in str(records["recursive"]["error"])
    assert records["cpu"]["status"] == "loaded"


def test_a_plain_checkout_with_stale_entry_points_says_install_hal(tmp_path: Path) -> None:
    """Issue 25 item 7: the source tree first on sys.path, no editable finder (no site.py), but
    the installed distribution's entry points still naming hal.backends: one line, not
    'no backend is available, not even cpu:' with nothing after the colon."""
    import site

    root = Path(hal.__file__).resolve().parent.parent
    paths = [str(root), *site.getsitepackages()]
    code = (f"import sys; sys.path[:0] = {paths!r}; sys.argv = ['hal', 'devices']; "
            "from hal.cli import main; sys.exit(main())")
    done = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path)
    assert done.returncode != 0
    assert done.stderr.strip().splitlines() == [
        "hal: error: hal is not installed (hal.backends is missing in a plain source checkout): "
        "run `pip install -e .` in the checkout"]
