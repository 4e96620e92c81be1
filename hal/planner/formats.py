"""Weight formats as deployers pick them: bits a weight, with sources, and where each computes.

One table (:data:`FORMATS`) of checkpoint formats: 16-bit floats, block-scaled fp8 as
DeepSeek-V3/R1 ship it, int8 weight-only (W8A16) and weights-and-activations (W8A8), AWQ and
GPTQ with their group overhead, NVFP4 and MXFP4, the GGUF k-quant and i-quant mixes, and
Unsloth's dynamic low-bit DeepSeek-R1 quants.  Element and scale sizes of the fixed-structure
formats come from :mod:`hal.dtypes`; GGUF mixes (where tensors of one file carry different
types) use the bits a weight llama.cpp measured over whole files.  Sources are in ``source``;
docs/planner.md ("Weight formats") holds the table and its checks.

The interface the estimate calls is small: :func:`get`, :func:`bytes_for`, :func:`native_on`
and :func:`for_card` (the format a card runs: the one asked, or a conversion with its reason).
Nothing here imports torch.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from hal import dtypes
from hal.errors import ConfigError

if TYPE_CHECKING:
    from hal.planner.models import ModelSpec

#: Torch dtype names a card must list natively to compute each class of format.
NEEDS = {"fp8": "float8_e4m3fn", "fp8-e4m3fnuz": "float8_e4m3fnuz", "fp4": "float4_e2m1fn_x2",
         "int8": "int8", "bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}
_LLAMA_CPP = ("llama.cpp examples/quantize/README.md (ggerganov/llama.cpp@b8c1476e), bits per "
              "weight of whole files, Llama 2 70B column")
_QUANTIZE_HELP = "llama.cpp llama-quantize's type list (bits a weight of the type)"
_GGML_BLOCKS = "ggml block layout (ggml-common.h): {}"
_UNSLOTH = ("unsloth.ai/blog/deepseekr1-dynamic (2025-01-27): routed experts at the type, "
            "down_proj {}, attention and dense layers 4-6 bit; published R1 size {} GB")


class FormatError(ConfigError):
    """A weight format a card cannot run as asked (``--no-convert``), or an unknown name."""


@dataclass(frozen=True)
class Format:
    """A weight format: bits a weight for each class of tensor, scales included.

    ``bits`` is what the estimate multiplies quantized weights by, ``expert_bits`` the routed
    experts' figure where a recipe treats them apart (Unsloth's dynamic quants), ``kept_bits``
    the embeddings and lm_head (16 for formats that leave them alone).  ``compute`` is the
    element a card must compute natively (:data:`NEEDS`); ``weight_only`` formats dequantize
    to 16-bit inside the kernel and so run on any card with fp16.
    """

    name: str
    family: str  # "float", "block-fp8", "int8", "awq", "gptq", "fp4", "gguf", "dynamic"
    element_bits: float
    scale_per_weight: float  # scale (and zero) bits of a group over its weights
    kept_bits: float
    compute: str  # a key of NEEDS
    weight_only: bool
    source: str
    expert_bits: float | None = None
    activations: str = "16-bit"
    aliases: tuple[str, ...] = ()
    group: int = 0  # weights sharing one set of scales (0: none, or inside a GGUF mix)
    group_scale_bits: float = 0  # bits of one group's scales and zeros

    @property
    def bits(self) -> float:
        """Element bits of quantized weights (GGUF: the whole mix, scales inside); whole when whole."""
        b = self.element_bits
        return int(b) if b == int(b) else b

    @property
    def quantized(self) -> bool:
        """Whether embeddings and lm_head are treated apart (every format but plain floats)."""
        return self.family != "float"

    @property
    def scale_bits_per_weight(self) -> float:
        """Scale overhead in bits a weight (AWQ g128: 20 / 128)."""
        return self.scale_per_weight

    @property
    def scale_bits(self) -> float:
        """Bits of one group's scales (and zeros): AWQ 16 + 4."""
        return self.group_scale_bits

    @property
    def group_size(self) -> int:
        """Weights sharing one set of scales (0: none)."""
        return self.group

    @property
    def bits_per_weight(self) -> float:
        """Bits a weight with scales; a dynamic quant's routed-expert figure, what decode reads."""
        if self.expert_bits is not None:
            return self.expert_bits
        return self.element_bits + self.scale_per_weight


