"""``hal bench`` through a real subprocess on the CPU, with a short time budget."""

from __future__ import annotations

import json
import os
import subprocess
import sys


def hal_bench(*args: str, seconds: str = "0.1") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HAL_DEVICE": "cpu", "HAL_BENCH_SECONDS": seconds}
    return subprocess.run([sys.executable, "-m", "hal", "bench", *args], capture_output=True,
                          text=True, timeout=180, env=env)


def test_bench_measures_matmul_and_bandwidth_on_the_cpu() -> None:
    out = hal_bench("--json", "--dtype", "float32")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["device"] == "cpu" and data["backend"] == "cpu"
    (mm,) = data["matmul"]
    assert mm["dtype"] == "float32" and mm["tflops"] > 0 and mm["calls"] >= 1
    what = [b["what"] for b in data["bandwidth"]]
    assert what[0].startswith("device memory")
    assert all("memcpy within host memory" in w for w in what[1:])
    assert all(b["bytes_per_s"] > 1e7 for b in data["bandwidth"])


def test_bench_plain_text_lists_every_native_dtype() -> None:
    out = hal_bench()
    assert out.returncode == 0, out.stderr
    assert "matmul float32" in out.stdout and "GB/s" in out.stdout
    assert "not in the catalogue" in out.stdout or "% of" in out.stdout


def test_bench_bad_input_exit_2() -> None:
    out = hal_bench("--dtype", "int3")
    assert out.returncode == 2 and "'int3'" in out.stderr
    out = hal_bench(seconds="forever")
    assert out.returncode == 2 and "HAL_BENCH_SECONDS" in out.stderr
