"""How fast a model runs on a card: decode bounded by memory bandwidth, prefill by dense TFLOPS.

Two figures for each: an **upper bound** (the roofline: peak bandwidth and peak TFLOPS, no
latency) and an **estimate** (the bound scaled by the efficiency factors below, plus the
tensor-parallel all-reduces over the card's link).  The factors are explicit, sourced in
docs/planner.md, and overridable (``Efficiency`` fields, ``hal plan`` flags or the
``HAL_PLAN_*`` variables).  Nothing here imports torch.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from hal.parse import parse_float
from hal.planner.estimate import WEIGHT_FORMATS, Workload, kv_cache_bytes
from hal.planner.formats import Format
from hal.planner.layouts import Layout, kv_fraction
from hal.planner.models import ModelSpec


@dataclass(frozen=True)
class Efficiency:
    """The share of a peak an engine reaches and its fixed costs; defaults cited in
    docs/planner.md, an engine class's fitted values in hal/data/engines.json.

    ``bandwidth``: decode's achieved / peak memory bandwidth (MBU); ``compute``: prefill's
    achieved / peak dense TFLOPS (MFU); ``link``: achieved / quoted interconnect bandwidth;
    ``allreduce_latency_s``: fixed cost of one small all-reduce inside a node;
    ``node_latency_s``: the same across nodes; ``layer_overhead_s``: fixed cost of one layer
    in a decode step beyond its memory traffic (kernel launches, norms, sampling share);
    ``moe_layer_s``: what an MoE layer adds to that (routing, top-k, expert dispatch and the
    small grouped GEMMs of a few tokens); ``hop_s``: one pipeline stage handing a token to
    the next; ``host_bandwidth``: achieved / peak host memory bandwidth of experts computed on
    the CPU (offload); ``moe_token_s``: what each sequence a device runs adds to an MoE layer
    (its routing, permutation and grouped-GEMM tiles).  The bare dataclass has no fixed costs:
    the pure roofline share.
    """

    bandwidth: float = 0.6
    compute: float = 0.5
    link: float = 0.7
    allreduce_latency_s: float = 10e-6
    layer_overhead_s: float = 0.0
    moe_layer_s: float = 0.0
    node_latency_s: float = 30e-6
    hop_s: float = 0.0
    host_bandwidth: float = 0.45
    moe_token_s: float = 0.0

    def as_dict(self) -> dict[str, float]:
        """JSON form."""
        return asdict(self)


#: Environment variables that override each factor (``hal plan`` flags override these).
ENV = {"bandwidth": "HAL_PLAN_BW_EFFICIENCY", "compute": "HAL_PLAN_COMPUTE_EFFICIENCY",
       "link": "HAL_PLAN_LINK_EFFICIENCY", "allreduce_latency_s": "HAL_PLAN_ALLREDUCE_LATENCY",
       "layer_overhead_s": "HAL_PLAN_LAYER_OVERHEAD", "moe_layer_s": "HAL_PLAN_MOE_LAYER_OVERHEAD",
       "node_latency_s": "HAL_PLAN_NODE_LATENCY", "hop_s": "HAL_PLAN_HOP_LATENCY",
       "host_bandwidth": "HAL_PLAN_HOST_BW_EFFICIENCY", "moe_token_s": "HAL_PLAN_MOE_TOKEN_OVERHEAD"}


#: The ``hal plan`` flag of each factor, for messages.
FLAGS = {"bandwidth": "--bw-efficiency", "compute": "--compute-efficiency",
         "link": "--link-efficiency", "allreduce_latency_s": "--allreduce-latency",
         "layer_overhead_s": "--layer-overhead", "moe_layer_s": "--moe-layer-overhead",
         "node_latency_s": "--node-latency", "hop_s": "--hop-latency",
         "host_bandwidth": "--host-bw-efficiency", "moe_token_s": "--moe-token-overhead"}
#: Factors that are seconds (0 allowed) rather than shares of a peak.
SECONDS = ("allreduce_latency_s", "layer_overhead_s", "moe_layer_s", "node_latency_s", "hop_s",
           "moe_token_s")


def efficiency(overrides: Mapping[str, float | None] | None = None,
               environ: Mapping[str, str] | None = None,
               base: Efficiency | None = None) -> Efficiency:
    """The factors: ``base`` (an engine class's, else the bare defaults), then ``HAL_PLAN_*``
    variables, then ``overrides`` (flags)."""
    env = os.environ if environ is None else environ
    values: dict[str, float] = asdict(base or Efficiency())
    for key, var in ENV.items():
        if env.get(var, "").strip():
            values[key] = _checked(var, env[var], key)
    for key, value in (overrides or {}).items():
        if value is not None:
            values[key] = _checked(FLAGS.get(key, key), value, key)
    return Efficiency(**values)


def _checked(name: str, value: object, key: str) -> float:
    if key in SECONDS:
        return parse_float(name, value, lo=0.0, hi=1.0)
    return parse_float(name, value, lo=0.0, hi=1.0, lo_inclusive=False)


@dataclass(frozen=True)
class Rates:
    """What a device (or a measured one) can do: bytes/s, dense TFLOP/s per dtype, link, watts."""

    bandwidth: float | None
    tflops: Mapping[str, float] = field(default_factory=dict)
    link_bandwidth: float | None = None  # one direction, bytes/s
    link: str = ""
    power_w: float | None = None
    basis: str = "spec sheet"  # or "measured by hal bench on <date>"
    measured: bool = False  # figures hal bench measured on this device, not a spec sheet
    node_link_bandwidth: float | None = None  # one direction, bytes/s, a device, across nodes
    node_link: str = ""
    devices_per_node: int = 8
    host_bandwidth: float | None = None  # bytes/s of the host memory (offload)
    host: str = ""


#: The compute dtype a weight format runs its matmuls in, best first.  Weight-only formats
#: (int8, int4; fp8 where the card has no fp8 units) dequantize to 16-bit for the matmul.
COMPUTE_DTYPES = {
    "fp32": ("fp32",), "fp16": ("fp16", "bf16"), "bf16": ("bf16", "fp16"),
    "fp8": ("fp8", "bf16", "fp16"), "int8": ("bf16", "fp16"), "int4": ("bf16", "fp16"),
}


def compute_tflops(rates: Rates, dtype: str | Format) -> tuple[str, float] | None:
    """(compute dtype, dense TFLOP/s) a weight format's matmuls run at; None when unknown.

    A format outside the compute table (a GGUF quant) takes the formats table's order.
    """
    from hal.planner.formats import compute_order

    key = dtype if isinstance(dtype, str) else dtype.name
    for name in COMPUTE_DTYPES.get(key) or compute_order(dtype):
        if name in rates.tflops:
            return name, float(rates.tflops[name])
    return None


@dataclass(frozen=True)
class Speed:
    """Decode and prefill figures for one configuration; every figure says what it is."""

    decode_tokens_s: float | None  # estimate, per sequence
    decode_tokens_s_bound: float | None  # upper bound (peak bandwidth / bytes a token)
    aggregate_tokens_s: float | None  # estimate, all sequences of the batch together
    prefill_s: float | None  # estimate, the whole batch of prompts
    prefill_s_bound: float | None  # lower bound on time (peak TFLOPS)
    tokens_per_joule: float | None  # estimate at board power
    bytes_per_step: int  # per device: weights read + KV cache read, one decode step
    comm_s_per_step: float  # tensor-parallel all-reduces of one decode step (estimate)
    compute_dtype: str
    basis: str
    limited_by: str  # "memory bandwidth", "compute" or "interconnect"
    notes: tuple[str, ...] = ()
    terms: StepTerms | None = None  # the decode step's terms before the factors

    def as_dict(self) -> dict[str, Any]:
        """JSON form; labels name which figures are bounds and which estimates."""
        out = asdict(self)
        out.pop("terms", None)
        out["notes"] = list(self.notes)
        out["labels"] = {"decode_tokens_s": "estimate", "decode_tokens_s_bound": "upper bound",
                         "aggregate_tokens_s": "estimate", "prefill_s": "estimate",
                         "prefill_s_bound": "lower bound on time",
                         "tokens_per_joule": "estimate at board power"}
        return out


def _fmt(dtype: str | Format) -> Format:
    return dtype if isinstance(dtype, Format) else WEIGHT_FORMATS[dtype]


def weight_read_bytes(spec: ModelSpec, dtype: str | Format, batch: int) -> float:
    """Weight bytes one decode step reads (all devices together), including scales.

    The input embedding is a lookup of ``batch`` rows (not counted); the lm_head is read in
    full (the embedding matrix when tied).  An MoE step reads the shared part and the experts
    its ``batch`` tokens touch: E x (1 - (1 - k/E)^batch) of E, routing taken as uniform.
    """
    fmt = _fmt(dtype)
    head = spec.lm_head_params or spec.vocab_size * spec.hidden_size
    body: float = spec.quantizable_params
    if spec.routed_experts and spec.routed_params:
        k, e = spec.experts_per_token, spec.routed_experts
        touched = 1 - (1 - k / e) ** batch
        body = body - spec.routed_params + spec.routed_params * touched
    kept_bytes = 2 if fmt.quantized else fmt.bits / 8
    return body * fmt.bits_per_weight / 8 + head * kept_bytes


def routed_read_bytes(spec: ModelSpec, dtype: str | Format, batch: int) -> float:
    """The routed-expert bytes a decode step reads: the experts ``batch`` tokens touch."""
    if not (spec.routed_experts and spec.routed_params):
        return 0.0
    k, e = spec.experts_per_token, spec.routed_experts
    return spec.routed_params * (1 - (1 - k / e) ** batch) * _fmt(dtype).bits_per_weight / 8


def flops_per_token(spec: ModelSpec, context: int) -> float:
    """Matmul FLOPs of one token at ``context`` tokens: 2 x active weights + attention.

    Attention: QK^T and AV, 2 x 2 x layers x context x (heads x head_dim) at the last token.
    """
    weights = spec.params_active - spec.embedding_params
    if spec.lm_head_params == 0:
        weights += spec.vocab_size * spec.hidden_size
    attn = 4 * spec.num_layers * context * spec.num_heads * spec.head_dim
    return 2 * weights + attn


@dataclass(frozen=True)
class StepTerms:
    """The terms of one decode step before the fitted factors apply: what each costs at the
    peak (seconds) and the counts the fixed costs multiply.  :func:`speed` sums them with an
    engine class's factors; scripts/fit_engine_costs.py fits those factors to published runs
    from the same terms, so the fit and the estimate share one model.

    step = max(memory_s / bandwidth, compute_s / compute) + host_s / host_bandwidth + wire_s
    + collectives x (allreduce_latency_s, or node_latency_s across nodes)
    + layers x layer_overhead_s + moe_layers x (moe_layer_s + sequences x moe_token_s)
    + hops x hop_s.
    """

    memory_s: float | None  # a device's bytes a step / peak bandwidth (None: unknown)
    compute_s: float  # a device's FLOPs a step / peak TFLOPS (0: unknown)
    host_s: float  # routed-expert bytes the host reads / peak host bandwidth (offload)
    wire_s: float  # all-reduces' and all-to-alls' bytes over the link (at the link share)
    layers: int
    moe_layers: int
    hops: int  # stage hand-offs a token makes
    overlap: bool = False  # the collectives run under the computation (two micro-batches)
    collectives: int = 0  # small collectives a step, each paying a latency
    across_nodes: bool = False  # they cross the inter-node link (node_latency_s)
    moe_tokens: float = 0.0  # MoE layers x the sequences a device runs

    def comm_s(self, eff: Efficiency) -> float:
        """The collectives' time: their latencies plus their bytes over the link."""
        latency = eff.node_latency_s if self.across_nodes else eff.allreduce_latency_s
        return self.wire_s + self.collectives * latency

    def step_s(self, eff: Efficiency) -> float | None:
        """Seconds a decode step takes under ``eff`` (None without a bandwidth figure)."""
        if self.memory_s is None:
            return None
        work = (max(self.memory_s / eff.bandwidth, self.compute_s / eff.compute)
                + self.host_s / eff.host_bandwidth + self.fixed_s(eff))
        comm = self.comm_s(eff)
        return max(work, comm) if self.overlap else work + comm

    def fixed_s(self, eff: Efficiency) -> float:
        """The fixed per-layer and per-hop costs of a step."""
        return (self.layers * eff.layer_overhead_s + self.moe_layers * eff.moe_layer_s
                + self.moe_tokens * eff.moe_token_s + self.hops * eff.hop_s)


def speed(work: Workload, layout: Layout, rates: Rates, eff: Efficiency | None = None) -> Speed:
    """Decode tokens/s and prefill time of ``work`` (batch x context) spread as ``layout`` says.

    One decode step (one token for each sequence) is the sum of: each device's share of the
    weight and KV-cache reads over its bandwidth (or the step's FLOPs over its compute, the
    larger), the experts a host computes over the host's bandwidth (offload), the fixed cost
    of every layer (and what an MoE layer adds), 2 all-reduces a layer under tensor
    parallelism (latency plus bytes over the link, the inter-node one when the group spans
    nodes), and one hand-off between consecutive stages.  Stages run one after another for a
    token: they add capacity, not speed.  Prefill computes the prompts at dense TFLOPS.
    """
    eff = eff or Efficiency()
    spec, dtype, batch, context = work.spec, work.dtype, work.batch, work.context
    tp, pp = layout.tp, layout.pp
    share = layout.compute_share()  # of the FLOPs, one device
    notes: list[str] = []
    if rates.measured:  # a streaming copy and a big GEMM: decode's GEMVs reach a share of them
        notes.append(f"rates {rates.basis}, scaled by the same efficiency factors (a decode "
                     "step's GEMVs reach a share of a streaming copy's bandwidth)")
    comp = compute_tflops(rates, work.format)
    cdtype, tflops = comp if comp else ("", 0.0)
    read = weight_read_bytes(spec, work.format, batch)
    routed = routed_read_bytes(spec, work.format, batch)
    host_read = routed if layout.host_experts else 0.0
    weights = layout.device_read(read, routed)
    kv = (kv_cache_bytes(spec, batch, context, work.kv_name) * kv_fraction(spec, tp)
          * layout.batch_share(batch))
    step_bytes = weights + kv
    act_bytes = 4 if dtype == "fp32" else 2

    # all-reduces: one after attention and one after the MLP in every layer
    comm = wire_s = 0.0
    collectives = 0
    comm_known = tp == 1
    across = layout.crosses_nodes(rates.devices_per_node)
    link_bw = rates.node_link_bandwidth if across else rates.link_bandwidth
    link_name = rates.node_link if across else rates.link
    latency = eff.node_latency_s if across else eff.allreduce_latency_s
    if tp > 1 and link_bw:
        message = batch * spec.hidden_size * act_bytes
        wire = 2 * (tp - 1) / tp * message / (link_bw * eff.link)
        comm = 2 * spec.num_layers * (latency + wire)
        wire_s, collectives = 2 * spec.num_layers * wire, 2 * spec.num_layers
        comm_known = True
        notes.append(f"TP {tp} over {link_name}: 2 all-reduces a layer of batch x hidden x "
                     f"{act_bytes} bytes, ring 2(n-1)/n over {link_bw / 1e9:.0f} GB/s "
                     f"a direction x {eff.link:g} + {latency * 1e6:g} us each")
    elif tp > 1:
        notes.append(f"TP {tp}: the {'inter-node ' if across else ''}link is not in the "
                     "catalogue; all-reduce time not counted (the estimate is optimistic)")
    # the layers that route (DeepSeek-V3/R1: the first 3 of 61 are dense)
    moe_layers = (spec.moe_layers or spec.num_layers) if spec.routed_experts else 0
    if layout.all_to_all and spec.routed_experts and layout.count > 1:
        bw = rates.node_link_bandwidth if across else rates.link_bandwidth
        # a device sends its own sequences' tokens, k copies each (data-parallel attention)
        sent: float = batch * layout.batch_share(batch)
        a2a = sent * spec.hidden_size * act_bytes * spec.experts_per_token
        wire = a2a / (bw * eff.link) if bw else 0.0
        comm += 2 * moe_layers * (latency + wire)
        wire_s += 2 * moe_layers * wire
        collectives += 2 * moe_layers
        comm_known = comm_known or bool(bw)
        notes.append(f"{layout.label}: 2 all-to-alls an MoE layer (dispatch and combine) of "
                     f"a device's sequences x hidden x {spec.experts_per_token} experts x "
                     f"{act_bytes} bytes, + {latency * 1e6:g} us each")

    decode = decode_bound = aggregate = None
    limited = "memory bandwidth"
    host_t = 0.0
    if host_read:
        if rates.host_bandwidth:
            host_t = host_read / (rates.host_bandwidth * eff.host_bandwidth)
            notes.append(f"host ({rates.host}) computes {host_read / 2**30:.2f} GiB of routed "
                         f"experts a step at {rates.host_bandwidth / 1e9:.0f} GB/s x "
                         f"{eff.host_bandwidth:g}")
        else:
            notes.append("host memory bandwidth unknown: the offloaded experts' time is not "
                         "counted")
    terms = StepTerms(
        memory_s=step_bytes / rates.bandwidth if rates.bandwidth else None,
        compute_s=batch * flops_per_token(spec, context) * share / (tflops * 1e12) if tflops else 0.0,
        host_s=host_read / rates.host_bandwidth if host_read and rates.host_bandwidth else 0.0,
        wire_s=wire_s, layers=spec.num_layers, moe_layers=moe_layers, hops=pp - 1,
        overlap=layout.overlaps(batch), collectives=collectives, across_nodes=across,
        moe_tokens=moe_layers * batch * layout.batch_share(batch))
    if terms.overlap:
        notes.append(f"{layout.label}: two micro-batches a step, the all-to-alls run under "
                     "the other's computation (the step is the longer of the two)")
    if terms.memory_s is not None and rates.bandwidth:
        mem_t = terms.memory_s / eff.bandwidth
        bound_t = max(terms.memory_s + terms.host_s, terms.compute_s)
        flops_t = terms.compute_s / eff.compute
        fixed = terms.fixed_s(eff)
        step = terms.step_s(eff) or 0.0
        parts = {"memory bandwidth": mem_t, "compute": flops_t, "interconnect": comm,
                 "per-layer overhead": fixed, "host memory": host_t}
        limited = max(parts, key=lambda k: parts[k])
        if fixed:
            notes.append(f"+ {spec.num_layers} layers x {eff.layer_overhead_s * 1e6:g} us"
                         + (f" + {moe_layers} MoE layers x ({eff.moe_layer_s * 1e6:g} us + "
                            f"{terms.moe_tokens / moe_layers:g} sequences x "
                            f"{eff.moe_token_s * 1e6:g} us)" if moe_layers else "")
                         + (f" + {pp - 1} stage hand-offs x {eff.hop_s * 1e6:g} us"
                            if pp > 1 else "")
                         + f" fixed a decode step ({layout.engine} engine class)")
        per_step = 1.0
        if work.mtp:
            # one draft layer (the MTP module) a step, and 1 + acceptance tokens out of it
            step += step / spec.num_layers
            bound_t += bound_t / spec.num_layers
            per_step = 1 + work.mtp
            notes.append(f"speculative decoding (MTP): 1 + {work.mtp:g} tokens a step for one "
                         "extra layer's cost (DeepSeek-V3 report: 85-90 % acceptance)")
        decode = per_step / step
        decode_bound = per_step / bound_t
        aggregate = batch * per_step / step
        notes.append(f"decode step reads {step_bytes / 2**30:.2f} GiB a device (weights "
                     f"{weights / 2**30:.2f} + KV cache {kv / 2**30:.2f}) at "
                     f"{rates.bandwidth / 1e9:.0f} GB/s x {eff.bandwidth:g}; {limited}-bound")
    else:
        notes.append("memory bandwidth unknown: no decode figure")

    prefill = prefill_bound = None
    if tflops:
        # sum over prompt positions of flops_per_token: attention grows with position
        prompt_flops = batch * (flops_per_token(spec, 0) * context
                                + 2 * spec.num_layers * context * context
                                * spec.num_heads * spec.head_dim)
        prefill_bound = prompt_flops * share / (tflops * 1e12)
        prefill = prompt_flops * share / (tflops * 1e12 * eff.compute)
        if tp > 1 and link_bw:
            message = batch * context * spec.hidden_size * act_bytes
            prefill += 2 * spec.num_layers * (latency + 2 * (tp - 1) / tp
                                              * message / (link_bw * eff.link))
        notes.append(f"prefill of {batch} x {context:,} tokens: {prompt_flops / 1e12:,.1f} TFLOP "
                     f"at {tflops:g} TFLOPS {cdtype} x {eff.compute:g}"
                     + (f" on each of {tp} devices" if tp > 1 else ""))
    else:
        notes.append(f"no dense TFLOPS for {dtype} on this device: no prefill figure")

    per_joule = None
    if aggregate and rates.power_w:
        per_joule = aggregate / (rates.power_w * layout.count)
    if not comm_known:
        limited += " (link time not counted)"
    return Speed(
        decode_tokens_s=decode, decode_tokens_s_bound=decode_bound, aggregate_tokens_s=aggregate,
        prefill_s=prefill, prefill_s_bound=prefill_bound, tokens_per_joule=per_joule,
        bytes_per_step=int(step_bytes), comm_s_per_step=comm, compute_dtype=cdtype,
        basis=rates.basis, limited_by=limited, notes=tuple(notes), terms=terms,
    )


@dataclass(frozen=True)
class Engine:
    """An engine class: its fitted factors and where they come from (hal/data/engines.json)."""

    id: str
    name: str
    factors: Efficiency
    source: str
    fitted: str

    def as_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {"id": self.id, "name": self.name, "factors": self.factors.as_dict(),
                "source": self.source, "fitted": self.fitted}


def engines() -> dict[str, Engine]:
    """The engine classes shipped in hal/data/engines.json, by id."""
    return dict(_engines())


@functools.lru_cache(maxsize=1)
def _engines() -> tuple[tuple[str, Engine], ...]:
    import json
    from importlib import resources

    data = json.loads(resources.files("hal").joinpath("data/engines.json")
                      .read_text(encoding="utf-8"))
    keys = {f.name for f in fields(Efficiency)}
    out = []
    for ident, entry in data["engines"].items():
        factors = Efficiency(**{k: float(v) for k, v in entry.items() if k in keys})
        out.append((ident, Engine(ident, entry["name"], factors, entry["source"],
                                  entry["fitted"])))
    return tuple(out)
