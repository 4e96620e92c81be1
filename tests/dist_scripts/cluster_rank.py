"""One rank under a real launcher (srun, sbatch, mpirun, or the loopback two-node test): joins
with hal.distributed.init(), all-reduces rank + 1 and prints one JSON line; the rank named by
HAL_TEST_FAIL_RANK exits 3 after the collective.  The device index is what selection picks for
a two-device backend from this rank's own launcher variables."""

from __future__ import annotations

import json
import os
import sys

import torch

import hal
import hal.distributed as hd
from hal.backends.cpu import CpuBackend
from hal.selection import decide


class TwoDevices(hal.Backend):
    name, device_type, priority = "twodev", "meta", 90

    def probe(self) -> hal.Probe:
        return hal.Probe(True, "two devices", 2)


w = hd.init(timeout=180)
t = torch.tensor([float(w.rank + 1)])
hd.all_reduce(t)
launch = {k: v for k, v in os.environ.items() if k != "HAL_DEVICE"}  # the launcher's variables
index = decide([TwoDevices(), CpuBackend()], launch).index
line = json.dumps({"environment": w.environment, "rank": w.rank, "world_size": w.world_size,
                  "local_rank": w.local_rank, "sum": t.item(), "device_index": index,
                  "master": w.master, "reason": w.reason,
                  "node_rank": os.environ.get("SLURM_NODEID")})
# one write of the whole line: ranks share the launcher's stdout pipe, and print() writes the
# text and its newline separately, which two ranks can interleave
os.write(1, (line + "\n").encode())
hd.barrier()
if os.environ.get("HAL_TEST_FAIL_RANK") == str(w.rank):
    sys.exit(3)
