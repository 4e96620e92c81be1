"""The whole plan in one pass: estimate, the smallest card count per card and format, speed, rank.

:func:`plan` answers the deployer's three questions (which accelerator, how many, how fast) as
one frozen :class:`Plan`; ``hal plan`` only renders it.  Every estimate is computed once (a
memo keyed by its arguments): a card's count search and its context search reuse the
per-device figures of a layout, which do not depend on the card.  Torch is imported only
for the local devices (``local=True``).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Literal

from hal.errors import ConfigError
from hal.planner.catalogue import Accelerator, Host, catalogue, find, find_host, match_device
from hal.planner.estimate import (
    DEFAULT_RUNTIME_BYTES,
    Breakdown,
    Workload,
    dtype_name,
    kv_split_note,
    memory,
)
from hal.planner.fit import Headroom
from hal.planner.formats import FormatError, for_card
from hal.planner.layouts import LAYOUTS, Layout, Search, TensorPipeline, kinds, tp_degrees
from hal.planner.models import ModelSpec, resolve
from hal.planner.speed import Efficiency, Rates, Speed, efficiency, engines, speed

Rank = Literal["memory", "speed", "power"]
RANKS: tuple[str, ...] = ("memory", "speed", "power")
#: Weight formats the card table compares, most precise first.
TABLE_FORMATS = ("bf16", "fp8", "int8", "int4")
#: Tensor parallelism stays inside one node: 8 devices a node is the common server (HGX/DGX,
#: MI300X OAM platforms, Atlas 800); pipeline stages span nodes.
MAX_TP = 8
#: Context searched up to this many tokens when the model states no limit.
CONTEXT_LIMIT = 1 << 22
#: The share of a card's memory a deployment may fill: vLLM's ``gpu_memory_utilization``
#: default (0.9; SGLang sizes its pool as a similar fraction).  The rest is the engine's
#: margin for captured graphs, collective buffers, the sampler and fragmentation at scale, which the
#: live-tensor estimate does not count; a plan at 99 % of a card is not one anyone runs.
GPU_MEMORY_UTILIZATION = 0.9


@dataclass(frozen=True)
class Attempt:
    """A smaller layout that does not fit: the bytes a device would need against what it has."""

    layout: Layout
    needed: int
    capacity: int

    @property
    def reason(self) -> str:
        """One line: ``4 x (TP 4): needs 172.3 GiB a device, has 141.0 GiB``."""
        from hal.units import format_bytes

        return (f"{self.layout.count} x ({self.layout.label}): needs {format_bytes(self.needed)} "
                f"a device, has {format_bytes(self.capacity)}")

    def as_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {"count": self.layout.count, "layout": self.layout.as_dict(),
                "needed": self.needed, "capacity": self.capacity, "reason": self.reason}


@dataclass(frozen=True)
class Placement:
    """One card and weight format: the smallest layout that holds the model, and its speed."""

    card: Accelerator
    dtype: str
    layout: Layout | None  # None: no layout up to MAX_TP x layers fits
    per_device: Breakdown | None  # the estimate at that layout
    fails: tuple[Attempt, ...]  # the least-memory layout of each smaller count
    max_context: int | None  # tokens that fit at the requested batch, at that layout
    speed: Speed | None
    capacity: int = 0  # usable bytes a device: memory x the utilisation cap
    converted_to: str = ""  # the format the card runs instead of ``dtype`` ("" when native)
    reason: str = ""  # why it was converted, or why it cannot run (--no-convert)

    @property
    def runs(self) -> str:
        """The format the card runs: ``dtype``, or what it is converted to."""
        return self.converted_to or self.dtype

    @property
    def headroom(self) -> int | None:
        """Usable bytes a device left after the estimate (None: nothing fits)."""
        return self.capacity - self.per_device.total if self.per_device else None

    @property
    def feasible(self) -> bool:
        """Some layout holds the model."""
        return self.layout is not None

    @property
    def config(self) -> str:
        """``8 x <card name> (TP 8)``; ``-`` when nothing fits."""
        if self.layout is None:
            return "-"
        return f"{self.layout.count} x {self.card.name}" + (
            f" ({self.layout.label})" if self.layout.label != "1 device" else "") + (
            f" as {self.converted_to}" if self.converted_to else "")

    @property
    def memory_total(self) -> int:
        """Bytes of device memory the configuration buys (count x card memory)."""
        return self.layout.count * self.card.memory_bytes if self.layout else 0

    def as_dict(self) -> dict[str, Any]:
        """JSON form: every field."""
        return {
            "card": self.card.id, "name": self.card.name, "dtype": self.dtype,
            "feasible": self.feasible, "config": self.config,
            "count": self.layout.count if self.layout else None,
            "layout": self.layout.as_dict() if self.layout else None,
            "needed_per_device": self.per_device.total if self.per_device else None,
            "capacity_per_device": self.card.memory_bytes, "usable_per_device": self.capacity,
            "headroom_per_device": self.headroom, "memory_total": self.memory_total,
            "fails": [a.as_dict() for a in self.fails], "max_context": self.max_context,
            "speed": self.speed.as_dict() if self.speed else None,
            "converted_to": self.converted_to or None, "reason": self.reason or None,
        }

    def as_dict_full(self) -> dict[str, Any]:
        """JSON form with the per-device breakdown and its formulas (``--json --all``)."""
        return self.as_dict() | {
            "per_device": self.per_device.as_dict() if self.per_device else None}


@dataclass(frozen=True)
class LocalDevice:
    """A device of an available local backend as the probe found it."""

    backend: str
    index: int
    name: str
    selected: bool
    total: int
    free: int
    is_cpu: bool = False


@dataclass(frozen=True)
class LocalFit(Headroom):
    """A local device against the estimate, and its speed."""

    device: LocalDevice
    needed: int
    speed: Speed | None
    rates_basis: str  # "measured by hal bench ...", "spec sheet (<card>)" or "" (none known)

    @property
    def backend(self) -> str:
        """The device's backend."""
        return self.device.backend

    @property
    def index(self) -> int:
        """The device's index in its backend."""
        return self.device.index

    @property
    def name(self) -> str:
        """The device's name."""
        return self.device.name

    @property
    def selected(self) -> bool:
        """Whether hal.get_device() picks this backend."""
        return self.device.selected

    @property
    def total(self) -> int:  # type: ignore[override]
        """Device memory in bytes."""
        return self.device.total

    @property
    def free(self) -> int:  # type: ignore[override]
        """Free device memory in bytes."""
        return self.device.free

    def as_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {"backend": self.backend, "index": self.index, "device": self.name,
                "selected": self.selected, "total": self.total, "free": self.free,
                "needed": self.needed, "fits_total": self.fits_total,
                "fits_free": self.fits_free, "headroom": self.headroom,
                "rates_basis": self.rates_basis,
                "speed": self.speed.as_dict() if self.speed else None}


