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


def _shown(text: object) -> str:
    """A value as an error message shows it: repr'd, cut to 40 characters (a 5000-digit value)."""
    raw = str(text)
    return repr(raw if len(raw) <= 40 else raw[:37] + "...")


def _matched(name: str, text: object, pattern: re.Pattern[str], what: str, expected: str) -> str:
    """``text`` stripped, if it is a str matching ``pattern``; ConfigError naming ``name`` otherwise."""
    raw = text.strip() if isinstance(text, str) else ""
    if not pattern.match(raw):
        raise ConfigError(f"{name}={_shown(text)} is not {what}; expected {expected}")
    return raw


def parse_int(name: str, text: object, *, lo: int = 0, hi: int = 2**31 - 1) -> int:
    """``text`` as an int in [lo, hi] written with ASCII digits only; ConfigError naming ``name``."""
    expected = f"{lo}..{hi}"
    if isinstance(text, int) and not isinstance(text, bool):
        value = text
    else:
        value = int(_matched(name, text, _INT_RE, "a whole number", expected))
    if not lo <= value <= hi:
        raise ConfigError(f"{name}={value} is out of range; expected {expected}")
    return value


def parse_float(
    name: str, text: object, *, lo: float = 0.0, hi: float = 1e15, lo_inclusive: bool = True
) -> float:
    """``text`` as a finite float in [lo, hi] (``lo`` exclusive when asked); ConfigError otherwise."""
    expected = f"{lo:g}..{hi:g}" if lo_inclusive else f"more than {lo:g} and at most {hi:g}"
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        value = float(text)
    else:
        value = float(_matched(name, text, _FLOAT_RE, "a number", expected))
    low_ok = value >= lo if lo_inclusive else value > lo
    if not math.isfinite(value) or not low_ok or value > hi:
        raise ConfigError(f"{name}={value:g} is out of range; expected {expected}")
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
    raise ConfigError(f"{name}={_shown(text)} is not a switch; expected 1/true/yes/on or 0/false/no/off")
