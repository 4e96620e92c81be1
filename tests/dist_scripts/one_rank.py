"""One process of a job, environment from the caller: prints ``HALRESULT {json}`` for init().

    python one_rank.py TIMEOUT

Used for the failures one process can show alone: a missing peer, a busy port, no master.
"""

from __future__ import annotations

import json
import sys
import time

import torch.distributed  # noqa: F401  (imported before the clock starts: elapsed is init's own)

from hal import distributed as hd
from hal.selection import select

select()
start = time.monotonic()
try:
    world = hd.init(timeout=float(sys.argv[1]))
    result: dict[str, object] = {"error": None, "world_size": world.world_size,
                                 "backend": world.backend}
except Exception as exc:
    result = {"error": type(exc).__name__, "message": str(exc),
              "is_hal_error": isinstance(exc, __import__("hal").HalError)}
result["elapsed"] = time.monotonic() - start
print("HALRESULT " + json.dumps(result), flush=True)