@dataclass(frozen=True)
class RankRow:
    """One feasible configuration in the ranking (a catalogue placement or a local device)."""

    config: str
    kind: str  # "card" or "local"
    id: str
    layout: str  # the layout's label ("TP 8 x PP 2", "layer split 16", "1 device")
    count: int
    memory_total: int
    needed_per_device: int
    capacity_per_device: int
    speed: Speed | None

    def as_dict(self) -> dict[str, Any]:
        """JSON form: every field by name, the speed as its own JSON form."""
        row = {f.name: getattr(self, f.name) for f in fields(self)}
        return row | {"speed": self.speed.as_dict() if self.speed else None}


@dataclass(frozen=True)
class Request:
    """What was asked: the model as given and the serving figures."""

    model: str
    dtype: str
    kv_dtype: str | None
    batch: int
    context: int
    mode: str
    checkpointing: bool
    tensor_parallel: int
    max_tp: int
    rank: str | None
    formats: tuple[str, ...]
    cards: tuple[str, ...] | None  # None: every catalogue card
    gpu_memory_utilization: float | None = None  # None: each card's default share
    layout: str | None = None  # a forced layout kind
    host: str | None = None  # a host platform id: offload layouts are tried
    mtp: float = 0.0  # speculative decoding acceptance (0: off)
    engine: str = "serving-vllm"  # the engine class tensor-parallel and EP layouts use

    def as_dict(self) -> dict[str, Any]:
        """JSON form."""
        out = dict(self.__dict__)
        out["formats"] = list(self.formats)
        out["cards"] = None if self.cards is None else list(self.cards)
        return out


