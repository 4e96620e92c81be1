"""Dtype plans: how each (op, dtype) is reduced or moved over gloo, the same on every backend.

Measured on torch 2.13: gloo (the CPU half of every group) rejects int16, the unsigned types
wider than a byte and every float8 with "Invalid scalar type", even for broadcast.  Plans are
pure functions of (op, dtype), cached for the life of the process.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hal.errors import ConfigError
from hal.versions import torch_at_least

if TYPE_CHECKING:
    import torch

#: The reduction operations every backend offers through hal.
OPS = ("sum", "avg", "max", "min")

Plan = tuple[Any, Any]  # (torch ReduceOp, dtype to reduce in, or None for the tensor's own)
PLANS: dict[tuple[str, Any], Plan] = {}
_move_views: dict[Any, Any] = {}
#: [True] when gloo reduces with AVG natively; a list so tests can force the emulation.
GLOO_AVG: list[bool] = []


def native_dtypes() -> frozenset[Any]:
    """The dtypes gloo moves and reduces as they are."""
    import torch

    return frozenset({torch.bool, torch.uint8, torch.int8, torch.int32, torch.int64,
                      torch.float16, torch.bfloat16, torch.float32, torch.float64,
                      torch.complex64, torch.complex128})


def gloo_has_avg() -> bool:
    """gloo reduces with AVG natively since torch 2.8; older ones get SUM then a division."""
    if not GLOO_AVG:
        import torch

        GLOO_AVG.append(torch_at_least((2, 8), str(torch.__version__)))
    return GLOO_AVG[0]


def _refuse(name: str, op: str, dtype: Any, why: str) -> ConfigError:
    return ConfigError(f"{name}(op={op!r}) cannot reduce {dtype} tensors: {why}")


def reduce_plan(op: str, dtype: torch.dtype, name: str = "all_reduce") -> Plan:
    """How hal reduces ``dtype`` with ``op``: native, through a wider dtype, or refused."""
    key = (op, dtype)
    plan = PLANS.get(key)
    if plan is not None:
        return plan
    import torch
    import torch.distributed as dist

    if op not in OPS:
        raise ConfigError(f"{name}: op={op!r} is not one of {', '.join(OPS)}")
    red = {"sum": dist.ReduceOp.SUM, "avg": dist.ReduceOp.AVG,
           "max": dist.ReduceOp.MAX, "min": dist.ReduceOp.MIN}[op]
    native = dtype in native_dtypes()
    compute = None
    if dtype == torch.bool:
        if op in ("sum", "avg"):
            raise _refuse(name, op, dtype, "use 'max' for logical any or 'min' for logical all")
    elif dtype.is_complex:
        if op in ("max", "min"):
            raise _refuse(name, op, dtype, "complex numbers have no order; use 'sum' or 'avg'")
        compute = None if native else torch.complex64
    elif dtype.is_floating_point:
        compute = None if native else torch.float32
    else:
        if op == "avg":
            raise _refuse(name, op, dtype, "integer averages round differently on each backend; "
                          "use 'sum' and divide, or a floating dtype")
        if not native:
            wider = {torch.int16: torch.int32, torch.uint16: torch.int32,
                     torch.uint32: torch.int64}.get(dtype)
            if wider is None and dtype == torch.uint64 and op == "sum":
                wider = torch.int64  # same bits, two's-complement sum is exact modulo 2**64
            if wider is None:
                raise _refuse(name, op, dtype, "no wider integer type holds it; accepted integer "
                              "dtypes: uint8, int8, int16, uint16, int32, uint32, int64 "
                              "(uint64 with 'sum' only)")
            compute = wider
    plan = (red, compute)
    PLANS[key] = plan
    return plan


def move_view(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` itself, or a same-size bit view gloo can move when it rejects the dtype."""
    dtype = tensor.dtype
    view = _move_views.get(dtype, False)
    if view is False:
        import torch

        if dtype in native_dtypes():
            view = None
        else:
            size = dtype.itemsize
            view = {1: torch.uint8, 2: torch.float16, 4: torch.int32, 8: torch.int64}.get(size)
            if view is None:
                raise ConfigError(f"cannot move {dtype} tensors: element size {size} bytes "
                                  "(accepted: 1, 2, 4 or 8 bytes)")
        _move_views[dtype] = view
    return tensor if view is None else tensor.view(view)
