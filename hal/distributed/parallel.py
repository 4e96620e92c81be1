"""Parallel wrappers: DistributedDataParallel and DeviceMesh on the World's device.

A world of one gets a real 1-rank group (in-memory store, no port), so ``model.module`` and
state-dict keys are the same as in a multi-rank run.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from hal.distributed.state import STATE, ensure_group, init
from hal.errors import ConfigError

if TYPE_CHECKING:
    import torch
    from torch.distributed.device_mesh import DeviceMesh
    from torch.nn.parallel import DistributedDataParallel


def wrap(model: torch.nn.Module, **ddp_kwargs: Any) -> DistributedDataParallel:
    """``model`` on this rank's device inside DistributedDataParallel (device_ids per backend).

    A world of one gets a real DDP over a 1-rank in-memory group, so ``model.module`` and
    state-dict keys are the same as in a multi-rank run.
    """
    from torch.nn.parallel import DistributedDataParallel

    w = STATE.world or init()
    ensure_group(w)
    model = model.to(w.device)
    device_ids = None if w.device.type == "cpu" else [w.device.index or 0]
    return DistributedDataParallel(model, device_ids=device_ids, **ddp_kwargs)


def mesh(shape: int | Sequence[int], names: str | Sequence[str] | None = None) -> DeviceMesh:
    """A DeviceMesh of ``shape`` over all ranks on the selected device type (for DTensor/TP)."""
    from torch.distributed.device_mesh import init_device_mesh

    w = STATE.world or init()
    dims = (shape,) if isinstance(shape, int) else tuple(shape)
    dim_names = (names,) if isinstance(names, str) else (None if names is None else tuple(names))
    total = 1
    for d in dims:
        if not isinstance(d, int) or d < 1:
            raise ConfigError(f"mesh: shape {dims} must hold positive integers")
        total *= d
    if total != w.world_size:
        raise ConfigError(f"mesh: shape {dims} holds {total} ranks but the world has "
                          f"{w.world_size}")
    if dim_names is not None and len(dim_names) != len(dims):
        raise ConfigError(f"mesh: {len(dim_names)} names {dim_names} for {len(dims)} dims {dims}")
    ensure_group(w)
    return init_device_mesh(w.device.type, dims, mesh_dim_names=dim_names)