@dataclass(frozen=True)
class Plan:
    """Everything ``hal plan`` shows, computed in one pass."""

    spec: ModelSpec
    request: Request
    estimate: Breakdown
    placements: tuple[Placement, ...]
    local: tuple[LocalFit, ...] | None
    ranking: tuple[RankRow, ...]
    answer: str
    efficiency: Efficiency
    assumptions: tuple[str, ...] = field(default=())

    def placement(self, card: str, dtype: str | None = None) -> Placement:
        """The placement of a card id at ``dtype`` (default: the requested one)."""
        want = dtype or self.request.dtype
        for p in self.placements:
            if p.card.id == card and p.dtype == want:
                return p
        raise ConfigError(f"no placement for card {card!r} at {want!r}")

    def as_dict(self, full: bool = True) -> dict[str, Any]:
        """JSON form (schema ``hal.plan/3``): every field; ``full=False`` (``hal plan --json``)
        keeps the answer, the top 10 of the ranking and, per placement, its count and (at the
        requested format) its figures, without formulas: a 7B plan in a few tens of KB."""
        spec = self.spec
        if not full:
            return self._compact()
        return {
            "schema": "hal.plan/3",
            "answer": self.answer,
            "request": self.request.as_dict(),
            "model": {"name": spec.name, "kind": spec.kind, "params_total": spec.params_total,
                      "params_active": spec.params_active, "attention": spec.attention,
                      "layers": spec.num_layers, "heads": spec.num_heads,
                      "kv_heads": spec.num_kv_heads, "max_context": spec.max_context,
                      "source": spec.source},
            "estimate": self.estimate.as_dict(),
            "local": None if self.local is None else [d.as_dict() for d in self.local],
            "placements": [p.as_dict() for p in self.placements],
            "ranking": {"by": self.request.rank or "memory",
                        "rows": [r.as_dict() for r in self.ranking]},
            "efficiency": self.efficiency.as_dict(),
            "assumptions": list(self.assumptions),
        }

    def _compact(self) -> dict[str, Any]:
        spec, req = self.spec, self.request
        cells: list[dict[str, Any]] = []
        for p in self.placements:
            cell: dict[str, Any] = {"card": p.card.id, "dtype": p.dtype,
                                    "count": p.layout.count if p.layout else None}
            if p.dtype == req.dtype:
                s = p.speed
                cell |= {"config": p.config, "layout": p.layout.label if p.layout else None,
                         "needed_per_device": p.per_device.total if p.per_device else None,
                         "usable_per_device": p.capacity, "max_context": p.max_context,
                         "decode_tokens_s": s.decode_tokens_s if s else None,
                         "prefill_s": s.prefill_s if s else None,
                         "why_no_figure": why_missing(p)}
            cells.append(cell)
        return {
            "schema": "hal.plan/3", "answer": self.answer, "request": req.as_dict(),
            "model": {"name": spec.name, "params_total": spec.params_total,
                      "params_active": spec.params_active, "source": spec.source},
            "estimate": {"dtype": self.estimate.dtype, "kv_dtype": self.estimate.kv_dtype,
                         "layout": self.estimate.layout, "total": self.estimate.total,
                         **self.estimate.terms},
            "local": None if self.local is None else [d.as_dict() for d in self.local],
            "placements": cells,
            "ranking": {"by": req.rank or "memory", "total": len(self.ranking),
                        "rows": [r.as_dict() for r in self.ranking[:TOP]]},
            "labels": {"decode_tokens_s": "estimate, tokens/s a sequence",
                       "prefill_s": "estimate, seconds"},
        }


#: Rows of the ranking the default answer shows (``--all`` for the rest).
TOP = 10


def why_missing(p: Placement) -> str | None:
    """Why a placement lacks a figure, in a few words (None: it has them all)."""
    if p.layout is None:
        return "fits no layout tried"
    s = p.speed
    if s is None:
        return "training: no speed"
    if s.decode_tokens_s is None:
        return "no bandwidth figure"
    if s.prefill_s is None:
        return "no TFLOPS figure"
    return None


