"""One name per thing: hal's export list written once, renamed names as deprecated aliases that
warn once, one exception summary, integer flags through hal.parse."""

from __future__ import annotations

import ast
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import hal
from hal import errors
from hal.cli import main
from hal.errors import ConfigError, describe_exception
from hal.parse import check_int, int_flag

INIT = Path(hal.__file__)


def _type_checking_imports() -> tuple[dict[str, str], set[str]]:
    """(name -> module) and the submodules imported under ``if TYPE_CHECKING:`` in hal/__init__.py."""
    tree = ast.parse(INIT.read_text(encoding="utf-8"))
    (block,) = [n for n in tree.body if isinstance(n, ast.If) and ast.unparse(n.test) == "TYPE_CHECKING"]
    names: dict[str, str] = {}
    submodules: set[str] = set()
    for node in block.body:
        if isinstance(node, ast.ImportFrom):
            for alias in node.names:
                assert alias.asname == alias.name, f"{alias.name}: re-export as itself"
                if node.module == "hal":
                    submodules.add(alias.name)
                else:
                    names[alias.name] = str(node.module)
    return names, submodules


def test_type_checking_imports_restate_the_export_table() -> None:
    names, submodules = _type_checking_imports()
    assert names == hal._EXPORTS
    assert submodules == set(hal._SUBMODULES)
    assert hal.__all__ == sorted([*hal._EXPORTS, "__version__"])


def test_every_export_is_the_object_its_module_defines() -> None:
    import importlib

    for name, module in hal._EXPORTS.items():
        assert getattr(hal, name) is getattr(importlib.import_module(module), name), name


@pytest.fixture
def fresh_warnings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each old name warns once per process; start these tests from none warned."""
    monkeypatch.setattr(errors, "_renamed_warned", set())


def _old_plugin_list() -> object:
    return hal.plugins.load_plugins().plugin_list()


def _old_resolve() -> object:
    return hal.memory.resolve


def _old_request() -> object:
    return hal.selection.Request


@pytest.mark.usefixtures("fresh_warnings")
@pytest.mark.parametrize(("old", "new", "says"), [
    (_old_plugin_list, lambda: hal.plugins.load_plugins().list_plugins(),
     "use hal.plugins.PluginHost.list_plugins"),
    (_old_resolve, lambda: hal.memory.resolve_device, "use hal.memory.resolve_device"),
    (_old_request, lambda: hal.selection.DeviceRequest, "use hal.selection.DeviceRequest"),
    (lambda: hal.plugin_list, lambda: hal.list_plugins, "use hal.list_plugins"),
])
def test_a_renamed_name_still_works_and_warns_once(old: Callable[[], Any], new: Callable[[], Any],
                                                   says: str) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first, second = old(), old()
    assert first == second == new()
    (warning,) = caught
    assert warning.category is DeprecationWarning and says in str(warning.message)
    assert warning.filename == __file__  # it points at the caller, not at hal


def test_an_unknown_name_is_still_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="has no attribute 'nothing'"):
        hal.memory.nothing  # noqa: B018
    assert not hasattr(hal.selection, "Requests")


class _Hostile(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no")


@pytest.mark.parametrize(("exc", "want"), [
    (ValueError("bad value\nsecond line"), "ValueError: bad value"),
    (KeyError(), "KeyError"),
    (RuntimeError("   "), "RuntimeError"),
    (_Hostile(), "_Hostile"),
    (None, "nothing"),
])
def test_one_exception_summary(exc: BaseException | None, want: str) -> None:
    assert describe_exception(exc) == want


def test_the_summary_is_bounded() -> None:
    text = describe_exception(OSError("x" * 10_000), limit=50)
    assert text == "OSError: " + "x" * 41 + "... (9959 more characters)"


def test_check_int_takes_ints_not_text_or_bools() -> None:
    assert check_int("start", 4, lo=1, hi=8) == 4
    for bad in ("4", True, 4.0, None):
        with pytest.raises(ConfigError, match=r"^start=.* is not a whole number; expected 1\.\.8$"):
            check_int("start", bad, lo=1, hi=8)
    with pytest.raises(ConfigError, match=r"^start=9 is out of range; expected 1\.\.8$"):
        check_int("start", 9, lo=1, hi=8)


def test_a_signed_flag_takes_a_sign_and_only_ascii_digits() -> None:
    parse = int_flag("--n", lo=-5, hi=5)
    assert (parse("-3"), parse("+2"), parse(" 4 ")) == (-3, 2, 4)
    for bad in ("٣", "1_0", "--1", "9" * 40):
        with pytest.raises(Exception, match="--n="):
            parse(bad)


@pytest.mark.parametrize("value", ["٣", "1_000", "9" * 5000, "2.0"])
def test_plan_integer_flags_refuse_what_int_would_take(value: str,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["plan", "7B", "--no-local", "--batch", value])
    assert done.value.code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "--batch=" in line and "not a whole number" in line and len(line) < 300


def _aliases() -> set[tuple[str, str]]:
    """(old, new) of every deprecated alias in hal's source: the renamed_attribute maps, the
    package's _DEPRECATED map and direct warn_renamed calls."""
    found: set[tuple[str, str]] = set()
    for path in INIT.parent.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        module = ".".join(path.relative_to(INIT.parent.parent).with_suffix("").parts)
        module = module.removesuffix(".__init__")
        for node in ast.walk(tree):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                    and node.func.id == "renamed_attribute" and len(node.args) == 3
                    and isinstance(node.args[2], ast.Dict)):
                for k, v in zip(node.args[2].keys, node.args[2].values):
                    assert isinstance(k, ast.Constant) and isinstance(v, ast.Constant)
                    found.add((f"{module}.{k.value}", f"{module}.{v.value}"))
            elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                  and node.func.id == "warn_renamed"
                  and all(isinstance(a, ast.Constant) for a in node.args[:2])):
                old, new = (a.value for a in node.args[:2])  # type: ignore[attr-defined]
                found.add((f"hal.{old}", f"hal.{new}"))
    for old, new in hal._DEPRECATED.items():
        found.add((f"hal.{old}", f"hal.{new}"))
    return found


def test_the_changelog_lists_every_deprecated_alias_with_its_new_name() -> None:
    changelog = (INIT.parent.parent / "CHANGELOG.md").read_text(encoding="utf-8")
    rows = [line for line in changelog.splitlines() if line.startswith("| `")]
    aliases = _aliases()
    assert len(aliases) >= 5  # the walk found the maps (hal.backend, plugin_list, Request, ...)
    for old, new in sorted(aliases):
        assert any(f"`{old}" in row and f"`{new}" in row for row in rows), (old, new)
