"""A real model forward under an address-space limit: the batcher recovers with right answers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from helpers import ISOLATED_VARS

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_AS, /proc")]

SCRIPT = textwrap.dedent("""
    import json, resource
    import torch
    torch.set_num_threads(1)
    # oneDNN allocates its primitives outside torch's allocator, and under an address-space
    # limit fails with "could not create a primitive", which also means "unsupported"; keep
    # the failure in the CPU allocator, whose message is unambiguous.
    torch.backends.mkldnn.enabled = False
    import hal
    from hal.batching import AdaptiveBatcher, find_batch_size

    torch.manual_seed(0)
    hidden = 16384  # 64 KiB of activations per row and layer
    model = torch.nn.Sequential(torch.nn.Linear(32, hidden), torch.nn.ReLU(),
                                torch.nn.Linear(hidden, 4)).eval()
    x = torch.randn(1024, 32)
    with torch.inference_mode():
        reference = torch.cat([model(x[i:i + 32]) for i in range(0, len(x), 32)])
    hal.memory.info(); hal.is_oom(RuntimeError()); hal.select()  # load all before the limit

    def vm_size():
        for line in open("/proc/self/status"):
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    budget = 48 << 20
    resource.setrlimit(resource.RLIMIT_AS, (vm_size() + budget, resource.RLIM_INFINITY))

    out = {}
    try:
        with torch.inference_mode():
            model(x)  # the whole batch: about 128 MiB of activations
        out["plain"] = "fits"
    except RuntimeError as exc:
        out["plain"] = str(exc).splitlines()[0]
        out["plain_is_oom"] = hal.is_oom(exc)

    def run(rows):
        with torch.inference_mode():
            return list(model(torch.stack(rows)))

    batcher = AdaptiveBatcher(run, start=1024, max=1024, memory_fraction=lambda: 0.5)
    got = torch.stack(list(batcher(list(x))))
    out["batched_ok"] = bool(torch.allclose(got, reference, atol=1e-5))
    out["ooms"] = batcher.ooms
    out["settled"] = batcher.size

    def step(bs):
        with torch.inference_mode():
            model(x[:bs])
    out["found"] = find_batch_size(step, start=1024)
    print(json.dumps(out))
""")


def test_batcher_recovers_from_a_real_cpu_oom(tmp_path: Path) -> None:
    script = tmp_path / "real_oom.py"
    script.write_text(SCRIPT)
    env = {k: v for k, v in os.environ.items() if k not in ISOLATED_VARS}
    env.update(OMP_NUM_THREADS="1", MALLOC_ARENA_MAX="1")
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "DefaultCPUAllocator" in result["plain"], result
    assert result["plain_is_oom"] is True
    assert result["batched_ok"] is True
    assert result["ooms"] >= 1 and 1 <= result["settled"] < 1024
    assert 1 <= result["found"] < 1024