def _bits(short: str) -> float:
    return float(dtypes.get(short).bits)


def _scaled(name: str, family: str, element: str, group: int, scales: Iterable[str],
            compute: str, weight_only: bool, source: str, *, kept: float = 16,
            activations: str = "16-bit", aliases: tuple[str, ...] = ()) -> Format:
    """A fixed-structure format: ``element`` bits plus the ``scales`` (dtype names) per group."""
    group_bits = sum(_bits(s) for s in scales)
    scale = group_bits / group if group else 0.0
    return Format(name, family, _bits(element), scale, kept, compute, weight_only, source,
                  activations=activations, aliases=aliases, group=group,
                  group_scale_bits=group_bits)


def _gguf(name: str, bpw: float, source: str) -> Format:
    """A GGUF type or mix: ``bpw`` over every tensor (llama.cpp quantizes embeddings too)."""
    return Format(name, "gguf", bpw, 0.0, bpw, "fp16", True, source,
                  aliases=(name.upper(),))


def _dynamic(name: str, gate_up: float, down: float, other: float, source: str,
             aliases: tuple[str, ...]) -> Format:
    """An Unsloth dynamic R1 quant: routed gate/up and down at their types, the rest at ``other``."""
    expert = (2 * gate_up + down) / 3
    return Format(name, "dynamic", other, 0.0, other, "fp16", True, source,
                  expert_bits=expert, aliases=aliases)


_K = {"q2_k": 3.40, "q3_k_s": 3.47, "q3_k_m": 3.85, "q3_k_l": 4.19, "q4_k_s": 4.53,
      "q4_k_m": 4.80, "q5_k_s": 5.50, "q5_k_m": 5.65, "q6_k": 6.56}
_BLOCKS = {"q4_0": (4.5, "32 x 4 bits + one fp16 scale = 18 bytes / 32"),
           "q4_1": (5.0, "32 x 4 bits + fp16 scale and min = 20 bytes / 32"),
           "q5_0": (5.5, "32 x 5 bits + one fp16 scale = 22 bytes / 32"),
           "q5_1": (6.0, "32 x 5 bits + fp16 scale and min = 24 bytes / 32"),
           "q8_0": (8.5, "32 x 8 bits + one fp16 scale = 34 bytes / 32")}
_IQ = {"iq1_s": 1.56, "iq1_m": 1.75, "iq2_xxs": 2.06, "iq2_xs": 2.31, "iq2_s": 2.5, "iq2_m": 2.7,
       "iq3_xxs": 3.06, "iq3_xs": 3.3, "iq3_s": 3.44, "iq3_m": 3.66, "iq4_xs": 4.25, "iq4_nl": 4.5}
#: The Unsloth recipes' other tensors: "4 or 6 bit" (Q4_K 4.5, Q6_K 6.56), taken at 5.5.
_UD_OTHER = 5.5

