"""The one registry of dtype names: short names, torch names, aliases, sizes and roles.

Every reader of a dtype name (``HAL_PRECISION``, ``hal plan --dtype``, ``hal bench --dtype``,
the catalogue's ``tflops``/``native_dtypes`` keys, what a backend's ``dtypes()`` reports)
parses through :func:`parse`, so one spelling means one thing everywhere.  Torch-free: torch
names are strings and :func:`to_torch` resolves them lazily.

Variants of one storage class share a ``family`` (``fp8-e4m3fnuz``, the MI300 name, counts as
``fp8`` for sizes and catalogue peaks).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from hal.errors import ConfigError

if TYPE_CHECKING:
    import torch

#: Role: a compute dtype of the mixed-precision policy (``HAL_PRECISION``).
COMPUTE = "compute"
#: Role: a low-precision dtype ``torch.autocast`` runs regions in.
AUTOCAST = "autocast"
#: Role: a weight storage format the planner sizes.
WEIGHTS = "weights"
#: Role: a KV-cache element type the planner sizes.
KV = "kv"
#: Role: a dtype ``hal bench`` can time a matmul in (where the device runs it).
MATMUL = "matmul"
ROLES = (COMPUTE, AUTOCAST, WEIGHTS, KV, MATMUL)
_ROLE_WORDS = {COMPUTE: "mixed-precision compute dtype", AUTOCAST: "autocast dtype",
               WEIGHTS: "weight format", KV: "KV-cache dtype", MATMUL: "matmul dtype"}


@dataclass(frozen=True)
class DType:
    """One dtype: its short name, torch attribute name, bytes per element and roles."""

    short: str
    torch_name: str | None  # attribute of the torch module; None: no torch storage dtype
    bytes: float  # per element; packed 4-bit formats are 0.5
    roles: frozenset[str]
    family: str = ""  # the short name it counts as for sizes and peaks; "" = itself
    aliases: tuple[str, ...] = ()
    note: str = ""

    @property
    def kind(self) -> str:
        """The family's short name (``fp8`` for every 8-bit float)."""
        return self.family or self.short

    @property
    def bits(self) -> float:
        """Bits per element (int4: 4)."""
        return self.bytes * 8

    def has(self, role: str) -> bool:
        """Whether this dtype plays ``role`` (one of :data:`ROLES`)."""
        return role in self.roles


def _d(short: str, torch_name: str | None, size: float, roles: Iterable[str] = (),
       family: str = "", aliases: Iterable[str] = (), note: str = "") -> DType:
    return DType(short, torch_name, size, frozenset(roles), family, tuple(aliases), note)


_ALL_PLANNED = (WEIGHTS, KV)
#: Every dtype hal names, best-known first.  Short names are what hal prints.
REGISTRY: tuple[DType, ...] = (
    _d("fp32", "float32", 4, (COMPUTE, WEIGHTS, KV, MATMUL),
       aliases=("float32", "float", "single", "f32")),
    _d("fp16", "float16", 2, (COMPUTE, AUTOCAST, WEIGHTS, KV, MATMUL),
       aliases=("float16", "half", "f16")),
    _d("bf16", "bfloat16", 2, (COMPUTE, AUTOCAST, WEIGHTS, KV, MATMUL),
       aliases=("bfloat16", "brain16")),
    _d("fp8", "float8_e4m3fn", 1, (*_ALL_PLANNED, MATMUL),
       aliases=("float8", "float8_e4m3fn", "fp8_e4m3fn", "fp8_e4m3", "e4m3", "e4m3fn"),
       note="OCP E4M3, the common fp8 weight format"),
    _d("fp8-e5m2", "float8_e5m2", 1, (*_ALL_PLANNED, MATMUL), family="fp8",
       aliases=("float8_e5m2", "e5m2"), note="OCP E5M2: wider range, common for KV caches"),
    _d("fp8-e4m3fnuz", "float8_e4m3fnuz", 1, (*_ALL_PLANNED, MATMUL), family="fp8",
       aliases=("float8_e4m3fnuz", "e4m3fnuz"), note="the E4M3 variant of MI300 (gfx94x)"),
    _d("fp8-e5m2fnuz", "float8_e5m2fnuz", 1, (*_ALL_PLANNED, MATMUL), family="fp8",
       aliases=("float8_e5m2fnuz", "e5m2fnuz"), note="the E5M2 variant of MI300 (gfx94x)"),
    _d("fp8-e8m0", "float8_e8m0fnu", 1, family="fp8", aliases=("float8_e8m0fnu", "e8m0"),
       note="MX block scales (exponent only); not a weight or compute format"),
    _d("fp4", "float4_e2m1fn_x2", 0.5, aliases=("float4_e2m1fn_x2", "e2m1", "fp4_e2m1"),
       note="packed two per byte; torch has no arithmetic on it"),
    _d("int8", "int8", 1, _ALL_PLANNED, aliases=("8bit", "q8", "i8")),
    _d("int4", None, 0.5, _ALL_PLANNED, aliases=("4bit", "q4", "i4"),
       note="packed two per byte in a wider container (GPTQ/AWQ)"),
    _d("nf4", None, 0.5, family="int4", aliases=("normalfloat4",),
       note="bitsandbytes 4-bit NormalFloat; the planner sizes 4-bit weights as int4"),
    _d("tf32", None, 4, aliases=("tensorfloat32",),
       note="fp32 storage with TF32 tensor-core math: a catalogue peak, not a storage dtype"),
    _d("fp64", "float64", 8, aliases=("float64", "double", "f64")),
    _d("uint8", "uint8", 1, aliases=("u8", "byte")),
    _d("int16", "int16", 2, aliases=("short", "i16")),
    _d("int32", "int32", 4, aliases=("int", "i32")),
    _d("int64", "int64", 8, aliases=("long", "i64")),
    _d("bool", "bool", 1),
)

