"""Layouts: how a model is spread over devices, one class each, ranked by the planner.

A :class:`Layout` says how many devices it takes, the share of each memory term one device
holds (:class:`Shares`), and the terms of a decode step it adds (which link its collectives
cross, how many stages a token passes in turn, what a host holds).  The memory estimate, the
speed model, the planner's search and ``hal plan``'s table ask a layout these questions and
nothing else, so a new way to deploy (offload, expert parallel, a toy in a test) is one new
class passed to :func:`register`.  Nothing here imports torch.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from hal.errors import ConfigError

if TYPE_CHECKING:
    from hal.planner.catalogue import Accelerator
    from hal.planner.models import ModelSpec


@dataclass(frozen=True)
class Shares:
    """The part of each memory term one device holds, as fractions of the one-device figure.

    ``body``: of the quantizable weights (and their scales and training states);
    ``routed``: of the routed experts inside ``body`` (an offload keeps them on the host);
    ``kept``: embedding / lm_head parameters a device holds, before ``kept_split``;
    ``kv``: of the KV cache; ``transient``: of one layer's inference transients and the
    logits; ``stored``: of training's stored activations.
    """

    body: float
    kept_params: int
    kept_split: float
    kv: float
    transient: float
    stored: float
    routed: float | None = None  # None: as ``body``


@dataclass(frozen=True)
class Search:
    """What bounds the layouts tried for one card: TP degrees, devices a node, the card."""

    degrees: tuple[int, ...]  # tensor-parallel degrees the model's heads allow, ascending
    max_tp: int
    card: Accelerator | None = None
    host: bool = False  # a host platform was named (--host): offload layouts may be tried


class Layout:
    """A way to spread a model over devices: its device count, memory shares and speed terms.

    Subclasses are frozen dataclasses; ``kind`` names them on the command line (``--layout``)
    and in the table; ``engine`` names the engine class whose fitted per-layer costs apply
    (hal/data/engines.json).
    """

    kind: ClassVar[str] = ""
    engine: ClassVar[str] = "serving"
    #: The routed experts live in host memory and run on the host's CPU (offload layouts).
    host_experts: ClassVar[bool] = False
    #: Tokens go to the devices holding their experts and back: 2 all-to-alls an MoE layer.
    all_to_all: ClassVar[bool] = False
    #: Order among layouts of the same device count (lower first: the usual deployment).
    preference: ClassVar[int] = 50

    @property
    def count(self) -> int:
        """Devices in all."""
        raise NotImplementedError

    @property
    def label(self) -> str:
        """How the table names it (``TP 8 x PP 2``)."""
        raise NotImplementedError

    @property
    def tp(self) -> int:
        """Devices one layer's weights are split over (the collective group)."""
        return 1

    @property
    def pp(self) -> int:
        """Groups a token passes through one after another."""
        return 1

    def shares(self, spec: ModelSpec) -> Shares:
        """The per-device share of each memory term."""
        raise NotImplementedError

    def check(self, spec: ModelSpec) -> None:
        """Raise ConfigError (one line, saying what would work) when ``spec`` cannot use it."""

    def rank_on(self, card: Accelerator | None) -> int:
        """Order among layouts of the same device count on ``card`` (lower: tried first)."""
        return self.preference

    def crosses_nodes(self, devices_per_node: int) -> bool:
        """Whether the tensor-parallel collectives cross the inter-node link."""
        return self.tp > devices_per_node

    def batch_share(self, batch: int) -> float:
        """The share of the batch's sequences one device runs attention for (1: all of them)."""
        return 1.0

    def compute_share(self) -> float:
        """The share of a step's matmul FLOPs one device computes (its tensor-parallel slice)."""
        return 1 / self.tp

    def overlaps(self, batch: int) -> bool:
        """Whether a step's collectives run under its computation (False: they add)."""
        return False

    def device_read(self, read: float, routed: float) -> float:
        """Bytes one device reads a decode step, of ``read`` in all (``routed`` of them the
        routed experts the step touches): its tensor-parallel share of what is on devices."""
        return (read - (routed if self.host_experts else 0.0)) / self.tp

    @classmethod
    def candidates(cls, spec: ModelSpec, search: Search) -> Iterator[Layout]:
        """Layouts of this kind the planner tries for a card, fewest devices first."""
        return iter(())

    def as_dict(self) -> dict[str, Any]:
        """JSON form: the kind, the counts and the label."""
        return {"kind": self.kind, "count": self.count, "tp": self.tp, "pp": self.pp,
                "label": self.label}


