"""Planner accuracy and speed: predicted against measured peak memory of real models, on CPU.

    python bench/bench_plan.py            # the accuracy table (docs/planner.md) and timings
    python bench/bench_plan.py --child gpt2 forward   # one measurement, printed as JSON
    python bench/bench_plan.py --timing-only          # hal plan --no-local against 0.2 s

Each measurement runs in a fresh subprocess: real ``transformers`` models built from config
objects with random weights (no downloads), a forward pass or a generate loop, measured as
the process's RSS high-water mark (VmHWM, reset after imports) minus the RSS before the model
was built.  The child runs with glibc's mmap threshold pinned (``MALLOC_MMAP_THRESHOLD_``, see
:data:`PINNED_ALLOCATOR`): by default glibc raises the threshold to the largest block freed (up to
32 MiB), after which multi-MiB tensors come from the heap and freed holes stay resident, so the
RSS peak drifts 0-26 % above the live tensors from run to run; pinned, freed tensors go back to
the OS and the RSS peak is the tensors' peak, the CPU counterpart of ``max_memory_allocated``.
``--glibc-default`` measures without the pin.  The estimate is
``hal.planner.estimate(config, dtype="fp32", runtime_bytes=0)``: a CPU has no runtime context.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from typing import Any

#: Real architectures, sized 100-300M parameters, as Hugging Face config fields.
MODELS: dict[str, dict[str, Any]] = {
    "llama-gqa": {"model_type": "llama", "hidden_size": 768, "intermediate_size": 2048,
                  "num_hidden_layers": 12, "num_attention_heads": 12, "num_key_value_heads": 4,
                  "vocab_size": 32000, "tie_word_embeddings": False,
                  "max_position_embeddings": 4096},
    "qwen2": {"model_type": "qwen2", "hidden_size": 896, "intermediate_size": 4864,
              "num_hidden_layers": 8, "num_attention_heads": 14, "num_key_value_heads": 2,
              "vocab_size": 151936, "tie_word_embeddings": True,
              "max_position_embeddings": 32768, "use_sliding_window": False},
    "mistral-swa": {"model_type": "mistral", "hidden_size": 1024, "intermediate_size": 3584,
                    "num_hidden_layers": 8, "num_attention_heads": 16,
                    "num_key_value_heads": 8, "vocab_size": 32000,
                    "tie_word_embeddings": False, "sliding_window": 4096,
                    "max_position_embeddings": 32768},
    "gpt2": {"model_type": "gpt2", "n_embd": 768, "n_layer": 12, "n_head": 12,
             "vocab_size": 50257, "n_positions": 1024},
}
#: The same architectures run with eager attention (``attn_implementation="eager"``), which
#: materialises the score matrix; predicted with ``attention="materialized"``.
EAGER: dict[str, str] = {"gpt2-eager": "gpt2", "llama-gqa-eager": "llama-gqa"}
#: Child environment: glibc's mmap threshold fixed at 128 KiB (its initial value), which also
#: turns off the dynamic raise, so every tensor above it is mmapped and unmapped on free.
PINNED_ALLOCATOR: dict[str, str] = {"MALLOC_MMAP_THRESHOLD_": "131072"}
#: (mode, batch, prompt tokens, new tokens)
RUNS: dict[str, tuple[int, int, int]] = {
    "forward": (4, 512, 0),
    "generate": (2, 128, 32),
}


def _rss_and_hwm() -> tuple[int, int]:
    rss = hwm = 0
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) * 1024
            elif line.startswith("VmHWM:"):
                hwm = int(line.split()[1]) * 1024
    return rss, hwm


def _run(model: Any, ids: Any, mode: str, new: int) -> None:
    import torch

    with torch.no_grad():
        if mode == "forward":
            model(ids, logits_to_keep=1, use_cache=True)
        else:
            model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new,
                           min_new_tokens=new, do_sample=False, pad_token_id=0)


def config_of(name: str, layers: int | None = None) -> dict[str, Any]:
    """Model ``name``'s config fields, with ``layers`` decoder layers when given."""
    cfg = dict(MODELS[EAGER.get(name, name)])
    if layers is not None:
        cfg["n_layer" if "n_layer" in cfg else "num_hidden_layers"] = layers
    return cfg


def child(name: str, mode: str, layers: int | None = None) -> dict[str, Any]:
    """Build model ``name``, run ``mode`` once, return measured peak bytes above baseline."""
    import torch
    import transformers

    torch.manual_seed(0)
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    attn = "eager" if name in EAGER else "sdpa"
    cfg_dict = config_of(name, layers)
    model_type = cfg_dict.pop("model_type")
    config = transformers.AutoConfig.for_model(model_type, **cfg_dict)
    batch, prompt, new = RUNS[mode]
    ids = torch.randint(0, config.vocab_size, (batch, prompt))
    # Warm-up: a one-layer, narrow copy of the same architecture runs the same call first, so
    # the modeling code's imports, kernels and thread pools are in the baseline, not the figure.
    tiny = dict(cfg_dict)
    for key in ("num_hidden_layers", "n_layer"):
        if key in tiny:
            tiny[key] = 1
    tiny_model = transformers.AutoModelForCausalLM.from_config(
        transformers.AutoConfig.for_model(model_type, **tiny), attn_implementation=attn)
    _run(tiny_model, ids[:, :16], mode, 2)
    del tiny_model
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # VmHWM := VmRSS
    base, _ = _rss_and_hwm()
    model = transformers.AutoModelForCausalLM.from_config(config, attn_implementation=attn)
    model.eval()
    built, build_peak = _rss_and_hwm()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # random init's temporaries are not part of a run: restart the high-water
    _run(model, ids, mode, new)
    _, hwm = _rss_and_hwm()
    params = sum(p.numel() for p in model.parameters())
    return {"model": name, "mode": mode, "batch": batch, "context": prompt + new,
            "measured": hwm - base, "weights_rss": built - base, "build_peak": build_peak - base,
            "params": params}


