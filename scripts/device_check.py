"""One section of the GPU device check (scripts/device-check.sh runs each under its own timeout).

    python3 scripts/device_check.py SECTION

Each section prints what it measured and ends with one line ``VERDICT: PASS|FAIL <summary>``;
the exit code is 0 for PASS.  Sections and their pass conditions are in docs/hardware-results.md.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GiB = 1 << 30
#: The catalogue's dense bf16 peak of an H200 and what this workplace measured on one (KINDS.md).
H200_BF16_PEAK = 989.0
MEASURED_BF16 = 788.0


class Fail(Exception):
    """A check that did not hold; its message is the section's summary."""


def check(ok: bool, message: str) -> None:
    """Raise Fail(message) unless ``ok``."""
    if not ok:
        raise Fail(message)


def hal_cli(*args: str, timeout: float = 150, env: dict[str, str] | None = None
            ) -> subprocess.CompletedProcess[str]:
    """Run ``python -m hal ARGS`` and echo its output into the section's file."""
    done = subprocess.run([sys.executable, "-m", "hal", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})
    print(f"$ hal {' '.join(args)}  (exit {done.returncode})")
    print(done.stdout[-20000:])
    if done.stderr.strip():
        print("stderr:", done.stderr[-4000:])
    return done


def require_cuda() -> None:
    """Fail at once where no CUDA device is visible (the stand-in test, a misconfigured machine)."""
    import torch

    check(torch.cuda.is_available(), f"no CUDA device: torch {torch.__version__} "
                                     f"(CUDA {torch.version.cuda}) sees none")


# -- sections -----------------------------------------------------------------------------------


def devices() -> str:
    """hal devices and hal doctor: an H200, CC 9.0, bf16/fp16/fp8, cuda selected, no doctor error."""
    text = hal_cli("devices")
    check(text.returncode == 0, f"hal devices exited {text.returncode}")
    done = hal_cli("devices", "--json")
    report = json.loads(done.stdout)
    cuda = next(b for b in report["backends"] if b["name"] == "cuda")
    check(cuda["available"], f"cuda not available: {cuda['reason']}")
    dev = cuda["devices"][0]
    check("H200" in dev["name"], f"device 0 is {dev['name']!r}, not an H200")
    check(str(dev["capability"]).startswith("9.0"), f"capability {dev['capability']!r}, not 9.0")
    dtypes = set(dev["dtypes"])
    check({"bfloat16", "float16"} <= dtypes and any("float8" in d for d in dtypes),
          f"dtypes {sorted(dtypes)} lack bf16/fp16/fp8")
    check(report["selection"]["backend"] == "cuda", f"selected {report['selection']['backend']}")
    doctor = hal_cli("doctor", "--json", timeout=200)
    findings = json.loads(doctor.stdout)["findings"]
    errors = [f"{f['id']}: {f['message']}" for f in findings if f["severity"] == "error"]
    check(not errors, f"doctor errors: {'; '.join(errors)}")
    return (f"{dev['name']}, CC {dev['capability']}, {dev['total_memory'] / GiB:.0f} GiB, "
            f"dtypes {', '.join(sorted(dtypes))}; doctor: {len(findings)} findings, no error")


def probe_precision() -> str:
    """Probing (select, devices' probe) creates no CUDA context; the policy is bf16 with no scaler."""
    import torch

    import hal
    from hal.backends.cuda import CudaBackend

    probe = CudaBackend().probe()
    sel = hal.select()
    initialised = torch.cuda.is_initialized()
    print(f"probe: {probe}\nselect(): {sel.device_string}: {sel.reason}\n"
          f"torch.cuda.is_initialized() after probing: {initialised}")
    check(probe.available and probe.device_count >= 1, f"cuda probe: {probe.reason}")
    check(not initialised, "probing created a CUDA context")
    policy = hal.precision.policy()
    print(f"policy: {policy}")
    check(policy.name == "bf16", f"policy is {policy.name}: {policy.reason}")
    check(not policy.needs_scaler, "bf16 policy asks for a gradient scaler")
    scaler = hal.precision.grad_scaler()
    print(f"grad_scaler(): enabled={scaler.is_enabled()}")
    check(not scaler.is_enabled(), "grad_scaler() is enabled under bf16")
    return f"no context while probing ({probe.reason}); policy bf16, no scaler"