#: Every format hal sizes, by name.
FORMATS: dict[str, Format] = {f.name: f for f in (
    Format("fp32", "float", 32, 0, 32, "fp32", False, "IEEE 754 single", aliases=("float32",)),
    Format("fp16", "float", 16, 0, 16, "fp16", False, "IEEE 754 half", aliases=("float16",)),
    Format("bf16", "float", 16, 0, 16, "bf16", False, "bfloat16", aliases=("bfloat16",)),
    # DeepSeek-V3/R1's checkpoint: e4m3 weights, one fp32 scale per 128 x 128 block
    # (config.json quantization_config: fmt e4m3, weight_block_size [128, 128]); embeddings,
    # lm_head and norms in bf16.
    _scaled("fp8", "block-fp8", "fp8", 128 * 128, ["fp32"], "fp8", False,
            "DeepSeek-V3 technical report 3.3.2 and its config.json (weight_block_size [128, 128])",
            activations="fp8 (per-token-group 1 x 128 scales)", aliases=("fp8-block",)),
    # int8 weights, fp16 scale per 128 (weight-only: GPTQ/AWQ-style int8, Marlin kernels)
    _scaled("int8", "int8", "int8", 128, ["fp16"], "fp16", True,
            "int8 weight-only, one fp16 scale per 128 weights (GPTQ 8-bit g128)",
            aliases=("w8a16",)),
    # int8 weights and activations: one fp32 scale per output channel (SmoothQuant-style);
    # per weight that is 32 / in_features, under 0.01 bit at hidden 4096: counted as 0
    _scaled("w8a8", "int8", "int8", 0, [], "int8", False,
            "SmoothQuant W8A8: int8 weights with per-channel scales, int8 activations",
            activations="int8 (per-token scales)", aliases=("w8a8-int8",)),
    # 4-bit integer, fp16 scale per 128 (no zero point): the planner's historical int4
    _scaled("int4", "gptq", "int4", 128, ["fp16"], "fp16", True,
            "symmetric int4, one fp16 scale per 128 weights", aliases=("w4a16",)),
    # AWQ and GPTQ: 4-bit weights, fp16 scale and a 4-bit zero point per group
    _scaled("awq", "awq", "int4", 128, ["fp16", "int4"], "fp16", True,
            "AutoAWQ GEMM: 4-bit weights, fp16 scales and packed 4-bit zeros per 128 (q_group_size 128)",
            aliases=("awq-g128",)),
    _scaled("gptq", "gptq", "int4", 128, ["fp16", "int4"], "fp16", True,
            "AutoGPTQ / GPTQModel: 4-bit qweight, fp16 scales and packed 4-bit qzeros per group_size 128",
            aliases=("gptq-g128",)),
    _scaled("gptq-g32", "gptq", "int4", 32, ["fp16", "int4"], "fp16", True,
            "GPTQ with group_size 32: the same scales and zeros, four times as many"),
    # 4-bit floats: e2m1 elements, a scale per block
    _scaled("nvfp4", "fp4", "fp4", 16, ["fp8"], "fp4", True,
            "NVFP4: e2m1 with one e4m3 scale per 16 values (plus one fp32 per tensor)"),
    _scaled("mxfp4", "fp4", "fp4", 32, ["fp8-e8m0"], "fp4", True,
            "OCP Microscaling (MX) v1.0: e2m1 with one e8m0 scale per 32 values"),
    *(_gguf(name, bpw, _LLAMA_CPP) for name, bpw in _K.items()),
    *(_gguf(name, bpw, _GGML_BLOCKS.format(why)) for name, (bpw, why) in _BLOCKS.items()),
    *(_gguf(name, bpw, _QUANTIZE_HELP) for name, bpw in _IQ.items()),
    _dynamic("ud-iq1_s", 1.5625, (2.0625 + 1.5625) / 2, _UD_OTHER,
             _UNSLOTH.format("2.06/1.56 bit", "131"), ("ud-1.58bit", "r1-1.58bit")),
    _dynamic("ud-iq1_m", 1.75, 2.0625, _UD_OTHER, _UNSLOTH.format("2.06 bit", "158"),
             ("ud-1.73bit", "r1-1.73bit")),
    _dynamic("ud-iq2_xxs", 2.0625, (2.5 + 2.0625) / 2, _UD_OTHER,
             _UNSLOTH.format("IQ2_S/IQ2_XXS (assumed one type up, as above)", "183"),
             ("ud-2.22bit", "r1-2.22bit")),
    _dynamic("ud-q2_k_xl", 2.625, (3.4375 + 2.625) / 2, _UD_OTHER,
             _UNSLOTH.format("Q3_K/Q2_K (assumed one type up, as above)", "212"),
             ("ud-2.51bit", "r1-2.51bit")),
)}
#: Published file sizes the table is checked against (tests/test_planner_formats.py).
#: Unsloth's "131GB"... are GiB as llama.cpp and du print them (see docs/planner.md).
PUBLISHED = {
    ("deepseek-r1", "q4_k_m"): (404e9, "ollama.com/library/deepseek-r1 671b tag: 404GB "
                                       "(376 GiB, ollama/ollama#8911)"),
    ("deepseek-r1", "ud-iq1_s"): (131 * 2**30, "Unsloth: 131GB"),
    ("deepseek-r1", "ud-iq1_m"): (158 * 2**30, "Unsloth: 158GB"),
    ("deepseek-r1", "ud-iq2_xxs"): (183 * 2**30, "Unsloth: 183GB"),
    ("deepseek-r1", "ud-q2_k_xl"): (212 * 2**30, "Unsloth: 212GB"),
}


