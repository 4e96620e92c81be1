"""One checked parser for every number and switch hal reads from a variable, a flag or a file.

``str.isdigit()`` accepts ``²`` and ``٣`` and ``int()`` accepts ``1_000`` and 5000-digit
strings; every caller going through here gets ASCII digits only, a bound, and a one-line
``ConfigError`` naming the variable or flag and what is accepted.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import TypeVar

from hal.errors import ConfigError

T = TypeVar("T")

_INT_RE = re.compile(r"\A[0-9]{1,18}\Z")
_SIGNED_INT_RE = re.compile(r"\A[+-]?[0-9]{1,18}\Z")
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


def check_int(name: str, value: object, *, lo: int = 0, hi: int = 2**31 - 1) -> int:
    """An int given as a Python value (not text, not a bool) in [lo, hi]; ConfigError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name}={_shown(value)} is not a whole number; expected {lo}..{hi}")
    if not lo <= value <= hi:
        raise ConfigError(f"{name}={value} is out of range; expected {lo}..{hi}")
    return value


def parse_int(name: str, text: object, *, lo: int = 0, hi: int = 2**31 - 1) -> int:
    """``text`` as an int in [lo, hi] written with ASCII digits only (a sign only when ``lo`` is
    negative); an int value is checked as it is.  ConfigError naming ``name``."""
    if isinstance(text, int) and not isinstance(text, bool):
        return check_int(name, text, lo=lo, hi=hi)
    pattern = _SIGNED_INT_RE if lo < 0 else _INT_RE
    return check_int(name, int(_matched(name, text, pattern, "a whole number", f"{lo}..{hi}")),
                     lo=lo, hi=hi)


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


def flag_type(name: str, parse: Callable[[str], T]) -> Callable[[str], T]:
    """An argparse ``type=`` that runs ``parse`` and turns its ConfigError into a one-line usage
    error (exit 2) naming the flag."""
    import argparse

    def check(value: str) -> T:
        try:
            return parse(value)
        except ConfigError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    check.__name__ = name
    return check


def int_flag(name: str, *, lo: int = 0, hi: int = 2**31 - 1) -> Callable[[str], int]:
    """An argparse ``type=`` for a whole-number flag, checked by ``parse_int``."""
    return flag_type(name, lambda text: parse_int(name, text, lo=lo, hi=hi))