def memory() -> str:
    """hal.memory against NVML and torch.cuda.mem_get_info, around a 4 GiB allocation."""
    require_cuda()
    import pynvml
    import torch

    import hal

    torch.cuda.init()
    before = hal.memory.info()
    block = torch.empty(4 * GiB, dtype=torch.uint8, device="cuda")
    torch.cuda.synchronize()
    info = hal.memory.info()
    free, total = torch.cuda.mem_get_info()
    pynvml.nvmlInit()
    nvml = pynvml.nvmlDeviceGetMemoryInfo(pynvml.nvmlDeviceGetHandleByIndex(0))
    print(f"before: {before}\nafter 4 GiB: {info}\nmem_get_info: free {free} total {total}\n"
          f"NVML: free {nvml.free} total {nvml.total} used {nvml.used}\n{hal.memory.summary()}")
    check(info.allocated - before.allocated == 4 * GiB,
          f"allocated grew by {info.allocated - before.allocated}, not 4 GiB")
    check(info.total == total, f"total {info.total} != mem_get_info's {total}")
    check(abs(info.free - free) <= 256 << 20, f"free {info.free} vs mem_get_info {free}")
    check(abs(info.total - nvml.total) <= GiB, f"total {info.total} vs NVML {nvml.total}")
    check(abs(info.free - nvml.free) <= GiB, f"free {info.free} vs NVML {nvml.free}")
    check(info.peak >= info.allocated, "peak below allocated")
    del block
    return (f"total {info.total / GiB:.1f} GiB (NVML {nvml.total / GiB:.1f}), free within "
            f"{abs(info.free - nvml.free) / 2**20:.0f} MiB of NVML, allocated +4 GiB exact")


def oom() -> str:
    """A real CUDA OOM is recognised by is_oom, and AdaptiveBatcher splits a batch that OOMs."""
    require_cuda()
    import torch

    import hal
    from hal.batching import AdaptiveBatcher

    free, _ = torch.cuda.mem_get_info()
    try:
        torch.empty(free + 64 * GiB, dtype=torch.uint8, device="cuda")
        raise Fail("an allocation beyond free memory succeeded")
    except torch.OutOfMemoryError as exc:
        print(f"real OOM: {str(exc)[:200]}")
        check(hal.is_oom(exc), "hal.is_oom() does not recognise a real CUDA OOM")
    torch.cuda.empty_cache()
    # Each item needs a fifth of free memory: a batch of 8 cannot fit; 4 can (about 80 %).
    per_item = int(torch.cuda.mem_get_info()[0] * 0.2)
    sizes: list[int] = []

    def fn(items: list[int]) -> list[int]:
        sizes.append(len(items))
        block = torch.empty(per_item * len(items), dtype=torch.uint8, device="cuda")
        del block
        return [i * 2 for i in items]

    batcher = AdaptiveBatcher(fn, start=8, max=8)
    out = list(batcher.map(range(16)))
    print(f"batch sizes tried: {sizes}; ooms {batcher.ooms}; ceiling {batcher.ceiling}")
    check(out == [i * 2 for i in range(16)], "outputs lost or reordered")
    check(batcher.ooms >= 1 and sizes[0] == 8 and any(n < 8 for n in sizes[1:]),
          f"no split: sizes {sizes}")
    return f"is_oom on a real OOM; batcher sizes {sizes} ({batcher.ooms} OOM), all 16 out in order"


def bench() -> str:
    """hal bench bf16/fp16/fp32 TFLOPS and copy bandwidth against the catalogue."""
    require_cuda()
    done = hal_cli("bench", "--json", "--dtype", "bf16", "--dtype", "fp16", "--dtype", "fp32",
                   timeout=240)
    data = json.loads(done.stdout)
    rows = {m["dtype"]: m for m in data.get("matmul", [])}
    for name, row in rows.items():
        print(f"{name}: {row.get('status')} {row.get('tflops')} TFLOPS, "
              f"{row.get('percent_of_peak')}% of {row.get('peak_tflops')}")
    for b in data.get("bandwidth", []):
        print(f"{b['what']}: {b.get('status')} {b.get('bytes_per_s', 0) / 1e12:.2f} TB/s")
    bf16 = next((r for n, r in rows.items() if "bf" in n or "bfloat16" in n), None)
    check(bf16 is not None and bf16["status"] == "ok", "no bf16 row measured")
    assert bf16 is not None
    check(bf16["tflops"] > 0.5 * MEASURED_BF16,
          f"bf16 {bf16['tflops']:.0f} TFLOPS, under half the {MEASURED_BF16:.0f} seen here before")
    copy = [b for b in data.get("bandwidth", []) if b.get("status") == "ok"]
    summary = ", ".join(f"{n} {r['tflops']:.0f}" for n, r in rows.items() if r["status"] == "ok")
    bw = ", ".join(f"{b['what']} {b['bytes_per_s'] / 1e12:.2f} TB/s" for b in copy)
    return (f"TFLOPS {summary} (bf16 {bf16['tflops'] / H200_BF16_PEAK:.0%} of the catalogue's "
            f"{H200_BF16_PEAK:.0f}); {bw}; exit {done.returncode}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def nccl() -> str:
    """A torchrun-shaped world of one through hal.distributed: NCCL on the GPU, all_reduce."""
    require_cuda()
    os.environ.update({"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "1",
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port())})
    import torch

    import hal.distributed as hd

    world = hd.init(timeout=120)
    print(f"world: {world}")
    t = torch.full((1024,), 3.0, device=world.device)
    out = hd.all_reduce(t)
    torch.cuda.synchronize()
    import torch.distributed as dist

    backend = dist.get_backend()
    print(f"process group backend: {backend}; all_reduce -> {out[:4].tolist()}")
    hd.shutdown()
    check(world.device.type == "cuda", f"world device {world.device}")
    check("nccl" in str(world.backend) and "nccl" in str(backend), f"backend {world.backend}")
    check(bool((out == 3.0).all()), "all_reduce of a world of one changed the tensor")
    return f"world of one, {world.backend} on {world.device}, all_reduce ok"


