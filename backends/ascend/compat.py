"""Which CANN release each torch_npu release is built for: Ascend's published version matching.

torch_npu wheels carry no machine-readable CANN requirement (their metadata pins only torch), and a
serving engine's plugin (vllm-ascend) pins torch_npu, not CANN; so the one link from the Python
stack to the toolkit is the table Ascend publishes. Data only, torch-free.

Source: Ascend/pytorch ``COMPATIBILITY.en.md`` ("TorchNPU version mapping table", the active and the
historical releases), commit 9e73e708ab9350d203475609f36f8a43f6a0c2ab (2026-08-21). vllm-ascend's
release matrix (``docs/source/community/versioning_policy.md``) agrees: v0.23.0 pins
torch-npu 2.10.0.post4 and names CANN 9.1.0.
"""

from __future__ import annotations

import re

#: torch_npu package version -> the CANN release it is built for.
TORCH_NPU_CANN: dict[str, str] = {
    "2.12.0": "9.1.0", "2.11.0": "9.1.0", "2.10.0.post4": "9.1.0", "2.9.0.post6": "9.1.0",
    "2.7.1.post8": "9.1.0",
    "2.9.0.post2": "9.0.0", "2.8.0.post4": "9.0.0", "2.7.1.post4": "9.0.0",
    "2.9.0": "8.5.0", "2.8.0.post2": "8.5.0", "2.7.1.post2": "8.5.0", "2.6.0.post5": "8.5.0",
    "2.8.0": "8.3.RC1", "2.7.1": "8.3.RC1", "2.6.0.post3": "8.3.RC1", "2.1.0.post17": "8.3.RC1",
    "2.6.0": "8.2.RC1", "2.5.1.post1": "8.2.RC1", "2.1.0.post13": "8.2.RC1",
    "2.5.1": "8.1.RC1", "2.4.0.post4": "8.1.RC1", "2.3.1.post6": "8.1.RC1", "2.1.0.post12": "8.1.RC1",
    "2.4.0.post2": "8.0.0", "2.3.1.post4": "8.0.0", "2.1.0.post10": "8.0.0",
    "2.4.0": "8.0.RC3", "2.3.1.post2": "8.0.RC3", "2.1.0.post8": "8.0.RC3",
    "2.3.1": "8.0.RC2", "2.2.0.post2": "8.0.RC2", "2.1.0.post6": "8.0.RC2",
    "2.2.0": "8.0.RC1", "2.1.0.post4": "8.0.RC1",
    "2.1.0": "7.0.0", "2.0.1.post1": "7.0.0",
}


def cann_line(version: str) -> tuple[int, int] | None:
    """A CANN version's release line (major, minor): 8.5.0 and 8.5.1, or 8.3.RC1 and 8.3.RC2, share one.

    Patch and RC updates of one line keep the ABI torch_npu is built against; a new minor does not.
    None for text that is no CANN version.
    """
    match = re.match(r"\s*(?:CANN\s+)?(\d+)\.(\d+)(?:\.|\Z)", version, re.IGNORECASE)
    return (int(match.group(1)), int(match.group(2))) if match else None


def cann_for(torch_npu_version: str) -> str | None:
    """The CANN release a torch_npu release is built for; None when the table does not list it."""
    return TORCH_NPU_CANN.get(torch_npu_version.split("+", 1)[0].strip())


def torch_npu_for(torch_release: str, cann: str) -> list[str]:
    """torch_npu releases built for ``torch_release`` (e.g. 2.9.0) and the release line of ``cann``."""
    line = cann_line(cann)
    return [npu for npu, want in TORCH_NPU_CANN.items()
            if line is not None and cann_line(want) == line
            and npu.split(".post", 1)[0] == torch_release]
