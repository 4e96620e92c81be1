"""Start N ranks with torch.multiprocessing spawn on 127.0.0.1 and run one scenario in each.

    python spawn.py SCENARIO NPROCS PORT TIMEOUT

Scenarios: ``checks`` (every collective, see checks.py), ``kill`` (the last rank exits
mid-run), ``stall`` (the last rank never calls the collective).  Every rank prints one
``HALRESULT {json}`` line; processes are joined with a bound, and stragglers are killed.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def worker(index: int, scenario: str, nprocs: int, port: int, timeout: float) -> None:
    os.environ.update(RANK=str(index), LOCAL_RANK=str(index), WORLD_SIZE=str(nprocs),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    import torch

    from hal import distributed as hd

    world = hd.init(timeout=timeout)
    if scenario == "checks":
        import checks

        print(checks.report(world, checks.run_checks(world)), flush=True)
        hd.shutdown()
        return
    hd.barrier()  # everybody is up and connected
    last = world.rank == world.world_size - 1
    if last and scenario == "kill":
        os._exit(3)
    if last and scenario == "stall":
        time.sleep(timeout + 30)
        os._exit(0)
    start = time.monotonic()
    try:
        hd.all_reduce(torch.ones(1024))
        hd.barrier()
        result = {"rank": world.rank, "error": None}
    except Exception as exc:
        result = {"rank": world.rank, "error": type(exc).__name__, "message": str(exc),
                  "module": type(exc).__module__}
    result["elapsed"] = time.monotonic() - start
    print("HALRESULT " + json.dumps(result), flush=True)
    os._exit(0)  # skip atexit: destroying a group whose peer is gone is not under test


def main() -> int:
    import torch.multiprocessing as mp

    scenario, nprocs, port, timeout = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), \
        float(sys.argv[4])
    ctx = mp.spawn(worker, args=(scenario, nprocs, port, timeout), nprocs=nprocs, join=False)
    assert ctx is not None
    deadline = time.monotonic() + timeout + 60
    procs = ctx.processes
    # the stalled rank never exits by itself: stop waiting for it once every other rank is done
    while time.monotonic() < deadline and any(p.is_alive() for p in procs[:-1]):
        time.sleep(0.05)
    procs[-1].join(max(0.0, deadline - time.monotonic()) if scenario != "stall" else 0.0)
    codes = []
    for p in procs:
        if p.is_alive():
            p.kill()
        p.join()
        codes.append(p.exitcode)
    print("HALEXIT " + json.dumps(codes), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