def plan() -> str:
    """The planner's figure against torch.cuda.max_memory_allocated for GPT-2 forward in bf16."""
    require_cuda()
    import torch
    import transformers

    from hal.planner import estimate

    sys.path.insert(0, str(ROOT / "bench"))
    import bench_plan

    rows = []
    for name, mode in (("gpt2", "forward"), ("llama-gqa", "generate")):
        cfg = bench_plan.config_of(name)
        batch, prompt, new = bench_plan.RUNS[mode]
        predicted = estimate(dict(cfg), dtype="bf16", batch=batch, context=prompt + new,
                             runtime_bytes=0)
        cfg_dict = dict(cfg)
        model_type = cfg_dict.pop("model_type")
        config = transformers.AutoConfig.for_model(model_type, **cfg_dict)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        model = transformers.AutoModelForCausalLM.from_config(config, torch_dtype=torch.bfloat16)
        model = model.to("cuda").eval()
        ids = torch.randint(0, config.vocab_size, (batch, prompt), device="cuda")
        with torch.no_grad():
            if mode == "forward":
                model(ids)
            else:
                model.generate(ids, max_new_tokens=new, min_new_tokens=new, do_sample=False)
        torch.cuda.synchronize()
        measured = torch.cuda.max_memory_allocated() - base
        ratio = predicted.total / measured
        rows.append((name, mode, predicted.total, measured, ratio))
        print(f"{name} {mode} batch {batch} context {prompt + new}: predicted "
              f"{predicted.total / 2**20:.1f} MiB, max_memory_allocated {measured / 2**20:.1f} MiB, "
              f"ratio {ratio:.3f}")
        del model, ids
    hal_cli("plan", "gpt2", "--dtype", "bf16", "--batch", "1", "--context", "1024", "--cards",
            "none")
    worst = max(rows, key=lambda r: abs(r[4] - 1))
    check(abs(worst[4] - 1) < 0.25, f"{worst[0]} {worst[1]} off by {worst[4] - 1:+.0%}")
    return "; ".join(f"{r[0]} {r[1]} predicted/measured {r[4]:.3f}" for r in rows)


def engine() -> str:
    """The reference engine through hal against plain torch on the GPU (bench/bench_engine.py)."""
    require_cuda()
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "bench_engine.py"), "--pairs", "7",
                           "--new-tokens", "32"], capture_output=True, text=True, timeout=200)
    print(done.stdout[-8000:])
    if done.stderr.strip():
        print("stderr:", done.stderr[-4000:])
    check(done.returncode == 0, f"bench_engine exited {done.returncode}")
    lines = {ln.split(":", 1)[0].strip(): ln.split(":", 1)[1].strip()
             for ln in done.stdout.splitlines() if ":" in ln}
    check(lines.get("device", "").startswith("cuda") or "cuda" in done.stdout.splitlines()[0],
          "the engine did not run on cuda")
    ratio = float(lines["hal / plain"].split()[0])
    return f"hal/plain tokens/s ratio {ratio:.3f} ({lines.get('policy dtype', '?')})"


SECTIONS: dict[str, Callable[[], str]] = {
    "devices": devices, "probe-precision": probe_precision, "memory": memory, "oom": oom,
    "bench": bench, "nccl": nccl, "plan": plan, "engine": engine,
}


def main(argv: list[str]) -> int:
    """Run one section; print its details and a VERDICT line; exit 0 on PASS."""
    if len(argv) != 1 or argv[0] not in SECTIONS:
        print(f"usage: device_check.py {{{','.join(SECTIONS)}}}", file=sys.stderr)
        return 2
    start = time.monotonic()
    try:
        summary = SECTIONS[argv[0]]()
    except Fail as exc:
        print(f"VERDICT: FAIL {exc} ({time.monotonic() - start:.0f} s)")
        return 1
    except Exception as exc:
        import traceback

        traceback.print_exc(file=sys.stdout)
        print(f"VERDICT: FAIL {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
              f" ({time.monotonic() - start:.0f} s)")
        return 1
    print(f"VERDICT: PASS {summary} ({time.monotonic() - start:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
