"""hal.parse: the one checked parser for numbers and switches from variables, flags and files."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hal.errors import ConfigError
from hal.parse import parse_bool, parse_float, parse_int


@pytest.mark.parametrize("text", ["²", "٣", "1_000", "-1", "+1", "1.0", "", " ", "0x10", "9" * 5000, "1e3"])
def test_parse_int_refuses_what_int_or_isdigit_would_take(text: str) -> None:
    with pytest.raises(ConfigError, match=r"^LOCAL_RANK=.* is not a whole number; expected 0\.\.7$"):
        parse_int("LOCAL_RANK", text, lo=0, hi=7)


def test_parse_int_bounds_and_short_message() -> None:
    assert parse_int("N", " 42 ", hi=100) == 42
    assert parse_int("N", 3) == 3
    with pytest.raises(ConfigError, match=r"out of range; expected 1\.\.8"):
        parse_int("N", "9", lo=1, hi=8)
    with pytest.raises(ConfigError, match="not a whole number"):
        parse_int("N", True)
    with pytest.raises(ConfigError) as info:
        parse_int("N", "9" * 5000)
    assert len(str(info.value)) < 120 and "\n" not in str(info.value)


@pytest.mark.parametrize("text", ["inf", "nan", "1e400", "-inf", "NaN", "1e10", "0", "-1", "abc", "1e"])
def test_parse_float_refuses_non_finite_and_out_of_range(text: str) -> None:
    with pytest.raises(ConfigError, match=r"^--interval="):
        parse_float("--interval", text, lo=0.0, hi=3600.0, lo_inclusive=False)


def test_parse_float_accepts_plain_numbers() -> None:
    assert parse_float("--interval", "0.2", lo=0.0, hi=10, lo_inclusive=False) == 0.2
    assert parse_float("X", "1e3", hi=1e4) == 1000.0
    assert parse_float("X", 2) == 2.0
    with pytest.raises(ConfigError):
        parse_float("X", math.nan)


@given(st.integers(min_value=0, max_value=10**6))
def test_parse_int_round_trips(value: int) -> None:
    assert parse_int("N", str(value), hi=10**6) == value


@pytest.mark.parametrize(
    ("text", "want"), [("1", True), ("TRUE", True), ("on", True), ("no", False), ("", False), (None, False)]
)
def test_parse_bool_documented_words(text: str | None, want: bool) -> None:
    assert parse_bool("HAL_STRICT", text) is want


def test_parse_bool_refuses_garbage() -> None:
    with pytest.raises(ConfigError, match=r"HAL_STRICT='garbage' is not a switch"):
        parse_bool("HAL_STRICT", "garbage")
