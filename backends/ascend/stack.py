"""Torch-free facts about the Ascend software stack: CANN and driver versions, CANN environment,
and ASCEND_RT_VISIBLE_DEVICES.

Every function takes a filesystem ``root`` (and an environment) so tests use fake trees.
"""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Mapping

from hal.hardware import read_text

#: The default set_env.sh locations: the classic toolkit layout, and CANN >= 8.5's ``cann`` dir.
SET_ENV_SCRIPTS = (
    "/usr/local/Ascend/ascend-toolkit/set_env.sh",
    "/usr/local/Ascend/cann/set_env.sh",
)
DEFAULT_SET_ENV = SET_ENV_SCRIPTS[0]
#: Where the toolkit's install record lives, relative to a toolkit home (<arch>-linux/...).
_INSTALL_INFO = "*-linux/ascend_toolkit_install.info"
_TOOLKIT_HOMES = (
    "/usr/local/Ascend/ascend-toolkit/latest",
    "/usr/local/Ascend/cann",
)
DRIVER_VERSION_FILE = "/usr/local/Ascend/driver/version.info"
#: Variables set_env.sh exports that name the toolkit home.
TOOLKIT_HOME_VARS = ("ASCEND_TOOLKIT_HOME", "ASCEND_HOME_PATH")
VISIBLE_DEVICES_ENV = "ASCEND_RT_VISIBLE_DEVICES"


def parse_key_values(text: str) -> dict[str, str]:
    """``key=value`` lines (Ascend's .info files) as a dict; other lines are ignored."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip():
            out[key.strip()] = value.strip()
    return out


def toolkit_homes(root: str, environ: Mapping[str, str]) -> list[str]:
    """Candidate toolkit homes: the environment's first, then the default install paths."""
    homes = [environ[v] for v in TOOLKIT_HOME_VARS if environ.get(v)]
    return list(dict.fromkeys([*homes, *_TOOLKIT_HOMES]))


def cann_version(root: str = "/", environ: Mapping[str, str] | None = None) -> tuple[str, str]:
    """The CANN toolkit version and the file it came from; ``("", "")`` when none is found.

    Reads ``<home>/<arch>-linux/ascend_toolkit_install.info`` (``version=8.0.RC2``), the file
    Huawei's install guide tells users to ``cat``; falls back to ``<home>/runtime/version.info``.
    """
    env = os.environ if environ is None else environ
    for home in toolkit_homes(root, env):
        base = os.path.join(root, home.lstrip("/"))
        for path in sorted(glob.glob(os.path.join(base, _INSTALL_INFO))):
            with open(path, encoding="utf-8", errors="replace") as f:
                version = parse_key_values(f.read()).get("version", "")
            if version:
                return version, "/" + os.path.relpath(path, root)
        runtime = read_text(root, f"{home}/runtime/version.info")
        if runtime:
            version = parse_key_values(runtime).get("Version", "")
            if version:
                return version, f"{home.rstrip('/')}/runtime/version.info"
    return "", ""


def driver_version(root: str = "/") -> str:
    """The NPU driver version from /usr/local/Ascend/driver/version.info ('' when absent)."""
    text = read_text(root, DRIVER_VERSION_FILE)
    if not text:
        return ""
    values = parse_key_values(text)
    return values.get("package_version") or values.get("Version", "")


def set_env_script(root: str = "/") -> str:
    """The set_env.sh that exists under ``root`` (the classic path when none does)."""
    for script in SET_ENV_SCRIPTS:
        if os.path.exists(os.path.join(root, script.lstrip("/"))):
            return script
    return DEFAULT_SET_ENV


def cann_env_problem(environ: Mapping[str, str]) -> str | None:
    """Why the CANN environment looks not set up (set_env.sh not sourced), or None if it is."""
    homes = [environ[v] for v in TOOLKIT_HOME_VARS if environ.get(v)]
    if not homes:
        return f"neither {' nor '.join(TOOLKIT_HOME_VARS)} is set"
    entries = [e for e in environ.get("LD_LIBRARY_PATH", "").split(":") if e]
    home = homes[0].rstrip("/")
    if not any(e.startswith(home) for e in entries):
        return f"LD_LIBRARY_PATH has no entry under the toolkit home {home}"
    return None


def visible_count(value: str | None, raw_count: int) -> int | None:
    """Devices left visible by ASCEND_RT_VISIBLE_DEVICES, parsed as torch_npu does.

    Mirrors ``torch_npu.npu._parse_visible_devices`` and ``_device_count_ascend_hal``: only the
    leading digits and commas count, an empty value hides everything, indices must ascend and
    the list stops at the first index >= the number of devices.  None when the variable is unset.
    """
    if value is None:
        return None
    match = re.match(r"^[0-9,]*", value)
    prefix = match.group(0) if match else ""
    indices: list[int] = []
    for elem in prefix.split(","):
        if not elem:
            break
        indices.append(int(elem))
    for i, index in enumerate(indices):
        if i > 0 and index <= indices[i - 1]:
            return 0
        if index >= raw_count:
            return i
    return len(indices)

