"""Fake KFD topology files (/sys/class/kfd/kfd/topology/nodes), as the amdgpu driver writes them."""

from __future__ import annotations

from collections.abc import Sequence

from hal.backends.cuda.testing.specs import SPECS, GpuSpec


def kfd_files(devices: Sequence[str | GpuSpec]) -> dict[str, str]:
    """KFD topology files (for make_fake_tree's ``files``): node 0 a CPU, then one node a GPU.

    GPU node ``i`` (from 1) names its render node in ``drm_render_minor``: ``/dev/dri/renderD``
    ``127 + i``, as the driver numbers them from 128; put those nodes in the tree's ``dev``.
    """
    specs = [SPECS[d] if isinstance(d, str) else d for d in devices]
    base = "/sys/class/kfd/kfd/topology/nodes"
    files = {f"{base}/0/properties": "cpu_cores_count 64\nsimd_count 0\ngfx_target_version 0\n"}
    for i, s in enumerate(specs, start=1):
        arch = s.gcnArchName.split(":")[0].removeprefix("gfx")
        target = int(arch[:-2]) * 10000 + int(arch[-2], 16) * 100 + int(arch[-1], 16)
        files[f"{base}/{i}/properties"] = (
            f"cpu_cores_count 0\nsimd_count {s.multi_processor_count * 4}\n"
            f"gfx_target_version {target}\ndrm_render_minor {127 + i}\n")
    return files


def render_nodes(count: int) -> list[str]:
    """The ``dev`` entries (for make_fake_tree) of the render nodes of ``count`` GPUs."""
    return [f"dri/renderD{128 + i}" for i in range(count)]
