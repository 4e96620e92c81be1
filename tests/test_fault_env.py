"""Fault injection for environment variables and flags that steer selection and the doctor
(issue 13 finding 6): digits `int()` refuses, 5000-digit values, unknown switch words and
infinite timeouts end in one line and exit 2, through the real CLI entry point."""

from __future__ import annotations

import pytest

from hal.cli import main


@pytest.mark.parametrize(("env", "named"), [
    ({"HAL_DEVICE": "cpu:²"}, "HAL_DEVICE"),
    ({"HAL_DEVICE": "cpu:" + "9" * 5000}, "HAL_DEVICE"),
    ({"HAL_DEVICE": "toyaccel:٣"}, "HAL_DEVICE"),
    ({"LOCAL_RANK": "²", "HAL_DEVICE": "toyaccel"}, "LOCAL_RANK"),
    ({"LOCAL_RANK": "9" * 5000, "HAL_DEVICE": "toyaccel"}, "LOCAL_RANK"),
    ({"LOCAL_RANK": "1_0", "HAL_DEVICE": "toyaccel"}, "LOCAL_RANK"),
    ({"HAL_STRICT": "garbage"}, "HAL_STRICT"),
    ({"HAL_STRICT": "2"}, "HAL_STRICT"),
    ({"HAL_PROBE_TIMEOUT": "inf"}, "HAL_PROBE_TIMEOUT"),
    ({"HAL_PROBE_TIMEOUT": "1e400"}, "HAL_PROBE_TIMEOUT"),
    ({"HAL_PROBE_TIMEOUT": "-1"}, "HAL_PROBE_TIMEOUT"),
    ({"HAL_DISABLE_PLUGINS": "a\nb"}, "HAL_DISABLE_PLUGINS"),
])
def test_absurd_selection_values_are_one_line_exit_2(
        env: dict[str, str], named: str, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("TOYACCEL_DEVICES", "2")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert main(["devices"]) == 2
    captured = capsys.readouterr()
    (line,) = captured.err.strip().splitlines()
    assert line.startswith("hal: error: ") and named in line and len(line) < 400
    assert captured.out == ""


@pytest.mark.parametrize("value", ["inf", "1e400", "1e10", "nan", "-5", "0", "²", "9" * 5000])
def test_doctor_timeout_out_of_range_is_one_line_exit_2_before_any_child(
        value: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from hal.doctor import isolate

    def no_child(*args: object, **kwargs: object) -> None:
        raise AssertionError("a child was started")

    monkeypatch.setattr(isolate, "run_child", no_child)
    assert main(["doctor", "--timeout", value]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("hal: error: --timeout") and "3600" in line and len(line) < 300