class _Planner:
    """One plan's computation: the estimate memo and the searches that share it."""

    def __init__(self, spec: ModelSpec, req: Request, runtime_bytes: int,
                 overrides: Mapping[str, float | None] | None = None,
                 host: Host | None = None) -> None:
        self.spec, self.req, self.runtime, self.host = spec, req, runtime_bytes, host
        self.memo: dict[tuple[Any, ...], Breakdown] = {}
        self.degrees = tp_degrees(spec, req.max_tp)
        self.limit = spec.max_context or CONTEXT_LIMIT
        self.kinds = kinds(req.layout)
        self.overrides = overrides
        self.factors: dict[str, Efficiency] = {}
        self.work = Workload(spec, req.dtype, req.kv_dtype, req.batch, req.context,
                             "train" if req.mode == "train" else "inference",
                             req.checkpointing, runtime_bytes=runtime_bytes, mtp=req.mtp)

    def est(self, dtype: str, layout: Layout, context: int | None = None,
            runtime: int | None = None, batch: int | None = None) -> Breakdown:
        """The memory estimate at ``layout`` (computed once per distinct argument set)."""
        key = (dtype, layout, context or self.req.context,
               self.runtime if runtime is None else runtime, batch or self.req.batch)
        hit = self.memo.get(key)
        if hit is None:
            work = self.work.but(dtype=dtype, context=key[2], runtime_bytes=key[3],
                                 batch=key[4])
            hit = self.memo[key] = memory(work, layout)
        return hit

    def eff(self, layout: Layout) -> Efficiency:
        """The efficiency factors of the layout's engine class (the requested serving engine
        for the serving layouts), with env and flag overrides."""
        cls = self.req.engine if layout.engine == SERVING else layout.engine
        hit = self.factors.get(cls)
        if hit is None:
            known = engines()
            base = known[cls].factors if cls in known else None
            hit = self.factors[cls] = efficiency(self.overrides, base=base)
        return hit

    def layouts(self, card: Accelerator | None) -> list[Layout]:
        """Every candidate layout for ``card``, fewest devices first, the usual one first
        among equals (:meth:`Layout.rank_on`)."""
        search = Search(self.degrees, self.req.max_tp, card, host=self.host is not None)
        found = [lay for cls in self.kinds for lay in cls.candidates(self.spec, search)]
        return sorted(found, key=lambda lay: (lay.count, lay.rank_on(card)))

    def usable(self, card: Accelerator) -> int:
        """Bytes of a card a deployment may fill: memory x the utilisation cap (the flag's,
        else the card's own share for unified memory, else the serving engines' 0.9)."""
        return int(card.memory_bytes * self.share(card))

    def share(self, card: Accelerator) -> float:
        """The share of the card's memory a deployment may fill."""
        if self.req.gpu_memory_utilization is not None:
            return self.req.gpu_memory_utilization
        return card.gpu_share if card.gpu_share is not None else GPU_MEMORY_UTILIZATION

    def host_fits(self, est: Breakdown) -> bool:
        """The host holds the offloaded experts (90 % of its memory: the OS keeps the rest)."""
        if not est.host:
            return True
        return self.host is not None and est.host <= 0.9 * self.host.memory_bytes

    def place(self, card: Accelerator, dtype: str) -> tuple[Layout | None, tuple[Attempt, ...]]:
        """The first layout (in :meth:`layouts` order) that fits the card, and why each smaller
        count did not (its least-memory layout); (None, the widest attempt) when none fits."""
        cap = self.usable(card)
        tried: dict[int, Attempt] = {}
        for lay in self.layouts(card):
            est = self.est(dtype, lay)
            need = est.total
            if need <= cap and self.host_fits(est):
                return lay, tuple(a for c, a in sorted(tried.items()) if c < lay.count)
            best = tried.get(lay.count)
            if best is None or need < best.needed:
                tried[lay.count] = Attempt(lay, need, cap)
        widest = max(tried.values(), key=lambda a: a.layout.count, default=None)
        return None, (widest,) if widest else ()

    def max_context(self, dtype: str, layout: Layout, cap: int) -> int:
        """The most tokens that fit at the requested batch: interpolation, then bisection."""
        lo, hi = self.req.context, self.limit
        if lo >= hi:
            return lo
        need = functools.partial(self._need_at, dtype, layout)
        if need(hi) <= cap:
            return hi
        n_lo, n_hi = need(lo), need(hi)
        while hi - lo > 1:
            guess = lo + int((cap - n_lo) * (hi - lo) / max(1, n_hi - n_lo))
            mid = min(hi - 1, max(lo + 1, guess))
            if hi - lo > 8 and not lo + 1 < mid < hi - 1:
                mid = (lo + hi) // 2
            n_mid = need(mid)
            if n_mid <= cap:
                lo, n_lo = mid, n_mid
                if need(min(hi, lo + 1)) > cap:
                    return lo
            else:
                hi, n_hi = mid, n_mid
                if need(hi - 1) <= cap:
                    return hi - 1
        return lo

    def _need_at(self, dtype: str, layout: Layout, context: int) -> int:
        return self.est(dtype, layout, context=context).total


