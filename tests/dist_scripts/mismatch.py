"""Ranks that disagree about one collective; run under ``hal run -n 2`` with DETAIL checks on.

    TORCH_DISTRIBUTED_DEBUG=DETAIL hal run -n 2 mismatch.py OP

OP: ``all_gather`` (different shapes), ``all_reduce`` (different dtypes), ``broadcast``
(4 elements into 8), ``order`` (rank 0 all_reduce, rank 1 broadcast).  Each rank prints one
``HALRESULT {json}`` line with the error it got.
"""

from __future__ import annotations

import json
import os
import sys

import torch

from hal import distributed as hd

op = sys.argv[1]
world = hd.init(timeout=60)
r = world.rank
try:
    if op == "all_gather":
        hd.all_gather(torch.ones(4 + 4 * r))
    elif op == "all_reduce":
        hd.all_reduce(torch.ones(4, dtype=torch.float32 if r == 0 else torch.float64))
    elif op == "broadcast":
        hd.broadcast(torch.full((4 + 4 * r,), float(7 if r == 0 else -1)), src=0)
    elif op == "order":
        hd.all_reduce(torch.ones(4)) if r == 0 else hd.broadcast(torch.ones(4), src=0)
    result: dict[str, object] = {"rank": r, "error": None}
except Exception as exc:
    result = {"rank": r, "error": type(exc).__name__, "message": str(exc),
              "is_hal_error": isinstance(exc, hd.DistributedError)}
print("HALRESULT " + json.dumps(result), flush=True)
sys.stdout.flush()
os._exit(0)  # the group saw an error: leave without a collective teardown