def fast_link(card: Accelerator) -> bool:
    """Whether a card has a device-to-device fabric beyond PCIe (what TP servers use)."""
    link = card.interconnect.link.lower() if card.interconnect else ""
    return bool(link) and "pcie" not in link


def _layer_share(spec: ModelSpec, stages: int) -> float:
    """The largest stage's share of the layers: ceil(layers / stages) / layers."""
    return -(-spec.num_layers // stages) / spec.num_layers


def kv_fraction(spec: ModelSpec, tp: int) -> float:
    """The share of the KV cache one tensor-parallel rank holds.

    Heads are split over ranks; with more ranks than KV heads each rank keeps one KV head
    (replicated, as vLLM does), so the share is ceil(kv_heads / tp) / kv_heads.  An MLA latent
    cache has no heads to split: every rank holds all of it.
    """
    if spec.attention == "mla" or tp <= 1:
        return 1.0
    heads = max(1, spec.num_kv_heads)
    return -(-heads // tp) / heads


def tp_degrees(spec: ModelSpec, max_tp: int = 8) -> tuple[int, ...]:
    """Tensor-parallel degrees a serving engine accepts for this model, up to ``max_tp``.

    The degree divides the attention heads; with grouped KV heads it also divides them, or is a
    multiple of them (each rank then keeps one KV head, replicated), as vLLM requires.
    """
    return tuple(t for t in range(1, max_tp + 1) if _tp_ok(spec, t))


def _tp_ok(spec: ModelSpec, t: int) -> bool:
    if spec.num_heads % t:
        return False
    kv = spec.num_kv_heads
    return spec.attention == "mla" or not (kv % t and t % kv)


@dataclass(frozen=True)
class TensorPipeline(Layout):
    """Tensor parallel ``tp`` inside a node, ``pp`` pipeline stages (nodes) in turn.

    What vLLM, SGLang and TensorRT-LLM run: each stage holds ceil(layers / pp) layers and the
    embedding or the lm_head; inside a stage every weight matrix is split ``tp`` ways.
    """

    tp_degree: int = 1
    stages: int = 1
    kind: ClassVar[str] = "tp"
    preference: ClassVar[int] = 10

    def __post_init__(self) -> None:
        for name, value in (("tensor parallel", self.tp_degree), ("pipeline", self.stages)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} degree {value!r} is invalid; expected an integer >= 1")

    @property
    def tp(self) -> int:
        """The tensor-parallel degree."""
        return self.tp_degree

    @property
    def pp(self) -> int:
        """Pipeline stages."""
        return self.stages

    @property
    def count(self) -> int:
        """tp x pp devices."""
        return self.tp_degree * self.stages

    def check(self, spec: ModelSpec) -> None:
        """TP must divide the heads (and the KV heads, or be a multiple); PP at most the layers."""
        if not _tp_ok(spec, self.tp):
            ok = ", ".join(str(t) for t in tp_degrees(spec, 64))
            raise ConfigError(f"tensor parallel {self.tp} does not divide {spec.name}'s "
                              f"{spec.num_heads} heads / {spec.num_kv_heads} KV heads; "
                              f"expected one of: {ok}")
        if self.pp > spec.num_layers:
            raise ConfigError(f"pipeline_parallel {self.pp} is invalid; expected at most the "
                              f"model's {spec.num_layers} layers")

    def shares(self, spec: ModelSpec) -> Shares:
        """Body / (tp), the largest stage's layers / pp; KV heads split or replicated."""
        layer = _layer_share(spec, self.pp) if self.pp > 1 else 1.0
        kept = (spec.embedding_params + spec.lm_head_params if self.pp == 1 else
                max(spec.embedding_params, spec.lm_head_params or spec.embedding_params))
        return Shares(body=layer / self.tp, kept_params=kept, kept_split=1 / self.tp,
                      kv=layer * kv_fraction(spec, self.tp), transient=1 / self.tp,
                      stored=layer / self.tp)

    @property
    def label(self) -> str:
        """``TP 8 x PP 2``, ``TP 16 (2 nodes)``, ``TP 8`` or ``1 device``."""
        if self.count == 1:
            return "1 device"
        nodes = -(-self.tp // 8)
        return (f"TP {self.tp}" + (f" ({nodes} nodes)" if self.tp > 8 else "")
                + (f" x PP {self.pp}" if self.pp > 1 else ""))

    def rank_on(self, card: Accelerator | None) -> int:
        """Pipeline stages across nodes come after a layer split on cards with no fast link
        (a box of PCIe consumer cards is not a cluster); TP across nodes after PP over them."""
        if self.pp > 1 and card is not None and not fast_link(card):
            return 30
        return 12 if self.tp > (card.devices_per_node if card else 8) else 10

    @classmethod
    def candidates(cls, spec: ModelSpec, search: Search) -> Iterator[Layout]:
        """TP-only layouts inside a node; then whole nodes of the largest TP degree as 2, 3, ...
        pipeline stages (where the card's engines pipeline across nodes) and TP across whole
        nodes (16, 32, 64 devices) where that divides the heads."""
        for t in search.degrees:
            yield cls(t, 1)
        top = search.degrees[-1]
        per_node = search.card.devices_per_node if search.card else 8
        if top == search.max_tp and top >= per_node and (
                search.card is None or fast_link(search.card)
                or not search.card.pipeline_stages):
            for t in (2 * top, 4 * top, 8 * top):
                if _tp_ok(spec, t):
                    yield cls(t, 1)
        if search.card is None or search.card.pipeline_stages:
            for p in range(2, spec.num_layers + 1):
                yield cls(top, p)


@dataclass(frozen=True)
class LayerSplit(Layout):
    """Consecutive layers on each of ``devices`` cards, run one after another (llama.cpp
    ``--split-mode layer``): memory divides, a token's time does not."""

    devices: int = 2
    kind: ClassVar[str] = "layer-split"
    engine: ClassVar[str] = "layer-split"
    preference: ClassVar[int] = 20

    @property
    def count(self) -> int:
        """The cards."""
        return self.devices

    @property
    def pp(self) -> int:
        """Every card is a stage."""
        return self.devices

    @property
    def label(self) -> str:
        """``layer split 16``."""
        return f"layer split {self.devices}"

    def check(self, spec: ModelSpec) -> None:
        """At most one card a layer."""
        if not 1 <= self.devices <= spec.num_layers:
            raise ConfigError(f"layer split over {self.devices} cards is invalid; expected 1 to "
                              f"the model's {spec.num_layers} layers")

    def shares(self, spec: ModelSpec) -> Shares:
        """The largest card's layers, with the embedding or the output head."""
        layer = _layer_share(spec, self.devices)
        kept = max(spec.embedding_params, spec.lm_head_params or spec.embedding_params)
        return Shares(body=layer, kept_params=kept, kept_split=1.0, kv=layer, transient=1.0,
                      stored=layer)

    @classmethod
    def candidates(cls, spec: ModelSpec, search: Search) -> Iterator[Layout]:
        """2 up to 64 cards (one box of risers at most), on cards with no fast link."""
        card = search.card
        if card is not None and (card.interconnect is None
                                 or "pcie" not in card.interconnect.link.lower()):
            return  # servers with a device-to-device fabric run tensor parallel
        for n in range(2, min(64, spec.num_layers) + 1):
            yield cls(n)


@dataclass(frozen=True)
class ExpertOffload(Layout):
    """An MoE's routed experts in host memory, computed by the CPU; attention, the shared
    experts, dense layers and the KV cache on ``gpus`` devices at tensor parallel (KTransformers,
    llama.cpp ``--override-tensor exps=CPU``)."""

    gpus: int = 1
    kind: ClassVar[str] = "offload"
    engine: ClassVar[str] = "offload"
    host_experts: ClassVar[bool] = True
    preference: ClassVar[int] = 40

    @property
    def count(self) -> int:
        """The GPUs (the host is not counted)."""
        return self.gpus

    @property
    def tp(self) -> int:
        """The GPUs split the on-device part tensor-parallel."""
        return self.gpus

    @property
    def label(self) -> str:
        """``experts on host`` or ``TP 2, experts on host``."""
        return (f"TP {self.gpus}, " if self.gpus > 1 else "") + "experts on host"

    def check(self, spec: ModelSpec) -> None:
        """Only an MoE has routed experts to offload; TP must divide the heads."""
        if not spec.routed_experts:
            raise ConfigError(f"layout offload needs a mixture-of-experts model; {spec.name} is "
                              "dense: use --layout tp or layer-split")
        TensorPipeline(self.gpus).check(spec)

    def shares(self, spec: ModelSpec) -> Shares:
        """The non-routed body and the KV cache / gpus; the routed experts: none."""
        return Shares(body=1 / self.gpus, kept_params=spec.embedding_params
                      + spec.lm_head_params, kept_split=1 / self.gpus,
                      kv=kv_fraction(spec, self.gpus), transient=1 / self.gpus,
                      stored=1 / self.gpus, routed=0.0)

    @classmethod
    def candidates(cls, spec: ModelSpec, search: Search) -> Iterator[Layout]:
        """1, 2, 4, 8 GPUs, for an MoE when a host platform was named."""
        if not search.host or not spec.routed_experts:
            return
        for g in search.degrees:
            if g & (g - 1) == 0:
                yield cls(g)


@dataclass(frozen=True)
class ExpertParallel(Layout):
    """An MoE's routed experts split over ``devices`` (expert parallel), attention and the
    shared part replicated with data-parallel attention (SGLang ``--enable-dp-attention
    --ep-size``, vLLM ``--enable-expert-parallel`` with data parallel): each sequence runs its
    attention on one device; its tokens visit the devices holding their experts."""

    devices: int = 8
    kind: ClassVar[str] = "ep"
    all_to_all: ClassVar[bool] = True
    preference: ClassVar[int] = 15

    @property
    def count(self) -> int:
        """The devices."""
        return self.devices

    @property
    def label(self) -> str:
        """``EP 16, DP attention``."""
        return f"EP {self.devices}, DP attention"

    def check(self, spec: ModelSpec) -> None:
        """Only an MoE has experts to split; at most one device an expert."""
        if not spec.routed_experts:
            raise ConfigError(f"layout ep needs a mixture-of-experts model; {spec.name} is "
                              "dense: use --layout tp or layer-split")
        if not 1 <= self.devices <= spec.routed_experts:
            raise ConfigError(f"expert parallel over {self.devices} devices is invalid; "
                              f"expected 1 to the model's {spec.routed_experts} experts")

    def crosses_nodes(self, devices_per_node: int) -> bool:
        """The all-to-alls cross nodes when the experts span them."""
        return self.devices > devices_per_node

    def shares(self, spec: ModelSpec) -> Shares:
        """The shared part and embeddings whole on each device, the routed experts / devices;
        the KV cache of the sequences its attention runs (batch / devices, at least one)."""
        return Shares(body=1.0, kept_params=spec.embedding_params + spec.lm_head_params,
                      kept_split=1.0, kv=1.0, transient=1.0, stored=1.0,
                      routed=1 / self.devices)

    def batch_share(self, batch: int) -> float:
        """Data-parallel attention: each device runs ceil(batch / devices) of the sequences."""
        return -(-batch // self.devices) / batch

    def overlaps(self, batch: int) -> bool:
        """With two or more sequences a device, the batch splits in two micro-batches and one's
        dispatch and combine run under the other's computation (DeepSeek's inference system,
        SGLang's two-batch overlap, DeepEP); one sequence has nothing to overlap with."""
        return -(-batch // self.devices) >= 2

    def compute_share(self) -> float:
        """Each device computes its own sequences' attention and its experts' tokens: 1 / devices
        of the step's FLOPs (routing taken as balanced)."""
        return 1 / self.devices

    def device_read(self, read: float, routed: float) -> float:
        """The attention device reads the shared part whole; the touched experts are read on
        their own devices at once, a 1/devices share each (at least one expert's worth)."""
        return read - routed + routed / self.devices

    @classmethod
    def candidates(cls, spec: ModelSpec, search: Search) -> Iterator[Layout]:
        """Whole nodes (8, 16, 32, 64 devices) for an MoE, on cards with a fast link."""
        if not spec.routed_experts or (search.card is not None and not fast_link(search.card)):
            return
        for n in (8, 16, 32, 64):
            if n <= spec.routed_experts:
                yield cls(n)


#: Every layout kind the planner tries, by ``kind``; :func:`register` adds one.
LAYOUTS: dict[str, type[Layout]] = {}


def register(cls: type[Layout]) -> type[Layout]:
    """Add a layout class to the planner's search (usable as a decorator)."""
    if not cls.kind:
        raise ConfigError(f"layout class {cls.__name__} has no kind")
    LAYOUTS[cls.kind] = cls
    return cls


def unregister(kind: str) -> None:
    """Remove a layout kind (tests that added one)."""
    LAYOUTS.pop(kind, None)


for _cls in (TensorPipeline, LayerSplit, ExpertOffload, ExpertParallel):
    register(_cls)


def kinds(forced: str | None = None) -> tuple[type[Layout], ...]:
    """The layout classes to try: all registered, or the one ``--layout`` names."""
    if forced is None:
        return tuple(LAYOUTS.values())
    if forced not in LAYOUTS:
        raise ConfigError(f"layout {forced!r} is unknown; expected one of: {', '.join(LAYOUTS)}")
    return (LAYOUTS[forced],)