#: The inter-node link a card's nodes use when its entry names none (catalogue data).
def _rates(card: Accelerator, host: Host | None = None) -> Rates:
    link, node = card.interconnect, card.node_link
    return Rates(bandwidth=card.memory_bandwidth, tflops=dict(card.tflops),
                 link_bandwidth=link.per_direction if link else None,
                 link=link.link if link else "", power_w=card.board_power_w,
                 basis=f"spec sheet ({card.name})",
                 node_link_bandwidth=node.per_direction if node else None,
                 node_link=node.link if node else "", devices_per_node=card.devices_per_node,
                 host_bandwidth=host.memory_bandwidth if host else None,
                 host=host.name if host else "")


#: Presets whose checkpoints ship in another format than bf16 (their config.json's
#: ``quantization_config``): DeepSeek-V3/R1 are fp8, block-scaled 128 x 128.
NATIVE_FORMATS = {"deepseek-v3": "fp8", "deepseek-r1": "fp8"}


def native_format(model: str | int | ModelSpec | Mapping[str, Any]) -> str:
    """The weight format a model's checkpoint ships in: its config's ``quantization_config``
    (fp8) or ``torch_dtype``, a preset's known format, else bf16 (what an unknown count or
    a config without either is served in)."""
    cfg: Mapping[str, Any] | None = model if isinstance(model, Mapping) else None
    if isinstance(model, str):
        key = model.strip().lower()
        if key in NATIVE_FORMATS:
            return NATIVE_FORMATS[key]
        if key.endswith(".json") or os.path.isdir(model):
            from hal.planner.configfile import read_json_config

            cfg = read_json_config(model)  # after resolve(): the same guarded read
    if cfg is not None:
        quant = cfg.get("quantization_config")
        if isinstance(quant, Mapping) and str(quant.get("quant_method", "")).lower() == "fp8":
            return "fp8"
        dtype = cfg.get("torch_dtype")
        if isinstance(dtype, str):
            try:
                return dtype_name(dtype)
            except ConfigError:
                pass
    return "bf16"


#: The engine class of the layouts a serving engine runs (tensor x pipeline, expert parallel).
SERVING = "serving"
#: The serving class a plan uses unless told: vLLM's, the engine most deployers start from
#: (its memory cap is the default cap too); ``engine="serving"`` is SGLang / TensorRT-LLM.
DEFAULT_ENGINE = "serving-vllm"


def serving_engines() -> tuple[str, ...]:
    """The serving engine classes ``--engine`` may name (hal/data/engines.json)."""
    return tuple(k for k in engines() if k == SERVING or k.startswith(SERVING + "-"))


def serving_engine(name: str | None) -> str:
    """The serving engine class for ``name`` (None: the default), or one line naming them."""
    if name is None:
        return DEFAULT_ENGINE
    key = name.strip().lower()
    known = serving_engines()
    if key not in known:
        raise ConfigError(f"engine {name!r} is unknown; expected one of: {', '.join(known)}")
    return key


