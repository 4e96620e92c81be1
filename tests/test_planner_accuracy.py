"""The estimate against a real run: a transformers model built from its config, on CPU.

One real model in a fresh subprocess (bench/bench_plan.py --child), measured as the
process's RSS high-water mark above its baseline; the full table is in docs/planner.md.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from hal.planner import estimate

BENCH = Path(__file__).resolve().parents[1] / "bench" / "bench_plan.py"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("transformers") is None,
                       reason="needs transformers (the test extra)"),
]


def _load_bench() -> object:
    spec = importlib.util.spec_from_file_location("bench_plan", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.timeout(240)
def test_llama_gqa_generate_loop_is_predicted_within_10_percent() -> None:
    bench = _load_bench()
    out = subprocess.run([sys.executable, str(BENCH), "--child", "llama-gqa", "generate"],
                         capture_output=True, text=True, timeout=220, check=True)
    row = json.loads(out.stdout.strip().splitlines()[-1])
    batch, prompt, new = bench.RUNS["generate"]  # type: ignore[attr-defined]
    predicted = estimate(bench.MODELS["llama-gqa"], dtype="fp32",  # type: ignore[attr-defined]
                         batch=batch, context=prompt + new, runtime_bytes=0)
    assert predicted.params_total == row["params"]  # the config was counted right
    assert abs(predicted.total / row["measured"] - 1) < 0.10, (predicted.total, row)