def predict(name: str, mode: str, layers: int | None = None) -> int:
    """The planner's figure for the same run."""
    from hal.planner import estimate

    batch, prompt, new = RUNS[mode]
    return estimate(config_of(name, layers), dtype="fp32", batch=batch,
                    context=prompt + new, runtime_bytes=0,
                    attention="materialized" if name in EAGER else "fused").total


def child_env(glibc_default: bool = False) -> dict[str, str]:
    """The child's environment: this one with the allocator pinned (or glibc's defaults)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    return env if glibc_default else {**env, **PINNED_ALLOCATOR}


def measure(name: str, mode: str, glibc_default: bool = False) -> dict[str, Any]:
    """Run :func:`child` in a fresh interpreter and add the prediction and the error."""
    out = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--child", name, mode],
        capture_output=True, text=True, check=True, timeout=300,
        env=child_env(glibc_default),
    )
    row: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    row["predicted"] = predict(name, mode)
    row["error"] = row["predicted"] / row["measured"] - 1
    return row


#: ``hal plan`` runs timed by :func:`plan_timing`: the issue's examples.
TIMED = (["deepseek-r1-distill-qwen-14b", "--dtype", "int4", "--context", "32768"],
         ["deepseek-r1", "--dtype", "fp8", "--context", "32768"],
         ["deepseek-r1", "--dtype", "fp8", "--context", "32768", "--rank", "speed"])
#: The goal for ``hal plan --no-local``: an answer in under 0.2 s of wall time.
GOAL_S = 0.2


def _best(argv: list[str], runs: int = 5, env: dict[str, str] | None = None) -> float:
    best = float("inf")
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(argv, capture_output=True, check=True, env=env)
        best = min(best, time.perf_counter() - t0)
    return best


def plan_timing() -> tuple[float, float]:
    """Wall seconds (best of 5) of ``hal plan ... --no-local`` and of the same with the local
    fit; prints each example, the interpreter's own start (``python -c pass``) and the plan
    computed in-process, with the ratio to the 0.2 s goal."""
    import tempfile

    # as installed: bytecode cached (a checkout run with PYTHONDONTWRITEBYTECODE=1 compiles
    # every module on every start, ~0.1 s more); the cache goes to a temporary folder
    cache = tempfile.mkdtemp(prefix="hal-bench-pyc-")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = cache
    floor = _best([sys.executable, "-c", "pass"], env=env)
    print(f"\npython -c pass: {floor:.3f} s (the floor every command pays)")
    worst = 0.0
    for args in TIMED:
        argv = [sys.executable, "-m", "hal", "plan", *args, "--no-local"]
        subprocess.run(argv, capture_output=True, check=True, env=env)  # writes the bytecode
        t = _best(argv, env=env)
        cold = _best(argv, runs=3, env={k: v for k, v in env.items()
                                        if k != "PYTHONPYCACHEPREFIX"}
                     | {"PYTHONDONTWRITEBYTECODE": "1"})
        worst = max(worst, t)
        print(f"hal plan {' '.join(args)} --no-local: {t:.3f} s = {t / GOAL_S:.2f} of the "
              f"{GOAL_S} s goal (no bytecode cache: {cold:.3f} s)")
    from hal.planner.planning import plan

    t0 = time.perf_counter()
    plan("deepseek-r1", "fp8", context=32768, local=False)
    print(f"plan('deepseek-r1', 'fp8', context=32768, local=False) in-process, first call: "
          f"{time.perf_counter() - t0:.3f} s")
    local = _best([sys.executable, "-m", "hal", "plan", *TIMED[0]], runs=3)
    return worst, local


def main() -> int:
    """Print the accuracy table as markdown and the `hal plan` timings."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--child", nargs=2, metavar=("MODEL", "MODE"))
    parser.add_argument("--layers", type=int, default=None,
                        help="with --child: build the model with this many layers (tests)")
    parser.add_argument("--only", nargs="*", default=None, help="measure only these models")
    parser.add_argument("--no-timing", action="store_true")
    parser.add_argument("--timing-only", action="store_true",
                        help="only time hal plan (the 0.2 s goal of --no-local)")
    parser.add_argument("--glibc-default", action="store_true",
                        help="measure with glibc's default (dynamic) mmap threshold")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(*args.child, layers=args.layers)))
        return 0
    if args.timing_only:
        no_local, local = plan_timing()
        print(f"slowest --no-local: {no_local:.3f} s; with the local fit: {local:.3f} s")
        return 0
    mib = 2**20
    print("| model | params | run | batch x context | predicted | measured | error |")
    print("|---|---|---|---|---|---|---|")
    for name in args.only or [*MODELS, *EAGER]:
        for mode in RUNS if name in MODELS else ["forward"]:
            r = measure(name, mode, args.glibc_default)
            print(f"| {name} | {r['params'] / 1e6:.0f}M | {mode} | {r['batch']} x {r['context']} "
                  f"| {r['predicted'] / mib:.0f} MiB | {r['measured'] / mib:.0f} MiB "
                  f"| {r['error']:+.1%} |", flush=True)
    if not args.no_timing:
        no_local, local = plan_timing()
        print(f"slowest --no-local: {no_local:.3f} s; with the local fit: {local:.3f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