def plan(
    model: str | int | ModelSpec | Mapping[str, Any],
    dtype: str | None = None,
    *,
    kv_dtype: str | None = None,
    batch: int = 1,
    context: int = 4096,
    train: bool = False,
    checkpointing: bool = False,
    tensor_parallel: int = 1,
    formats: Sequence[str] = TABLE_FORMATS,
    cards: Sequence[str] | None = None,
    local: bool = True,
    rank: str | None = None,
    max_tp: int = MAX_TP,
    efficiency_overrides: Mapping[str, float | None] | None = None,
    local_devices: Callable[[], Sequence[LocalDevice]] | None = None,
    convert: bool = True,
    gpu_memory_utilization: float | None = None,
    layout: str | None = None,
    host: str | None = None,
    mtp: float | None = None,
    engine: str | None = None,
) -> Plan:
    """Plan ``model`` at ``dtype`` (None: its checkpoint's own format, :func:`native_format`):
    the estimate, per card and format the smallest layout that
    holds it with its speed, the local devices (``local=True``: probes them, imports torch),
    and the feasible configurations ranked by ``rank`` (memory, speed or power).

    ``cards`` picks catalogue ids or name parts (None: all; empty: none).
    ``local_devices`` replaces the device probe (tests): it returns :class:`LocalDevice` values.
    A format a card does not compute natively is converted
    (:func:`hal.planner.formats.for_card`: fp8 to W8A8 or bf16...) and the row says so; with
    ``convert=False`` that row cannot run, and when every named card is such, a one-line
    FormatError says what would work.
    ``gpu_memory_utilization``: the share of a card a placement may fill (default 0.9, vLLM's).
    ``layout``: a layout kind (``tp``, ``layer-split``, ``offload``) to use alone.
    ``host``: a host platform id (hal/data/hosts.json) whose memory may hold an MoE's routed
    experts: offload layouts are tried.
    ``mtp``: speculative decoding with one drafted token accepted at this rate (off: None).
    """
    from hal.parse import parse_float

    kv = dtype_name(kv_dtype, kv=True) if kv_dtype is not None else None
    if checkpointing and not train:
        raise ConfigError("--checkpointing applies to training; add --train")
    if rank is not None and rank not in RANKS:
        raise ConfigError(f"rank {rank!r} is invalid; expected one of: {', '.join(RANKS)}")
    if isinstance(max_tp, bool) or not isinstance(max_tp, int) or not 1 <= max_tp <= 64:
        raise ConfigError(f"max_tp {max_tp!r} is invalid; expected an integer in 1..64")
    if rank is not None and not local and cards is not None and not cards:
        raise ConfigError(f"--rank {rank} has nothing to rank: --no-local and no cards selected; "
                          "drop --no-local or name cards with --cards")
    util = None if gpu_memory_utilization is None else parse_float(
        "--gpu-memory-utilization", gpu_memory_utilization, lo=0.0, hi=1.0, lo_inclusive=False)
    kinds(layout)  # an unknown kind is one line naming the known ones
    serving = serving_engine(engine)
    platform = find_host(host) if host is not None else None
    if layout == "offload" and platform is None:
        from hal.planner.catalogue import hosts

        raise ConfigError("--layout offload needs the host's memory: add --host, one of: "
                          + ", ".join(h.id for h in hosts()))
    spec = resolve(model)
    dtype = dtype_name(dtype) if dtype is not None else native_format(model)
    fmts = tuple(dict.fromkeys([dtype_name(f) for f in formats if not (
        train and dtype_name(f) in ("fp8", "int8", "int4"))] + [dtype]))
    entries = catalogue(plugins=local)
    chosen = entries if cards is None else [find(c, entries) for c in cards]
    req = Request(model=spec.name, dtype=dtype, kv_dtype=kv, batch=batch, context=context,
                  mode="train" if train else "inference", checkpointing=checkpointing,
                  tensor_parallel=tensor_parallel, max_tp=max_tp, rank=rank, formats=fmts,
                  cards=None if cards is None else tuple(a.id for a in chosen),
                  gpu_memory_utilization=util, layout=layout, host=host,
                  mtp=0.0 if mtp is None else parse_float("--mtp", mtp, lo=0.0, hi=1.0),
                  engine=serving)
    p = _Planner(spec, req, DEFAULT_RUNTIME_BYTES, efficiency_overrides, platform)
    if layout is not None and not p.layouts(None):
        kinds(layout)[0]().check(spec)  # e.g. a dense model: one line naming what would work
        raise ConfigError(f"layout {layout!r} has no configuration for {spec.name}; expected "
                          "one of: " + ", ".join(k for k in LAYOUTS if k != layout))
    main = p.est(dtype, TensorPipeline(tensor_parallel, 1))
    eff = p.eff(TensorPipeline())

    placements = []
    refusals: list[FormatError] = []
    for card in chosen:
        for f in fmts:
            cap = p.usable(card)
            try:
                choice = for_card(f, card)
            except FormatError as exc:  # nothing this card computes can run the format
                placements.append(Placement(card, f, None, None, (), None, None, cap,
                                            reason=str(exc)))
                continue
            if choice.converted and not convert:
                try:
                    for_card(f, card, convert=False)
                except FormatError as exc:
                    if f == dtype:
                        refusals.append(exc)
                    placements.append(Placement(card, f, None, None, (), None, None, cap,
                                                reason=str(exc)))
                continue
            g = choice.used
            lay, fails = p.place(card, g)
            per_device = p.est(g, lay) if lay else None
            room = p.max_context(g, lay, cap) if lay else None
            sp = None
            if lay and not train:
                sp = speed(p.work.but(dtype=g), lay, _rates(card, platform), p.eff(lay))
            placements.append(Placement(card, f, lay, per_device, fails, room, sp, cap,
                                        converted_to=g if choice.converted else "",
                                        reason=choice.reason))
    if refusals and cards is not None and len(refusals) == len(chosen):
        raise refusals[0]

    local_rows = None
    if local:
        local_rows = tuple(_local(p, req, entries, local_devices))
    ranking = _rank(placements, local_rows, dtype, rank or "memory")
    assumptions = (
        (f"a deployment fills at most {util:.0%} of a card's memory (--gpu-memory-utilization)"
         if util is not None else
         f"a deployment fills at most {GPU_MEMORY_UTILIZATION:.0%} of a card's memory "
         "(--gpu-memory-utilization; vLLM's default: the rest is its margin for captured graphs, "
         "collective buffers and fragmentation); unified-memory machines: the share their GPU "
         "may use"),
        f"tensor parallelism within a node, at most {max_tp} devices (--max-tp); when TP "
        "alone cannot hold the model, pipeline stages of whole nodes at the largest TP degree "
        "(TP 8 x PP 2 = 16 devices) over the inter-node link; cards with no fast link "
        "(PCIe only) split layers across cards instead (llama.cpp --split-mode layer)",
        "TP degrees divide the attention heads and divide or are a multiple of the KV heads "
        "(vLLM's rule); " + kv_split_note(spec, max(p.degrees)),
        f"speed at the full context ({context:,} tokens) for every sequence; prefill of a "
        f"{context:,}-token prompt for each of the {batch} sequences",
        "catalogue cards are taken as empty; figures per device",
        *_conversions(placements),
    )
    answer = _answer(spec, req, placements, ranking, rank or "memory", p)
    return Plan(spec=spec, request=req, estimate=main, placements=tuple(placements),
                local=local_rows, ranking=ranking, answer=answer, efficiency=eff,
                assumptions=assumptions)


