"""The memory estimate: weights, KV cache, activations and runtime overhead, with formulas.

All sizes are bytes.  Each term's formula is written into the breakdown's ``notes`` so the
CLI and docs/planner.md show how a figure was reached.  Nothing here imports torch.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

import hal.planner.formats as formats
from hal import dtypes
from hal.errors import ConfigError
from hal.planner.layouts import Layout, TensorPipeline, kv_fraction
from hal.planner.models import ModelSpec, resolve

__all__ = ["Breakdown", "Workload", "estimate", "kv_fraction", "memory"]

Mode = Literal["inference", "train"]
#: How attention is computed: a fused (flash / memory-efficient) kernel that never holds the
#: score matrix, or eager matmul + softmax that materialises batch x heads x query x key.
Attention = Literal["fused", "materialized"]


#: Weight formats, by name: the table in :mod:`hal.planner.formats` (16-bit floats, block-
#: scaled fp8 as DeepSeek-V3 ships it, int8 W8A16 and W8A8, int4/AWQ/GPTQ with their scales,
#: NVFP4/MXFP4, GGUF k- and i-quants, Unsloth's dynamic R1 quants), each with its source.
WEIGHT_FORMATS = formats.FORMATS
#: KV-cache element sizes in bytes, by format (fp32 fp16 bf16 fp8 int8 int4): the registry's.
KV_BYTES: dict[str, float] = {d.short: d.bytes for d in dtypes.REGISTRY if d.has(dtypes.KV) and not d.family}
#: Runtime context (driver context, kernels, library workspaces) on an accelerator.
DEFAULT_RUNTIME_BYTES = 512 * 2**20
#: Allocator fragmentation and caching slack, as a fraction of KV cache plus activations.
FRAGMENTATION = 0.10
#: Tokens a prefill pass processes at once (serving engines chunk long prompts).
PREFILL_CHUNK = 2048
#: Bytes of Adam state a parameter: fp32 master copy (mixed precision), m and v.
ADAM_MASTER, ADAM_MOMENTS = 4, 8


@functools.lru_cache(maxsize=256)
def dtype_name(value: str, *, kv: bool = False) -> str:
    """The planner format of a dtype name in any spelling :mod:`hal.dtypes` accepts.

    ``bfloat16`` -> ``bf16``; every 8-bit float (``float8_e4m3fnuz``, ``e5m2``) -> ``fp8``; a
    ConfigError names the accepted names.
    """
    what = "KV-cache dtype" if kv else "dtype"
    table = formats.lookup(value) if not kv else None
    if table is not None:
        return table.name
    entry = dtypes.lookup(value)
    accepted = KV_BYTES if kv else WEIGHT_FORMATS
    if entry is None and not kv:
        formats.get(value)  # raises, naming the weight formats
    if entry is None or entry.kind not in accepted:
        role = dtypes.KV if kv else dtypes.WEIGHTS
        dtypes.parse(value, role=role, what=what)  # raises, naming what is accepted
        raise ConfigError(f"{what} {value!r} is not a format the planner sizes; expected one of: "
                          f"{', '.join(accepted)}")
    return entry.kind


@dataclass(frozen=True)
class Breakdown:
    """A memory budget in bytes, per device; ``notes`` hold the formula of every term."""

    model: str
    mode: str
    dtype: str
    kv_dtype: str
    batch: int
    context: int
    tensor_parallel: int
    pipeline_parallel: int
    layout: str
    devices: int
    params_total: int
    params_active: int
    weights: int
    weight_scales: int
    gradients: int
    optimizer: int
    kv_cache: int
    activations: int
    overhead: int
    notes: tuple[str, ...] = field(default=())
    host: int = 0  # bytes the host's memory holds (offloaded experts), not in ``total``

    @property
    def total(self) -> int:
        """Everything summed: the bytes one device must hold."""
        return (self.weights + self.weight_scales + self.gradients + self.optimizer
                + self.kv_cache + self.activations + self.overhead)

    @property
    def terms(self) -> dict[str, int]:
        """The non-total terms by name, in display order."""
        return {"weights": self.weights, "weight_scales": self.weight_scales,
                "gradients": self.gradients, "optimizer": self.optimizer,
                "kv_cache": self.kv_cache, "activations": self.activations,
                "overhead": self.overhead}

    def as_dict(self) -> dict[str, Any]:
        """JSON form (``hal plan --json``)."""
        out = asdict(self)
        out["notes"] = list(self.notes)
        out["total"] = self.total
        return out


def _positive(name: str, value: int, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name} {value!r} is invalid; expected an integer >= {minimum}")
    return value


def kv_cache_bytes(spec: ModelSpec, batch: int, context: int, kv_dtype: str = "fp16") -> int:
    """KV cache of ``batch`` sequences of ``context`` tokens: elements x element size."""
    return int(batch * spec.kv_elements_per_token(context) * KV_BYTES[dtype_name(kv_dtype, kv=True)])


def kv_split_note(spec: ModelSpec, tp: int) -> str:
    """How the KV cache is divided at tensor parallel ``tp``, in words."""
    if spec.attention == "mla":
        return "KV cache replicated (an MLA latent cache is shared by all heads)"
    if tp > spec.num_kv_heads:
        return (f"KV cache / {spec.num_kv_heads} ({spec.num_kv_heads} KV heads, each rank "
                f"keeps one, replicated {tp // spec.num_kv_heads}x)")
    return f"KV cache / {tp}"


@dataclass(frozen=True)
class Workload:
    """What one estimate is of: the model, its formats, batch, context, mode, runtime terms.

    :param kv_dtype: KV-cache dtype; None: the weight dtype for fp32/fp16/bf16, else fp16.
    :param runtime_bytes: fixed runtime context; 0 on a CPU, where there is none to pay.
    :param attention: ``"fused"`` (flash/SDPA kernels: no score matrix) or ``"materialized"``
        (eager attention: two score tensors live at once, counted in inference activations).
    :param fragmentation: allocator slack as a fraction of (KV cache + activations).  The
        estimate is of live tensors; a CPU process under glibc's default malloc keeps freed
        multi-MiB blocks resident and measured up to about 26 % above it (docs/planner.md).
    """

    spec: ModelSpec
    dtype: str = "fp16"
    kv_dtype: str | None = None
    batch: int = 1
    context: int = 4096
    mode: Mode = "inference"
    checkpointing: bool = False
    attention: Attention = "fused"
    runtime_bytes: int = DEFAULT_RUNTIME_BYTES
    fragmentation: float = FRAGMENTATION
    prefill_chunk: int = PREFILL_CHUNK
    weight_format: formats.Format | None = None  # a format outside the table (its name: dtype)
    mtp: float = 0.0  # speculative decoding: acceptance of one drafted token a step (0: off)

    def __post_init__(self) -> None:
        if self.weight_format is not None:
            object.__setattr__(self, "dtype", self.weight_format.name)
        else:
            object.__setattr__(self, "dtype", dtype_name(self.dtype))
        if self.kv_dtype is not None:
            object.__setattr__(self, "kv_dtype", dtype_name(self.kv_dtype, kv=True))
        _positive("batch", self.batch)
        _positive("context", self.context)
        if self.mode not in ("inference", "train"):
            raise ConfigError(f"mode {self.mode!r} is invalid; expected 'inference' or 'train'")
        if self.attention not in ("fused", "materialized"):
            raise ConfigError(f"attention {self.attention!r} is invalid; expected 'fused' or "
                              "'materialized'")
        if not 0 <= self.mtp <= 1:
            raise ConfigError(f"--mtp {self.mtp!r} is invalid; expected an acceptance rate in "
                              "[0, 1] (DeepSeek-V3 reports 0.85-0.9)")
        if self.runtime_bytes < 0 or not 0 <= self.fragmentation < 1:
            raise ConfigError("runtime_bytes must be >= 0 and fragmentation in [0, 1)")

    @property
    def format(self) -> formats.Format:
        """The weight format."""
        return self.weight_format or WEIGHT_FORMATS[self.dtype]

    @property
    def compute_dtype(self) -> str:
        """The 16/32-bit format activations are held in."""
        return self.dtype if not self.format.quantized else "fp16"

    @property
    def kv_name(self) -> str:
        """The KV-cache format actually used."""
        return self.kv_dtype if self.kv_dtype is not None else self.compute_dtype

    def but(self, **changes: Any) -> Workload:
        """A copy with some fields changed (another context, batch or format)."""
        return replace(self, **changes)


def estimate(
    model: str | int | ModelSpec | Mapping[str, Any],
    dtype: str = "fp16",
    kv_dtype: str | None = None,
    batch: int = 1,
    context: int = 4096,
    mode: Mode = "inference",
    *,
    checkpointing: bool = False,
    tensor_parallel: int = 1,
    pipeline_parallel: int = 1,
    runtime_bytes: int = DEFAULT_RUNTIME_BYTES,
    fragmentation: float = FRAGMENTATION,
    prefill_chunk: int = PREFILL_CHUNK,
    attention: Attention = "fused",
) -> Breakdown:
    """Estimate the memory one device needs to run (or train) ``model``: the keyword form of
    :func:`memory` at a :class:`TensorPipeline` layout (see :class:`Workload` for the terms).

    :param model: a parameter count (``"13B"``), a config.json path, a preset name, a config
        mapping or a :class:`ModelSpec`.
    :param tensor_parallel: the degree N; figures are per device.
    :param pipeline_parallel: pipeline stages P; figures are for the largest stage.
    """
    spec = resolve(model)
    work = Workload(spec, dtype, kv_dtype, batch, context, mode, checkpointing, attention,
                    runtime_bytes, fragmentation, prefill_chunk)
    layout = TensorPipeline(_positive("tensor_parallel", tensor_parallel),
                            _positive("pipeline_parallel", pipeline_parallel))
    return memory(work, layout)


def memory(work: Workload, layout: Layout) -> Breakdown:
    """The bytes one device holds to run ``work`` spread as ``layout`` says, term by term.

    Every term is computed for one device holding everything, then scaled by the layout's
    :class:`~hal.planner.layouts.Shares`; the notes give each formula.
    """
    spec = work.spec
    layout.check(spec)
    fmt = work.format
    batch, context, mode = work.batch, work.context, work.mode
    checkpointing, attention = work.checkpointing, work.attention
    runtime_bytes, fragmentation, prefill_chunk = (work.runtime_bytes, work.fragmentation,
                                                   work.prefill_chunk)
    compute = work.compute_dtype
    kv_name = work.kv_name
    act_bytes = int(WEIGHT_FORMATS[compute].bits) // 8 if compute in WEIGHT_FORMATS else 2
    notes: list[str] = list(spec.notes)
    mib = 2**20

    # -- weights
    kept = spec.embedding_params + spec.lm_head_params
    if fmt.quantized:
        sized = formats.model_bytes(fmt, spec)
        weights, scales = sized.weights, sized.scales
        notes.append(f"weights = {sized.note}")
    else:
        weights = spec.params_total * fmt.bits / 8
        scales = 0
        notes.append(f"weights = {spec.params_total:,} params x {fmt.bits // 8} bytes ({fmt.name})")

    # -- training states
    gradients = optimizer = 0
    if mode == "train":
        if fmt.quantized:
            raise ConfigError(f"dtype {fmt.name!r} cannot be trained; expected fp32, fp16 or bf16")
        gradients = int(spec.params_total * fmt.bits // 8)
        master = ADAM_MASTER if fmt.bits < 32 else 0
        optimizer = spec.params_total * (master + ADAM_MOMENTS)
        notes.append(f"gradients = params x {fmt.bits // 8} bytes; optimizer = params x "
                     f"{master + ADAM_MOMENTS} bytes (Adam m, v in fp32"
                     + (", fp32 master weights" if master else "") + "): "
                     f"{fmt.bits // 8 * 2 + master + ADAM_MOMENTS} bytes a parameter in all")

    # -- KV cache (inference only: training does not keep one)
    kv = 0
    if mode == "inference":
        kv = kv_cache_bytes(spec, batch, context, kv_name)
        notes.append(f"kv_cache = batch {batch} x {spec.kv_elements_per_token(context):,} cached "
                     f"elements for {context} tokens x {KV_BYTES[kv_name]:g} bytes ({kv_name})")

    # -- activations
    h, inter = spec.hidden_size, spec.intermediate_size
    qkv = spec.num_heads * spec.head_dim + 2 * spec.num_kv_heads * spec.head_dim
    if mode == "inference":
        tokens = batch * min(context, prefill_chunk)
        mlp_peak = tokens * (2 * h + 4 * inter) * act_bytes
        attn_peak = tokens * (3 * h + qkv + spec.num_heads * spec.head_dim) * act_bytes
        scores = 0
        if attention == "materialized":
            # scores x scale (or + mask) and softmax: two live at once; a 16-bit model's
            # softmax runs in fp32, so one of the two is 4 bytes an element.
            scores = (batch * spec.num_heads * min(context, prefill_chunk) * context
                      * (act_bytes + 4))
        logits = batch * spec.vocab_size * 4 * 2
        activations = max(mlp_peak, attn_peak + scores) + logits
        notes.append(
            f"activations = batch x min(context, {prefill_chunk}) tokens x max(2h + 4 x "
            f"intermediate, 3h + qkv + attn_out) x {act_bytes} bytes (one layer's transients "
            f"in a prefill chunk) + batch x vocab x 4 bytes x 2 (last-token fp32 logits)"
        )
        if attention == "materialized":
            notes.append(f"materialized attention: the attention side adds batch x heads x "
                         f"min(context, {prefill_chunk}) x context x ({act_bytes} + 4) bytes "
                         f"(scores and softmax output live at once)")
    else:
        tokens = batch * context
        stored = 6 * h + qkv + spec.num_heads * spec.head_dim + 4 * inter
        if checkpointing:
            per_layer_all = tokens * h * act_bytes * spec.num_layers
            recompute = tokens * stored * act_bytes
            activations = per_layer_all + recompute
            notes.append(f"activations (checkpointed) = tokens x h x {act_bytes} bytes x layers "
                         f"+ one layer recomputed: tokens x (6h + qkv + attn_out + 4 x "
                         f"intermediate) x {act_bytes} bytes")
        else:
            activations = tokens * stored * act_bytes * spec.num_layers
            notes.append(f"activations = tokens {tokens} x (6h + qkv + attn_out + 4 x "
                         f"intermediate) x {act_bytes} bytes x {spec.num_layers} layers")
        logits = tokens * spec.vocab_size * 4 * 2
        activations += logits
        notes.append("+ tokens x vocab x 4 bytes x 2 (fp32 logits and their gradient)")

    # -- the layout: each device holds its share of every term
    sh = layout.shares(spec)
    if (layout.count, sh.body, sh.kv, sh.transient, sh.routed) != (1, 1.0, 1.0, 1.0, None) \
            or layout.batch_share(batch) != 1.0:
        kept_bytes = fmt.kept_bits / 8
        body_weights = weights - kept * kept_bytes
        routed_share = sh.body if sh.routed is None else sh.routed
        routed_frac = spec.routed_params / max(1, spec.quantizable_params)
        body_share = sh.body * (1 - routed_frac) + routed_share * routed_frac
        weights = body_weights * body_share + sh.kept_params * kept_bytes * sh.kept_split
        scales = scales * body_share
        state_share = ((spec.quantizable_params * body_share + sh.kept_params * sh.kept_split)
                       / spec.params_total)
        gradients, optimizer = int(gradients * state_share), int(optimizer * state_share)
        kv = int(kv * sh.kv * layout.batch_share(batch))
        if mode == "train":
            activations = int((activations - logits) * sh.stored + logits * sh.transient)
        else:
            activations = int(activations * sh.transient)
        notes.append(f"{layout.label}: weights x {body_share:.4g} of the body + "
                     f"{sh.kept_params:,} embedding/lm_head params x {sh.kept_split:.4g}; "
                     f"KV cache x {sh.kv:.4g} ("
                     + (kv_split_note(spec, layout.tp) if layout.tp > 1 else "the stage's layers")
                     + f"); activations x {sh.transient:.4g}")

    host = 0
    if layout.host_experts and spec.routed_params:
        host = int(spec.routed_params * fmt.bits_per_weight / 8)
        notes.append(f"host memory = {spec.routed_params:,} routed-expert params x "
                     f"{fmt.bits_per_weight:g} bits / 8 (offloaded, not in the device total)")

    dynamic = kv + activations
    overhead = int(runtime_bytes + fragmentation * dynamic)
    notes.append(f"overhead = runtime context {runtime_bytes // mib} MiB + "
                 f"{fragmentation:.0%} of (kv_cache + activations) for allocator fragmentation")
    return Breakdown(
        model=spec.name, mode=mode, dtype=fmt.name, kv_dtype=kv_name, batch=batch,
        context=context, tensor_parallel=layout.tp, pipeline_parallel=layout.pp,
        layout=layout.label, devices=layout.count, params_total=spec.params_total,
        params_active=spec.params_active, weights=int(weights), weight_scales=int(scales),
        gradients=int(gradients), optimizer=int(optimizer), kv_cache=int(kv),
        activations=int(activations), overhead=overhead, notes=tuple(notes), host=host,
    )
