"""The accelerator catalogue: required entries, dense figures with sources, the plugin hook."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from importlib import resources
from typing import Any

import pytest

import hal
from hal.errors import ConfigError
from hal.planner.catalogue import builtin, catalogue, find, from_mapping, match_device

REQUIRED_IDS = {
    "a100-40gb-sxm", "a100-80gb-sxm", "h100-sxm", "h100-pcie", "h200-sxm", "l40s", "rtx-4090",
    "rtx-4080-super", "rtx-3090", "v100-sxm2-32gb", "t4", "jetson-agx-orin-32gb",
    "jetson-agx-orin-64gb", "mi210", "mi250x", "mi300x", "ascend-910b", "ascend-310p",
    "max-1550", "arc-a770-16gb",
    # issue 16: the cards deployers choose among
    "h20", "h800-sxm", "a800-80gb-sxm", "l20", "l40", "rtx-5090", "rtx-4060-ti-16gb", "b200",
    "gh200-144gb", "mi325x", "mi355x", "radeon-pro-w7900", "ascend-910b1", "ascend-910b2",
    "ascend-910b3", "ascend-910b4", "ascend-910c", "atlas-300i-duo",
}


def test_every_required_card_is_there_with_memory_backend_and_source() -> None:
    entries = {a.id: a for a in builtin()}
    assert set(entries) >= REQUIRED_IDS
    for acc in entries.values():
        assert acc.memory_bytes >= 16 * 2**30
        assert acc.backend in {"cuda", "rocm", "ascend", "xpu", "accelerator"}
        # unified-memory machines whose maker publishes no dense TFLOPS have none (no prefill)
        assert acc.source.strip() and acc.native_dtypes and (acc.tflops or acc.shared_memory)
        assert acc.match, acc.id
    assert entries["jetson-agx-orin-64gb"].shared_memory
    assert not entries["h100-sxm"].shared_memory


def test_peaks_are_dense_not_sparse() -> None:
    # published with sparsity: H100 SXM 1979 FP16, MI300X 2614.9 FP16, L40S 733 FP16
    assert find("h100-sxm").tflops["bf16"] == pytest.approx(989.4)
    assert find("mi300x").tflops["fp16"] == pytest.approx(1307.4)
    assert find("l40s").tflops["fp16"] == pytest.approx(362.05)
    for acc in builtin():
        if "fp8" in acc.tflops and "fp16" in acc.tflops:
            assert acc.tflops["fp8"] <= 2.05 * acc.tflops["fp16"], acc.id  # 4x: a sparse mixup


def test_interconnects_are_sourced_and_boards_are_noted() -> None:
    entries = {a.id: a for a in builtin()}
    linked = [a for a in entries.values() if a.interconnect is not None]
    assert len(linked) >= 25
    for acc in linked:
        assert acc.interconnect is not None and acc.interconnect.source.strip(), acc.id
        assert 16e9 <= acc.interconnect.bandwidth <= 2e12, acc.id
    assert entries["h200-sxm"].interconnect.bandwidth == 900e9  # type: ignore[union-attr]
    for ident, per_board in (("mi250x", 2), ("max-1550", 2), ("atlas-300i-duo", 2),
                             ("ascend-910c", 2)):
        acc = entries[ident]
        assert acc.devices_per_board == per_board and acc.board, ident
    # the per-device MI250X: half the board's 128 GB and 383 TFLOPS FP16
    assert entries["mi250x"].memory_bytes == 64 * 2**30
    assert entries["mi250x"].tflops["fp16"] == pytest.approx(383 / 2)
    assert entries["ascend-910b4"].memory_bytes == 32 * 2**30
    hit = match_device("Ascend910B4", 32 * 2**30, list(entries.values()))
    assert hit is not None and hit.id == "ascend-910b4"
    hit = match_device("AMD Instinct MI250X", 64 * 2**30, list(entries.values()))
    assert hit is not None and hit.id == "mi250x"


def test_bad_interconnect_and_power_fields_name_the_field() -> None:
    base = {"id": "x", "name": "X", "memory_bytes": 2**30, "backend": "b", "source": "s"}
    with pytest.raises(ConfigError, match="interconnect"):
        from_mapping({**base, "interconnect": {"link": "L", "bandwidth": -1}})
    with pytest.raises(ConfigError, match="board_power_w"):
        from_mapping({**base, "board_power_w": "lots"})
    with pytest.raises(ConfigError, match="devices_per_board"):
        from_mapping({**base, "devices_per_board": 0})
    acc = from_mapping({**base, "interconnect": {"link": "L", "bandwidth": 100e9, "source": "t"}})
    assert acc.interconnect is not None and acc.interconnect.per_direction == 50e9
    assert acc.as_dict()["interconnect"] == {"link": "L", "bandwidth": 100_000_000_000,
                                             "source": "t"}


def test_data_file_declares_units() -> None:
    text = resources.files("hal").joinpath("data/accelerators.json").read_text()
    data = json.loads(text)
    assert data["schema"] == "hal.accelerators/1"
    assert "sparsity" in data["units"]["tflops"]


def test_device_names_match_entries_and_memory_settles_ties() -> None:
    entries = builtin()
    hit = match_device("NVIDIA A100-SXM4-80GB", 80 * 2**30, entries)
    assert hit is not None and hit.id == "a100-80gb-sxm"
    orin = match_device("Orin (nvgpu)", 30 * 2**30, entries)
    assert orin is not None and orin.id == "jetson-agx-orin-32gb"
    assert match_device("Some Other Chip", 2**30, entries) is None


def test_bad_entries_name_the_field() -> None:
    with pytest.raises(ConfigError, match="source"):
        from_mapping({"id": "x", "name": "X", "memory_bytes": 1, "backend": "b"})
    with pytest.raises(ConfigError, match="memory_bytes"):
        from_mapping({"id": "x", "name": "X", "memory_bytes": -1, "backend": "b", "source": "s"})
    with pytest.raises(ConfigError, match="unknown accelerator"):
        find("no-such-card")


class _Plugin:
    def __init__(self, entries: Sequence[Mapping[str, Any]]) -> None:
        self.entries = entries

    @hal.hookimpl
    def hal_accelerators(self) -> Sequence[Mapping[str, Any]]:
        return self.entries


def test_plugins_add_entries_through_the_hook() -> None:
    card = {"id": "toy-9000", "name": "Toy 9000", "memory_bytes": 96 * 2**30,
            "backend": "toy", "source": "tests", "tflops": {"bf16": 100.0}}
    with hal.plugins.registered(_Plugin([card]), "toycat"):
        entries = {a.id: a for a in catalogue()}
        assert entries["toy-9000"].provider == "toycat"
        assert entries["toy-9000"].memory_bytes == 96 * 2**30
        assert "h100-sxm" in entries
    assert "toy-9000" not in {a.id for a in catalogue()}


def test_a_plugin_entry_with_a_bad_field_is_skipped_and_recorded() -> None:
    bad = {"id": "broken", "name": "Broken", "memory_bytes": "lots", "backend": "toy",
           "source": "tests"}
    with hal.plugins.registered(_Plugin([bad]), "badcat") as host:
        assert "broken" not in {a.id for a in catalogue()}
        assert "memory_bytes" in (host.records["badcat"].error or "")