def _conversions(placements: Sequence[Placement]) -> list[str]:
    """One line per (format, conversion): which cards convert the checkpoint, and why."""
    groups: dict[tuple[str, str], list[Placement]] = {}
    for pl in placements:
        if pl.converted_to:
            groups.setdefault((pl.dtype, pl.converted_to), []).append(pl)
    lines = []
    for (asked, _), rows in groups.items():
        more = f" and {len(rows) - 4} more" if len(rows) > 4 else ""
        names = ", ".join(r.card.id for r in rows[:4]) + more
        why = rows[0].reason.split(": ", 1)[-1]
        lines.append(f"{asked} on {names} (no native {asked} compute): {why}; --no-convert "
                     "refuses instead")
    return lines


def _local(p: _Planner, req: Request, entries: Sequence[Accelerator],
           provider: Callable[[], Sequence[LocalDevice]] | None) -> list[LocalFit]:
    rows = []
    lay = TensorPipeline(req.tensor_parallel, 1)
    for dev in (provider or _probe)():
        runtime = 0 if dev.is_cpu else DEFAULT_RUNTIME_BYTES
        est = p.est(req.dtype, lay, runtime=runtime)
        rates, basis = _local_rates(dev.backend, dev.name, dev.total, entries)
        sp = None
        if rates is not None and req.mode == "inference":
            sp = speed(p.work.but(runtime_bytes=runtime), lay, rates, p.eff(lay))
        rows.append(LocalFit(dev, est.total, sp, basis))
    return rows


def _local_rates(backend: str, name: str, total: int,
                 entries: Sequence[Accelerator]) -> tuple[Rates | None, str]:
    """Measured rates (hal bench --save) first, then the catalogue card the name matches."""
    from hal import calibration

    card = match_device(name, total, [e for e in entries if e.backend == backend])
    cal = calibration.load(backend, name)
    if cal is not None:
        basis = f"measured by hal bench ({cal.measured_at})"
        return Rates(bandwidth=float(cal.bandwidth) if cal.bandwidth else None,
                     tflops={str(k): float(v) for k, v in cal.tflops.items()},
                     power_w=card.board_power_w if card else None, basis=basis,
                     measured=True), basis
    if card is not None:
        rates = _rates(card)
        return rates, rates.basis
    return None, ""


