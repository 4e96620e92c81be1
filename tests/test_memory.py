"""hal.memory on the CPU backend: process RSS figures, summary, reset_peak and track()."""

from __future__ import annotations

import pytest
import torch

import hal
from hal.errors import ConfigError
from hal.memory import Usage, info, reset_peak, resolve_device, summary, track

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
        resolve_device(device)  # type: ignore[arg-type]


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


@pytest.mark.parametrize("device", [42, 1, "cpu:7", "cpu:1", torch.device("cpu", 3), "cpu:٣",
                                    "cpu:" + "9" * 5000, 2.5, object()])
def test_a_device_the_host_does_not_have_is_an_error_not_cpu0(device: object) -> None:
    # Issue 20: summary(device=42) and device='cpu:7' on a one-device CPU reported cpu:0.
    with pytest.raises(ConfigError) as raised:
        summary(device)  # type: ignore[arg-type]
    message = str(raised.value)
    assert "\n" not in message and len(message) < 300
    if isinstance(device, (int, str, torch.device)) and not isinstance(device, bool):
        assert "has 1 device(s) here (index 0..0)" in message or "not a non-negative" in message
    assert summary("cpu:0") and summary(0) and summary(torch.device("cpu"))


class _Garbage(hal.Backend):
    """A plugin backend whose memory() returns garbage (or raises) instead of a MemoryInfo."""

    name, device_type, priority = "garbage", "meta", -1

    def __init__(self, answer: object) -> None:
        self.answer = answer

    def probe(self) -> hal.Probe:
        return hal.Probe(True, "here", 1)

    def memory(self, index: int = 0) -> hal.MemoryInfo:
        if isinstance(self.answer, BaseException):
            raise self.answer
        return self.answer  # type: ignore[return-value]


@pytest.mark.parametrize("answer", [
    None, "lots", hal.MemoryInfo(total=-1, free=0, allocated=0, reserved=0, peak=0),
    hal.MemoryInfo(total=float("nan"), free=0, allocated=0, reserved=0, peak=0),  # type: ignore[arg-type]
    ZeroDivisionError("inside the plugin")])
def test_garbage_from_a_plugins_memory_is_one_plugin_error(answer: object) -> None:
    # Issue 20: hal.memory called backend.memory() directly; garbage raised inside hal.memory.
    from hal.errors import PluginError

    backend = _Garbage(answer)
    for call in (info, summary):
        with pytest.raises(PluginError, match=r"backend 'garbage': memory\(0\) gave no usable"):
            call(backend)
    with pytest.raises(PluginError), track(backend):
        pass
