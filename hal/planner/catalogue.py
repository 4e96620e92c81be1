"""The accelerator catalogue: cards a user could buy, from hal/data/accelerators.json and plugins.

Each entry carries the source of its figures.  Plugins add entries through the
``hal_accelerators`` hook; an entry with a bad field is skipped and reported, never fatal.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from hal.errors import ConfigError

REQUIRED = ("id", "name", "memory_bytes", "backend", "source")


@dataclass(frozen=True)
class Interconnect:
    """The device-to-device link tensor parallelism uses: its name and total bandwidth."""

    link: str  # the name the data file gives ("PCIe 4.0 x16", ...)
    bandwidth: int  # bytes/s, both directions together, as vendors quote it
    source: str = ""

    @property
    def per_direction(self) -> float:
        """Bytes/s one way: what a ring all-reduce step sends while it receives as much."""
        return self.bandwidth / 2

    def as_dict(self) -> dict[str, Any]:
        """JSON form, the same fields as the data file."""
        return {"link": self.link, "bandwidth": self.bandwidth, "source": self.source}


@dataclass(frozen=True)
class Accelerator:
    """One catalogue entry: memory in bytes, bandwidth in bytes/s, dense peak TFLOPS by dtype."""

    id: str
    name: str
    backend: str
    memory_bytes: int
    source: str
    memory_bandwidth: int | None = None
    tflops: Mapping[str, float] = field(default_factory=dict)
    board_power_w: float | None = None
    native_dtypes: tuple[str, ...] = ()
    shared_memory: bool = False
    memory_type: str = ""
    match: tuple[str, ...] = ()
    notes: str = ""
    provider: str = "hal"
    interconnect: Interconnect | None = None
    board: str = ""  # set when the entry is one device of a board (a GCD, a stack, a chip)
    devices_per_board: int = 1
    node_link: Interconnect | None = None  # across nodes, a device (scale-out NIC)
    devices_per_node: int = 8
    gpu_share: float | None = None  # unified memory: the share the GPU may use by default
    pipeline_stages: bool = True  # its serving engines pipeline across nodes (else TP/EP only)

    def as_dict(self) -> dict[str, Any]:
        """JSON form, the same fields as the data file."""
        return {
            "id": self.id, "name": self.name, "backend": self.backend,
            "memory_bytes": self.memory_bytes, "memory_type": self.memory_type,
            "memory_bandwidth": self.memory_bandwidth, "tflops": dict(self.tflops),
            "board_power_w": self.board_power_w, "native_dtypes": list(self.native_dtypes),
            "shared_memory": self.shared_memory, "match": list(self.match),
            "source": self.source, "notes": self.notes, "provider": self.provider,
            "interconnect": self.interconnect.as_dict() if self.interconnect else None,
            "board": self.board, "devices_per_board": self.devices_per_board,
            "node_link": self.node_link.as_dict() if self.node_link else None,
            "devices_per_node": self.devices_per_node, "gpu_share": self.gpu_share,
            "pipeline_stages": self.pipeline_stages,
        }


def _dtype_key(name: object, ident: object, field: str, torch_name: bool = False) -> str:
    """A dtype name through hal.dtypes: peaks keyed by family (bf16, fp8), dtypes by torch name."""
    from hal import dtypes

    entry = dtypes.parse(name, what=f"accelerator {ident!r}: {field} dtype")
    return (entry.torch_name or entry.short) if torch_name else entry.kind


def from_mapping(entry: Mapping[str, Any], provider: str = "hal",
                 node_link: Mapping[str, Any] | None = None) -> Accelerator:
    """Validate one entry; a ConfigError names the field and what it should be."""
    missing = [k for k in REQUIRED if k not in entry]
    ident = entry.get("id", "?")
    if missing:
        raise ConfigError(f"accelerator {ident!r} lacks {', '.join(missing)}")
    for key in ("id", "name", "backend", "source"):
        if not isinstance(entry[key], str) or not entry[key]:
            raise ConfigError(f"accelerator {ident!r}: {key} must be a non-empty string")
    memory = entry["memory_bytes"]
    if isinstance(memory, bool) or not isinstance(memory, int) or memory <= 0:
        raise ConfigError(f"accelerator {ident!r}: memory_bytes {memory!r} must be a positive int")
    bandwidth = entry.get("memory_bandwidth")
    if bandwidth is not None and (not isinstance(bandwidth, (int, float)) or bandwidth <= 0):
        raise ConfigError(f"accelerator {ident!r}: memory_bandwidth {bandwidth!r} must be "
                          "positive bytes/s or null")
    tflops = entry.get("tflops") or {}
    if not isinstance(tflops, Mapping) or not all(
        isinstance(v, (int, float)) and v > 0 for v in tflops.values()
    ):
        raise ConfigError(f"accelerator {ident!r}: tflops must map dtype names to positive numbers")
    power = entry.get("board_power_w")
    if power is not None and (isinstance(power, bool) or not isinstance(power, (int, float))
                              or power <= 0):
        raise ConfigError(f"accelerator {ident!r}: board_power_w {power!r} must be positive "
                          "watts or null")
    per_board = entry.get("devices_per_board", 1)
    if isinstance(per_board, bool) or not isinstance(per_board, int) or per_board < 1:
        raise ConfigError(f"accelerator {ident!r}: devices_per_board {per_board!r} must be an "
                          "integer >= 1")
    return Accelerator(
        id=entry["id"], name=entry["name"], backend=entry["backend"], memory_bytes=memory,
        source=entry["source"], memory_bandwidth=None if bandwidth is None else int(bandwidth),
        tflops={_dtype_key(k, ident, "tflops"): float(v) for k, v in tflops.items()},
        board_power_w=None if power is None else float(power),
        native_dtypes=tuple(_dtype_key(d, ident, "native_dtypes", torch_name=True)
                            for d in entry.get("native_dtypes") or ()),
        shared_memory=bool(entry.get("shared_memory", False)),
        memory_type=str(entry.get("memory_type", "")),
        match=tuple(entry.get("match") or ()), notes=str(entry.get("notes", "")),
        provider=provider, interconnect=_interconnect(entry.get("interconnect"), ident),
        board=str(entry.get("board", "")), devices_per_board=per_board,
        node_link=_interconnect(entry.get("node_link", node_link), ident),
        devices_per_node=_count(entry.get("devices_per_node", 8), ident, "devices_per_node"),
        gpu_share=_share(entry.get("gpu_share"), ident),
        pipeline_stages=bool(entry.get("pipeline_stages", True)),
    )


def _share(value: Any, ident: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
        raise ConfigError(f"accelerator {ident!r}: gpu_share {value!r} must be in (0, 1] or null")
    return float(value)


def _count(value: Any, ident: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 1024:
        raise ConfigError(f"accelerator {ident!r}: {name} {value!r} must be an integer in 1..1024")
    return value


def _interconnect(value: Any, ident: Any) -> Interconnect | None:
    """The ``interconnect`` field checked: null, or a link name and a positive bandwidth."""
    if value is None:
        return None
    bandwidth = value.get("bandwidth") if isinstance(value, Mapping) else None
    if (not isinstance(value, Mapping) or not isinstance(value.get("link"), str)
            or isinstance(bandwidth, bool) or not isinstance(bandwidth, (int, float))
            or bandwidth <= 0):
        raise ConfigError(f"accelerator {ident!r}: interconnect must be null or "
                          "an object with link (a name), bandwidth (bytes/s > 0) and source")
    return Interconnect(link=value["link"], bandwidth=int(bandwidth),
                        source=str(value.get("source", "")))


def builtin() -> list[Accelerator]:
    """The entries shipped in hal/data/accelerators.json."""
    text = resources.files("hal").joinpath("data/accelerators.json").read_text(encoding="utf-8")
    data = json.loads(text)
    default = data.get("node_link")
    return [from_mapping(e, node_link=default) for e in data["accelerators"]]


def catalogue(plugins: bool = True) -> list[Accelerator]:
    """Built-in entries plus those plugins add (``plugins=False`` skips loading plugins).

    A plugin entry that reuses a built-in id replaces it; an invalid one is recorded on the
    plugin host as that plugin's failure and skipped.
    """
    entries = {a.id: a for a in builtin()}
    if plugins:
        from hal.plugins import load_plugins

        host = load_plugins()
        for plugin_name, entry in host.accelerators():
            try:
                acc = from_mapping(entry, provider=plugin_name)
            except ConfigError as exc:
                host.fail_plugin(plugin_name, f"hal_accelerators entry skipped: {exc}")
                continue
            entries[acc.id] = acc
    return list(entries.values())


def find(name: str, entries: Sequence[Accelerator] | None = None) -> Accelerator:
    """An entry by id (exact) or by a case-insensitive substring of its name."""
    entries = catalogue(plugins=False) if entries is None else entries
    key = name.strip().lower()
    for acc in entries:
        if acc.id == key:
            return acc
    hits = [a for a in entries if key in a.name.lower() or key in a.id]
    if len(hits) == 1:
        return hits[0]
    if hits:
        raise ConfigError(f"accelerator {name!r} matches several cards: "
                          f"{', '.join(a.id for a in hits)}; name one")
    raise ConfigError(f"unknown accelerator {name!r}; expected one of: "
                      f"{', '.join(a.id for a in entries)}")


def match_device(device_name: str, total_memory: int,
                 entries: Sequence[Accelerator]) -> Accelerator | None:
    """The catalogue entry a local device is, by the name substrings in ``match``.

    Several matches (one name, two memory sizes) are settled by the closest memory size.
    """
    name = device_name.lower()
    hits = [a for a in entries if any(m.lower() in name for m in a.match)]
    if not hits:
        return None
    return min(hits, key=lambda a: abs(a.memory_bytes - total_memory))


@dataclass(frozen=True)
class Host:
    """A host platform whose memory holds offloaded experts: bandwidth and a typical size."""

    id: str
    name: str
    memory_bandwidth: int  # bytes/s, peak
    memory_bytes: int
    source: str

    def as_dict(self) -> dict[str, Any]:
        """JSON form, the same fields as the data file."""
        return {"id": self.id, "name": self.name, "memory_bandwidth": self.memory_bandwidth,
                "memory_bytes": self.memory_bytes, "source": self.source}


def hosts() -> list[Host]:
    """The host platforms shipped in hal/data/hosts.json."""
    text = resources.files("hal").joinpath("data/hosts.json").read_text(encoding="utf-8")
    return [Host(h["id"], h["name"], int(h["memory_bandwidth"]), int(h["memory_bytes"]),
                 h["source"]) for h in json.loads(text)["hosts"]]


def find_host(name: str) -> Host:
    """A host platform by id; a ConfigError lists the known ones."""
    known = hosts()
    for h in known:
        if h.id == name.strip().lower():
            return h
    raise ConfigError(f"unknown host {name!r}; expected one of: {', '.join(h.id for h in known)}")