def _probe() -> list[LocalDevice]:
    """Every available local device, fetched through the plugin boundary.

    Backends come from the one selection probe; a backend whose devices() or memory() raises is
    left out (``hal devices`` and ``hal doctor`` say why), never fatal to the plan.
    """
    from hal.plugins import load_plugins
    from hal.selection import select

    selected = select()
    available = {c.name for c in selected.candidates if c.available}
    from hal.validate import checked_devices, checked_memory

    out: list[LocalDevice] = []
    for backend in load_plugins().backends():
        if backend.name not in available:
            continue
        infos = checked_devices(backend)  # through the plugin boundary: checked, timed out
        for info in infos or ():  # a plugin's failure leaves its devices out
            mem = checked_memory(backend, info.index)
            if mem is None or mem.total <= 0:
                continue
            out.append(LocalDevice(backend.name, info.index, info.name,
                                   backend.name == selected.backend.name, mem.total, mem.free,
                                   backend.device_type == "cpu"))
    return out


def _rank(placements: Sequence[Placement], local: Sequence[LocalFit] | None, dtype: str,
          by: str) -> tuple[RankRow, ...]:
    """The one ranking table of the plan and the command: feasible rows, best first."""
    rows = [RankRow(p.config, "card", p.card.id, p.layout.label, p.layout.count,
                    p.memory_total, p.per_device.total if p.per_device else 0,
                    p.card.memory_bytes, p.speed)
            for p in placements if p.dtype == dtype and p.layout is not None]
    for d in local or ():
        if d.fits_total:
            rows.append(RankRow(f"local {d.backend}:{d.index} ({d.name})", "local",
                                f"{d.backend}:{d.index}", "1 device", 1, d.total, d.needed,
                                d.total, d.speed))

    def key(r: RankRow) -> tuple[float, ...]:
        s = r.speed
        if by == "speed":
            return (-(s.decode_tokens_s or 0) if s else 0.0, r.count, r.memory_total)
        if by == "power":
            return (-(s.tokens_per_joule or 0) if s else 0.0, r.count, r.memory_total)
        return (r.memory_total, r.count, -(s.decode_tokens_s or 0) if s else 0.0)

    return tuple(sorted(rows, key=key))


def _answer(spec: ModelSpec, req: Request, placements: Sequence[Placement],
            ranking: Sequence[RankRow], by: str, p: _Planner) -> str:
    from hal.units import format_bytes

    head = (f"{spec.name} ({req.dtype} weights, context {req.context:,}, batch {req.batch})")
    if ranking:
        top = ranking[0]
        what = {"memory": "least memory", "speed": "fastest", "power": "most tokens a joule"}[by]
        text = (f"{head}: {what}: {top.config}, {format_bytes(top.needed_per_device)} of "
                f"{format_bytes(top.capacity_per_device)} a device")
        s = top.speed
        if s and s.decode_tokens_s:
            text += (f"; decode ~{s.decode_tokens_s:,.1f} tokens/s a sequence (estimate; upper "
                     f"bound {s.decode_tokens_s_bound:,.1f})")
        if s and s.prefill_s is not None:
            text += f", prefill ~{s.prefill_s:,.2f} s (estimate)"
        return text
    if not placements:
        return f"{head}: no cards selected"
    total = p.est(req.dtype, TensorPipeline(1, 1)).total
    widest = TensorPipeline(max(p.degrees), spec.num_layers)
    split = p.est(req.dtype, widest).total
    biggest = max(placements, key=lambda x: x.card.memory_bytes).card
    text = (f"{head}: fits on none of the {len({x.card.id for x in placements})} cards: needs "
            f"{format_bytes(total)} in all, and still {format_bytes(split)} a device at the "
            f"widest split ({widest.label}, {widest.count} devices); the largest card "
            f"({biggest.name}) has {format_bytes(biggest.memory_bytes)}")
    other = [x for x in placements if x.feasible and x.dtype != req.dtype]
    if other:
        best = min(other, key=lambda x: (x.memory_total, x.layout.count if x.layout else 0))
        text += f"; in {best.dtype} it fits on {best.config}"
    return text
