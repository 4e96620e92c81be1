"""``import hal`` and ``hal --help`` must not import torch (nor load plugins)."""

from __future__ import annotations

import subprocess
import sys

import pytest

CHECK = "import sys; {body}; heavy = sorted(m for m in ('torch', 'pluggy', 'psutil', 'rich', " \
        "'shtab') " \
        "if m in sys.modules); print(','.join(heavy))"


def _heavy_after(body: str) -> list[str]:
    out = subprocess.run([sys.executable, "-c", CHECK.format(body=body)], capture_output=True,
                         text=True, timeout=60, check=True).stdout.strip()
    return [m for m in out.split(",") if m]


def test_import_hal_imports_nothing_heavy() -> None:
    assert _heavy_after("import hal") == []


def test_help_does_not_import_torch() -> None:
    body = ("from hal.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass")
    heavy = _heavy_after(f"exec({body!r})")
    assert "torch" not in heavy and "shtab" not in heavy  # completion costs nothing at --help


@pytest.mark.parametrize("name", ["Backend", "Probe", "hookimpl", "HalError", "ConfigError"])
def test_contract_names_do_not_import_torch(name: str) -> None:
    assert "torch" not in _heavy_after(f"import hal; hal.{name}")


def test_unknown_attribute_is_an_attribute_error() -> None:
    import hal

    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        hal.nope  # noqa: B018
