"""Every string a plugin hands hal (reasons, names, versions, findings, exception texts,
telemetry) reaches every command and format escaped and bounded: no terminal control sequence,
no megabyte line (issue 20)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import backend_source, make_dist, pythonpath, run_hal

pytestmark = pytest.mark.slow

#: OSC (set the window title), BEL, CSI (colour), a bare CR and a newline: what a hostile or
#: careless plugin could put in any string.
EVIL = "\x1b]0;pwned\x07\x1b[31mRED\x1b[0m\rCR\nNL\x9b2J"
BIG = 1_000_000
#: Generous bound on what one command may print here: a few screens, never the megabytes given.
MAX_OUTPUT = 200_000

SOURCE = backend_source("evilup", probe=f"return hal.Probe(True, {EVIL!r} + 'r' * {BIG}, 1)",
                        priority="200", head="from hal.telemetry import ProcessUsage\n", extra=f'''
def devices(self):
    return [hal.DeviceInfo(index=0, name={EVIL!r} + "n" * {BIG}, total_memory=2**30)]

def versions(self):
    return {{"runtime": {EVIL!r} + "v" * {BIG}}}

def doctor(self):
    return [hal.Finding("evil.finding", "warn", {EVIL!r} + "m" * {BIG}, {EVIL!r} + "f" * {BIG})]

def telemetry(self, index):
    user = ProcessUsage(1, user={EVIL!r}, memory=1, command={EVIL!r} + "c" * {BIG})
    return hal.Telemetry(source={EVIL!r} + "s" * {BIG}, name={EVIL!r}, memory_used=1,
                         memory_total=2**30, processes=(user,))
''')
RAISING = backend_source("evildown", probe=f"raise RuntimeError({EVIL!r} + 'e' * {BIG})",
                         priority="150")


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    site = tmp_path_factory.mktemp("site")
    make_dist(site, "hal-evilup", "0.1", {"evilup": "hal_evilup"}, {"hal_evilup": SOURCE})
    make_dist(site, "hal-evildown", "0.1", {"evildown": "hal_evildown"},
              {"hal_evildown": RAISING})
    return pythonpath(site)


@pytest.mark.parametrize("args", [("devices",), ("devices", "--json"), ("doctor",),
                                  ("doctor", "--json"), ("plugins",), ("plugins", "--json"),
                                  ("watch", "--once"), ("watch", "--once", "--json")])
def test_no_control_character_and_no_megabyte_reaches_the_output(
        env: dict[str, str], args: tuple[str, ...]) -> None:
    proc = run_hal(*args, env=env, timeout=180)
    out = proc.stdout + proc.stderr
    assert "Traceback" not in out, out[-3000:]
    assert proc.returncode in (0, 1), out[-3000:]  # doctor exits 1 on the plugin's warning
    bad = sorted({ch for ch in out if (ord(ch) < 32 and ch != "\n") or 0x7f <= ord(ch) < 0xa0})
    assert bad == [], (bad, out[:3000])
    assert len(out) < MAX_OUTPUT, len(out)
    if args[0] != "plugins":  # plugins lists distributions, not what their backends say
        assert "pwned" in out  # the plugin's text is shown, escaped, not dropped
    if "--json" in args:
        json.loads(proc.stdout)


def test_escaping_is_visible_and_a_line_stays_one_line(env: dict[str, str]) -> None:
    out = run_hal("devices", env=env).stdout
    line = next(x for x in out.splitlines() if x.startswith("evilup (priority"))
    assert "\\x1b]0;pwned\\x07" in line and "\\rCR\\nNL" in line, line[:300]
    down = next(x for x in out.splitlines() if x.startswith("evildown (priority"))
    assert "RuntimeError" in down and "\\x1b[31m" in down, down[:300]


def test_a_plugin_distributions_metadata_is_escaped(tmp_path: Path) -> None:
    site = tmp_path / "site"
    make_dist(site, "hal-meta", "0.1", {"meta": "hal_meta"},
                     {"hal_meta": backend_source("meta", priority="1")})
    meta = next(site.glob("*.dist-info")) / "METADATA"
    meta.write_text("Metadata-Version: 2.1\nName: hal-meta\nVersion: 0.1\x1b]0;pwned\x07\n")
    for args in (("plugins",), ("doctor",)):
        out = run_hal(*args, env=pythonpath(site)).stdout
        assert "\x1b" not in out and "\x07" not in out, out[:2000]
