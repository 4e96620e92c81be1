"""hal.memory on the CPU backend: process RSS figures, summary, reset_peak and track()."""

from __future__ import annotations

import pytest
import torch

import hal
from hal.errors import ConfigError
from hal.memory import Usage, info, reset_peak, resolve, summary, track

MiB = 1 << 20


def test_info_reports_host_and_process_figures() -> None:
    m = info()
    assert m.total > 0 and 0 <= m.free <= m.total
    assert m.allocated > 0 and m.peak >= m.allocated
    assert "RSS" in m.source
    assert info("cpu") .total == m.total and info(0).total == m.total


def test_summary_is_readable() -> None:
    text = summary()
    for word in ("total", "free", "allocated", "peak", "source", "RSS"):
        assert word in text
    assert "GiB" in text or "MiB" in text


@pytest.mark.parametrize("device", ["bogus", "cpu:x", -1, True])
def test_bad_devices_are_config_errors(device: object) -> None:
    with pytest.raises(ConfigError):
        resolve(device)  # type: ignore[arg-type]


def test_track_reports_the_peak_of_a_freed_tensor_and_no_leak() -> None:
    with track() as t:
        x = torch.ones(64 * MiB // 4)  # 64 MiB, touched
        x.add_(1)
        del x
    assert isinstance(t.usage, Usage)
    assert t.peak_increase >= 48 * MiB
    assert t.retained < 24 * MiB


def test_track_sees_what_stayed_allocated() -> None:
    with track() as t:
        kept = torch.ones(64 * MiB // 4)
    assert t.retained >= 48 * MiB
    assert "retained" in str(t.usage)
    del kept


def test_tracker_figures_are_known_only_after_the_block() -> None:
    with track() as t, pytest.raises(AttributeError, match="after the track"):
        _ = t.peak
    assert t.peak >= t.before


def test_reset_peak_brings_the_high_water_mark_down() -> None:
    x = torch.ones(96 * MiB // 4)
    del x
    high = info().peak
    reset_peak()
    after = info()
    assert after.peak <= high
    assert after.peak - after.allocated < 48 * MiB


def test_empty_cache_runs_on_the_selected_backend() -> None:
    hal.memory.empty_cache()
    assert info().total > 0


@pytest.mark.parametrize("device", ["cuda", "cuda:1", "rocm", "npu", "ascend", "xpu"])
def test_a_device_this_torch_cannot_drive_is_a_clean_unavailable_error(device: str) -> None:
    """Issue 13 finding 6: on a CPU build, cuda raised torch's AssertionError; now every type
    says why, as the backend's probe does."""
    from hal.errors import DeviceUnavailableError

    with pytest.raises(DeviceUnavailableError) as raised:
        info(device)
    message = str(raised.value)
    assert "\n" not in message and message.split(":")[0] in ("cuda", "rocm", "ascend", "xpu")