@functools.lru_cache(maxsize=1)
def _index() -> dict[str, Format]:
    out: dict[str, Format] = {}
    for f in FORMATS.values():
        for key in (f.name, *f.aliases):
            out[_key(key)] = f
    return out


def _key(text: str) -> str:
    return text.strip().lower().replace("_", "-")


def lookup(name: object) -> Format | None:
    """The format a name means (case and ``_``/``-`` ignored, aliases taken), or None."""
    if not isinstance(name, str) or len(name) > 64:
        return None
    return _index().get(_key(name))


def get(name: object) -> Format:
    """The format a name means; a one-line FormatError listing the names otherwise."""
    found = lookup(name)
    if found is None:
        shown = repr(name)[:40]
        raise FormatError(f"weight format {shown} is unknown; expected one of: {', '.join(FORMATS)}")
    return found


@dataclass(frozen=True)
class WeightBytes:
    """The weight bytes of a model in one format: quantized weights, scales, kept tensors."""

    weights: float  # quantized weights + kept embeddings/lm_head
    scales: float
    note: str

    @property
    def total(self) -> float:
        """Everything the checkpoint's weights take."""
        return self.weights + self.scales


def bytes_for(fmt: str | Format, params: int, *, kept: int = 0, routed: int = 0) -> WeightBytes:
    """Bytes of ``params`` weights in ``fmt``: ``kept`` of them embeddings/lm_head, ``routed`` experts.

    ``params`` counts every weight, ``kept`` and ``routed`` included.
    """
    f = fmt if isinstance(fmt, Format) else get(fmt)
    if not f.quantized:
        return WeightBytes(params * f.bits / 8, 0.0, f"{params:,} params x {f.bits:g} bits ({f.name})")
    body = params - kept
    expert = routed if f.expert_bits is not None else 0
    other = body - expert
    weights = other * f.element_bits / 8 + expert * (f.expert_bits or 0) / 8 + kept * f.kept_bits / 8
    scales = body * f.scale_per_weight / 8
    parts = [f"{other:,} params x {f.element_bits:g} bits"]
    if expert:
        parts.append(f"{expert:,} routed-expert params x {f.expert_bits:.3g} bits")
    if kept:
        parts.append(f"{kept:,} embedding/lm_head params x {f.kept_bits:g} bits")
    note = " + ".join(parts) + f" ({f.name})"
    if f.scale_per_weight:
        note += (f"; scales {f.group_scale_bits:g} bits / {f.group} = {f.scale_per_weight:.4g} bits a "
                 f"weight ({f.element_bits + f.scale_per_weight:.4g} bits a weight with scales)")
    return WeightBytes(weights, scales, note)


def model_bytes(fmt: str | Format, spec: ModelSpec) -> WeightBytes:
    """:func:`bytes_for` a model spec (embeddings, lm_head and routed experts from the spec)."""
    return bytes_for(fmt, spec.params_total, kept=spec.embedding_params + spec.lm_head_params,
                     routed=spec.routed_params)