_SEPARATORS = re.compile(r"[\s_\-.]+")


def _key(text: str) -> str:
    key = text.strip().lower()
    key = key.removeprefix("torch.")
    return _SEPARATORS.sub("", key)


def _index() -> dict[str, DType]:
    table: dict[str, DType] = {}
    for d in REGISTRY:
        for name in (d.short, *(d.aliases), *((d.torch_name,) if d.torch_name else ())):
            key = _key(name)
            if table.get(key, d) is not d:  # pragma: no cover - a registry typo
                raise AssertionError(f"dtype name {name!r} names two dtypes")
            table[key] = d
    return table


_BY_KEY = _index()
_BY_SHORT = {d.short: d for d in REGISTRY}


def names(role: str | None = None) -> list[str]:
    """Short names, in registry order; only those playing ``role`` when given."""
    return [d.short for d in REGISTRY if role is None or role in d.roles]


def lookup(value: object) -> DType | None:
    """The registry entry for ``value`` (a name in any accepted spelling or a torch.dtype), or None."""
    if not isinstance(value, str):
        value = str(value)  # torch.bfloat16 -> "torch.bfloat16"; no torch import needed
    if len(value) > 64:
        return None
    return _BY_KEY.get(_key(value))


def parse(value: object, *, role: str | None = None, what: str = "dtype") -> DType:
    """The entry for ``value`` (case-insensitive; ``-``/``_`` alike); one-line ConfigError otherwise.

    With ``role``, a known dtype that does not play it is refused too, naming the ones that do.
    """
    if role is not None and role not in ROLES:
        raise ValueError(f"unknown dtype role {role!r}; expected one of {ROLES}")
    entry = lookup(value)
    accepted = ", ".join(names(role))
    text = str(value)
    shown = text if len(text) <= 40 else text[:37] + "..."
    if entry is None:
        raise ConfigError(f"{what} {shown!r} is not a dtype hal knows; expected one of: {accepted} "
                          "(torch names such as bfloat16 or float8_e4m3fnuz also work)")
    if role is not None and role not in entry.roles:
        raise ConfigError(f"{what} {shown!r} ({entry.short}) is not a {_ROLE_WORDS[role]}; "
                          f"expected one of: {accepted}")
    return entry


def short(value: object) -> str:
    """The short name of ``value`` (``torch.bfloat16`` -> ``bf16``); ``str(value)`` if unknown."""
    entry = lookup(value)
    return entry.short if entry is not None else str(value).removeprefix("torch.")


def get(short_name: str) -> DType:
    """The entry with this exact short name; KeyError otherwise (for hal's own constants)."""
    return _BY_SHORT[short_name]


def to_torch(value: object) -> torch.dtype:
    """The ``torch.dtype`` of ``value``; ConfigError when it has none or this torch lacks it."""
    import torch

    entry = value if isinstance(value, DType) else parse(value)
    if entry.torch_name is None:
        raise ConfigError(f"dtype {entry.short} has no torch storage dtype ({entry.note})")
    dtype = getattr(torch, entry.torch_name, None)
    if not isinstance(dtype, torch.dtype):
        raise ConfigError(f"dtype {entry.short} needs torch.{entry.torch_name}, which torch "
                          f"{torch.__version__} lacks")
    return dtype
