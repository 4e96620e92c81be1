"""tox's inline plugin for this project: an env whose subject could not be installed says SKIP.

A setup step (scripts/build_openreg.py) that cannot provide what the env exists to test writes
its reason to ``{env_tmp_dir}/hal-skip`` (``HAL_TOX_SKIP_FILE``); the env's result line then
reads ``SKIP`` with that reason instead of ``OK``, while its commands' failures still fail it.
tox empties the folder at each run, so a stale reason never carries over.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tox.plugin import impl
from tox.tox_env.errors import Skip

MARKER = "hal-skip"


@impl
def tox_after_run_commands(tox_env: Any, exit_code: int, outcomes: list[Any]) -> None:
    """SKIP (with the reason) a passing env whose setup said it had nothing to test."""
    marker = Path(tox_env.env_tmp_dir) / MARKER
    if exit_code == 0 and marker.is_file():
        raise Skip(marker.read_text(encoding="utf-8", errors="replace").strip()[:500])