def compute_order(fmt: str | Format) -> tuple[str, ...]:
    """Peak-TFLOPS keys a format's matmuls run at, preferred first (weight-only: 16-bit)."""
    f = fmt if isinstance(fmt, Format) else get(fmt)
    if f.weight_only and f.compute != "fp4":
        return ("bf16", "fp16")
    return tuple(dict.fromkeys((f.compute, "bf16", "fp16")))


def _native(card: object) -> frozenset[str]:
    names = card if isinstance(card, (list, tuple, set, frozenset)) else getattr(card, "native_dtypes", ())
    return frozenset(str(n) for n in names)


def native_on(fmt: str | Format, card: object) -> bool:
    """Whether ``card`` (a catalogue entry, or its native dtype names) runs ``fmt`` as it is.

    Weight-only formats run wherever fp16 does; fp8, fp4 and W8A8 need their element in the
    card's native dtypes (an fp8 card of either e4m3 flavour counts for fp8).
    """
    f = fmt if isinstance(fmt, Format) else get(fmt)
    native = _native(card)
    if f.compute == "fp8":
        return bool(native & {NEEDS["fp8"], NEEDS["fp8-e4m3fnuz"]})
    if f.weight_only and f.compute != "fp4":
        return _dequantizes(native)
    return NEEDS[f.compute] in native


def _dequantizes(native: frozenset[str]) -> bool:
    """Whether a weight-only kernel can dequantize to a float the card computes (fp16, or fp32
    as llama.cpp does on cards without fast fp16, such as the Tesla P40)."""
    return bool(native & {NEEDS["fp16"], NEEDS["fp32"]})


@dataclass(frozen=True)
class Choice:
    """The format a card runs: the one asked, or what it is converted to and why."""

    asked: str
    used: str
    reason: str = ""  # empty when ``used`` is ``asked``

    @property
    def converted(self) -> bool:
        """Whether the checkpoint must be converted first."""
        return self.used != self.asked


def for_card(fmt: str | Format, card: object, *, convert: bool = True, card_name: str = "") -> Choice:
    """The format ``card`` runs for a checkpoint in ``fmt``: as is, converted, or refused.

    fp8 on a card without fp8 becomes W8A8 where the card computes int8 (the size stays about
    the same), else bf16 (twice the bytes); bf16 without bf16 becomes fp16 (same bytes); W8A8
    without int8 becomes int8 weight-only.  fp4 formats without fp4 run weight-only (the
    kernel dequantizes to 16-bit): same bytes, not a conversion.  With ``convert=False`` a
    conversion is a one-line FormatError saying what would work.
    """
    f = fmt if isinstance(fmt, Format) else get(fmt)
    where = card_name or getattr(card, "name", "") or "this card"
    if native_on(f, card) or (f.compute == "fp4" and _dequantizes(_native(card))):
        return Choice(f.name, f.name)
    native = _native(card)
    if f.compute == "fp8":
        to = "w8a8" if NEEDS["int8"] in native else ("bf16" if NEEDS["bf16"] in native else "fp16")
        why = (f"{where} has no fp8 compute: the fp8 checkpoint is converted to {to}"
               + (" (int8 weights and activations, about the same bytes; bf16 would take twice)"
                  if to == "w8a8" else " (twice the bytes of fp8)"))
    elif f.compute == "bf16":
        to, why = "fp16", f"{where} has no bf16 compute: bf16 weights run as fp16 (same bytes)"
    elif f.compute == "int8":
        to, why = "int8", f"{where} has no int8 compute: W8A8 runs weight-only as W8A16 (same bytes)"
    else:
        raise FormatError(f"weight format {f.name!r} cannot run on {where} (it has no "
                          f"{NEEDS[f.compute]} compute, nor fp16 or fp32 to dequantize to)")
    if not convert:
        raise FormatError(f"weight format {f.name!r} is not computed natively on {where} and "
                          f"--no-convert is set; convert to {to} (or drop --no-convert), or choose "
                          "a card with native " + ("fp8" if f.compute == "fp8" else NEEDS[f.compute]))
    return Choice(f.name, to, why)
