"""One checked parser for every number and switch hal reads from a variable, a flag or a file.

``str.isdigit()`` accepts ``²`` and ``٣`` and ``int()`` accepts ``1_000`` and 5000-digit
strings; every caller going through here gets ASCII digits only, a bound, and a one-line
``ConfigError`` naming the variable or flag and what is accepted.
"""

from __future__ import annotations

import math
import re

from hal.errors import ConfigError

_INT_RE = re.compile(r"\A[0-9]{1,18}\Z")
_FLOAT_RE = re.compile(r"\A[+-]?(?:[0-9]{1,30}(?:\.[0-9]{0,30})?|\.[0-9]{1,30})(?:[eE][+-]?[0-9]{1,3})?\Z")

#: Values accepted as on/off switches (HAL_STRICT and the like), compared case-insensitively.
TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
FALSE_WORDS = frozenset({"0", "false", "no", "off", ""})


def parse_int(name: str, text: object, *, lo: int = 0, hi: int = 2**31 - 1) -> int:
    """``text`` as an int in [lo, hi] written with ASCII digits only; ConfigError naming ``name``."""
    if isinstance(text, bool):
        raise ConfigError(f"{name}={text!r} is not a whole number; expected {lo}..{hi}")
    if isinstance(text, int):
        value = text
    else:
        raw = str(text).strip()
        if not _INT_RE.match(raw):
            shown = raw if len(raw) <= 40 else raw[:37] + "..."
            raise ConfigError(f"{name}={shown!r} is not a whole number; expected {lo}..{hi}")
        value = int(raw)
    if not lo <= value <= hi:
        raise ConfigError(f"{name}={value} is out of range; expected {lo}..{hi}")
    return value


def parse_float(
    name: str, text: object, *, lo: float = 0.0, hi: float = 1e15, lo_inclusive: bool = True
) -> float:
    """``text`` as a finite float in [lo, hi] (``lo`` exclusive when asked); ConfigError otherwise."""
    if isinstance(text, bool):
        raise ConfigError(f"{name}={text!r} is not a number")
    if isinstance(text, (int, float)):
        value = float(text)
    else:
        raw = str(text).strip()
        if not _FLOAT_RE.match(raw):
            shown = raw if len(raw) <= 40 else raw[:37] + "..."
            raise ConfigError(f"{name}={shown!r} is not a number; expected {lo:g}..{hi:g}")
        value = float(raw)
    low_ok = value >= lo if lo_inclusive else value > lo
    if not math.isfinite(value) or not low_ok or value > hi:
        bound = f"{lo:g}..{hi:g}" if lo_inclusive else f"more than {lo:g} and at most {hi:g}"
        raise ConfigError(f"{name}={value:g} is out of range; expected {bound}")
    return value


def parse_bool(name: str, text: str | None, *, default: bool = False) -> bool:
    """An on/off switch: 1/true/yes/on or 0/false/no/off (any case); anything else is an error."""
    if text is None:
        return default
    word = text.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    shown = text if len(text) <= 40 else text[:37] + "..."
    raise ConfigError(f"{name}={shown!r} is not a switch; expected 1/true/yes/on or 0/false/no/off")
