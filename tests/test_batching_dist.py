"""find_batch_size in a real 2-process gloo group: the ranks agree on one size."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from helpers import ISOLATED_VARS

pytestmark = pytest.mark.slow

WORKER = textwrap.dedent("""
    import datetime, json, sys
    import torch
    import torch.distributed as dist

    rank, port, capacity = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=2, timeout=datetime.timedelta(seconds=60))
    from hal.batching import find_batch_size

    calls = []

    def step(batch_size):
        calls.append(batch_size)
        # beyond this rank's capacity, ask the real CPU allocator for petabytes: it refuses
        torch.empty(1 << 50 if batch_size > capacity else batch_size, dtype=torch.uint8)

    size = find_batch_size(step, start=256, margin=0.0)
    print(json.dumps({"rank": rank, "size": size, "calls": calls}))
    dist.destroy_process_group()
""")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_ranks_agree_on_the_size_the_smallest_rank_can_run(tmp_path: Path) -> None:
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = {k: v for k, v in os.environ.items() if k not in ISOLATED_VARS}
    env["OMP_NUM_THREADS"] = "1"
    port = _free_port()
    capacities = {0: 100, 1: 37}
    procs = [subprocess.Popen([sys.executable, str(script), str(r), str(port), str(c)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for r, c in capacities.items()]
    results = []
    try:
        for p in procs:
            out, err = p.communicate(timeout=120)
            assert p.returncode == 0, err[-2000:]
            results.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    sizes = {r["size"] for r in results}
    assert sizes == {37}, results
    assert results[0]["calls"] == results[1]["calls"]  # same sizes tried, in lockstep
