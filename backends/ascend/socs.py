"""Ascend SoC families: which dtypes each runs natively, keyed by SoC name or SocVersion number.

Sources (see docs/backends-ascend-xpu.md): torch_npu's ``c10_npu::SocVersion`` enum
(torch_npu/csrc/core/npu/NpuVariables.h) for names and numbers, torch_npu's
``IsBF16Supported()`` (``SocVersion >= Ascend910B1``) and Huawei's product pages for dtypes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

#: PCI device ids of Huawei (vendor 0x19e5) NPUs, from Ascend's own log-collection script.
PCI_DEVICE_IDS: dict[int, str] = {
    0xD100: "Ascend 310",
    0xD500: "Ascend 310P",
    0xD801: "Ascend 910",
    0xD802: "Ascend 910B",
    0xD803: "Ascend 910_93",
}


@dataclass(frozen=True)
class SocFamily:
    """A group of SoCs with the same native compute dtypes (names, best first)."""

    name: str
    dtypes: tuple[str, ...]
    note: str


FAMILY_910A = SocFamily("Ascend 910 (first generation)", ("float16", "float32"),
                        "Da Vinci cube units run fp16; no bf16 (torch_npu IsBF16Supported: no)")
FAMILY_310P = SocFamily("Ascend 310P", ("float16", "float32"),
                        "inference SoC: fp16 cube, no bf16 (torch_npu IsBF16Supported: no)")
FAMILY_910B = SocFamily("Ascend 910B (Atlas A2)", ("bfloat16", "float16", "float32"),
                        "bf16 and fp16 cube (torch_npu IsBF16Supported: yes)")
FAMILY_910_93 = SocFamily("Ascend 910_93 (Atlas A3)", ("bfloat16", "float16", "float32"),
                          "bf16 and fp16 cube (torch_npu IsBF16Supported: yes)")
FAMILY_310B = SocFamily("Ascend 310B", ("float16", "float32"),
                        "edge SoC: fp16 only counted (no Huawei source for native bf16)")
FAMILY_950 = SocFamily("Ascend 950", ("bfloat16", "float16", "float32"),
                       "bf16 and fp16 (torch_npu IsBF16Supported: yes)")

#: c10_npu::SocVersion number ranges (NpuVariables.h) -> family.
_VERSION_RANGES: tuple[tuple[int, int, SocFamily], ...] = (
    (100, 104, FAMILY_910A),   # Ascend910PremiumA, 910ProA, 910A, 910ProB, 910B (first gen)
    (200, 205, FAMILY_310P),   # Ascend310P1..P5, P7
    (220, 225, FAMILY_910B),   # Ascend910B1, B2, B2C, B3, B4, B4_1
    (240, 243, FAMILY_310B),   # Ascend310B1..B4
    (250, 256, FAMILY_910_93),  # Ascend910_9391 .. 910_9363
    (260, 260, FAMILY_950),
)

#: SoC names (aclrtGetSocName, what torch.npu.get_device_name returns) -> family.
_NAME_PATTERNS: tuple[tuple[re.Pattern[str], SocFamily], ...] = (
    (re.compile(r"^Ascend910B\d"), FAMILY_910B),          # second generation: 910B1..B4_1
    (re.compile(r"^Ascend910_93"), FAMILY_910_93),
    (re.compile(r"^Ascend910(PremiumA|ProA|A|ProB|B)?$"), FAMILY_910A),
    (re.compile(r"^Ascend310P"), FAMILY_310P),
    (re.compile(r"^Ascend310B"), FAMILY_310B),
    (re.compile(r"^Ascend950"), FAMILY_950),
)


def family_by_name(soc_name: str) -> SocFamily | None:
    """The family of a SoC name such as ``Ascend910B2`` or ``Ascend310P3``; None if unknown."""
    name = soc_name.strip()
    for pattern, family in _NAME_PATTERNS:
        if pattern.match(name):
            return family
    return None


def family_by_version(soc_version: int) -> SocFamily | None:
    """The family of a ``c10_npu::SocVersion`` number; None if unknown."""
    for low, high, family in _VERSION_RANGES:
        if low <= soc_version <= high:
            return family
    return None
