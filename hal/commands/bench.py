"""``hal bench``: measured matmul TFLOPS per native dtype, memory and transfer bandwidth.

Runs on the selected device (``hal.get_device()``), asks the backend for its native dtypes
and synchronisation, and, when the device is in the catalogue, gives each figure as a share
of the card's published peak.  Each measurement is time-boxed so the whole run stays short.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any

#: Seconds each measurement repeats its operation for (after one warm-up call);
#: ``HAL_BENCH_SECONDS`` overrides it (tests use a short one).
BUDGET_S = 1.5
BUDGET_ENV = "HAL_BENCH_SECONDS"
_SHORT = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16", "float8_e4m3fn": "fp8",
          "float8_e4m3fnuz": "fp8", "int8": "int8"}


def add_parser(sub: Any) -> None:
    """Register the ``bench`` command."""
    p = sub.add_parser("bench", help="measure matmul TFLOPS and memory bandwidth on the device")
    p.add_argument("--dtype", action="append", default=None,
                   help="only this dtype (repeatable): float32, float16, bfloat16")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    p.set_defaults(run=run)


def _budget() -> float:
    from hal.errors import ConfigError

    text = os.environ.get(BUDGET_ENV)
    if text is None:
        return BUDGET_S
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value <= 60:
        raise ConfigError(f"{BUDGET_ENV}={text!r} is invalid; expected seconds in (0, 60]")
    return value


def _timed(fn: Callable[[], Any], sync: Callable[[], None], budget: float) -> tuple[float, int]:
    """(seconds a call, calls) of ``fn`` repeated for about ``budget`` seconds after a warm-up."""
    fn()
    sync()
    calls, start = 0, time.perf_counter()
    while True:
        fn()
        calls += 1
        if calls % 2 == 0 or calls == 1:
            sync()
            elapsed = time.perf_counter() - start
            if elapsed >= budget:
                return elapsed / calls, calls


def _matmul_size(device_type: str, dtype_name: str) -> int:
    if device_type == "cpu":
        return 1024 if dtype_name == "float32" else 512
    return 8192


def _dtype_list(backend: Any, index: int, wanted: list[str] | None) -> list[Any]:
    import torch

    from hal.errors import ConfigError

    native = list(backend.dtypes(index))
    if not wanted:
        return native
    out = []
    for name in wanted:
        dtype = getattr(torch, name.removeprefix("torch."), None)
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise ConfigError(f"--dtype {name!r} is not a floating torch dtype; expected one of: "
                              f"{', '.join(str(d).removeprefix('torch.') for d in native)}")
        out.append(dtype)
    return out


def measure(wanted: list[str] | None = None,
            progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run every measurement on the selected device; a JSON-able dict of the results."""
    import torch

    from hal.planner.catalogue import catalogue, match_device
    from hal.selection import select

    budget = _budget()
    sel = select()
    backend, index = sel.backend, sel.index or 0
    device = sel.device
    info = next((d for d in backend.devices() if d.index == index), None)
    name = info.name if info is not None else str(device)
    total = info.total_memory if info is not None else 0
    entry = match_device(name, total, [a for a in catalogue() if a.backend == backend.name])
    on_host = device.type == "cpu"

    def sync() -> None:
        backend.synchronize(index)

    def step(label: str) -> None:
        if progress is not None:
            progress(label)

    results: dict[str, Any] = {"schema": "hal.bench/1", "device": str(device), "name": name,
                               "backend": backend.name, "catalogue": entry.id if entry else None,
                               "matmul": [], "bandwidth": []}
    for dtype in _dtype_list(backend, index, wanted):
        dname = str(dtype).removeprefix("torch.")
        step(f"matmul {dname}")
        n = _matmul_size(device.type, dname)
        a = torch.randn(n, n, device=device).to(dtype)
        b = torch.randn(n, n, device=device).to(dtype)
        seconds, calls = _timed(functools.partial(torch.mm, a, b), sync, budget)
        tflops = 2 * n**3 / seconds / 1e12
        peak = entry.tflops.get(_SHORT.get(dname, dname)) if entry else None
        results["matmul"].append({"dtype": dname, "n": n, "calls": calls, "tflops": tflops,
                                  "peak_tflops": peak,
                                  "percent_of_peak": 100 * tflops / peak if peak else None})
        del a, b

    size = (256 if on_host else 1024) * 2**20
    step("device memory copy")
    src = torch.empty(size, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    src.fill_(1)
    seconds, calls = _timed(functools.partial(dst.copy_, src), sync, budget)
    bw = 2 * size / seconds  # a copy reads and writes every byte
    peak_bw = entry.memory_bandwidth if entry else None
    results["bandwidth"].append({
        "what": "device memory (copy: read + write)", "bytes": size, "bytes_per_s": bw,
        "percent_of_peak": 100 * bw / peak_bw if peak_bw else None})
    del src, dst

    host_size = (128 if on_host else 512) * 2**20
    host = torch.empty(host_size, dtype=torch.uint8)
    if not on_host:
        with contextlib.suppress(RuntimeError):  # no pinned memory: pageable copies
            host = host.pin_memory()
    host.fill_(1)
    dev = torch.empty(host_size, dtype=torch.uint8, device=device)
    where = " (memcpy within host memory: the device is the host)" if on_host else ""
    step("host to device")
    seconds, _ = _timed(lambda: dev.copy_(host, non_blocking=True), sync, budget)
    results["bandwidth"].append({"what": "host to device" + where, "bytes": host_size,
                                 "bytes_per_s": host_size / seconds, "percent_of_peak": None})
    step("device to host")
    seconds, _ = _timed(lambda: host.copy_(dev, non_blocking=True), sync, budget)
    results["bandwidth"].append({"what": "device to host" + where, "bytes": host_size,
                                 "bytes_per_s": host_size / seconds, "percent_of_peak": None})
    return results


def _lines(data: dict[str, Any]) -> list[str]:
    cat = f"catalogue entry {data['catalogue']}" if data["catalogue"] else \
        "not in the catalogue: no peak to compare with"
    lines = [f"device: {data['device']} ({data['backend']}) {data['name']}; {cat}"]
    for m in data["matmul"]:
        pct = f", {m['percent_of_peak']:.0f}% of {m['peak_tflops']:g} peak" \
            if m["percent_of_peak"] is not None else ""
        lines.append(f"  matmul {m['dtype']:<9} {m['n']}x{m['n']}: {m['tflops']:8.3f} TFLOPS{pct}")
    for b in data["bandwidth"]:
        pct = f", {b['percent_of_peak']:.0f}% of peak" if b["percent_of_peak"] is not None else ""
        lines.append(f"  {b['what']}: {b['bytes_per_s'] / 1e9:.2f} GB/s{pct}")
    return lines


def run(args: argparse.Namespace) -> int:
    """Measure and print; on a terminal, with a progress bar."""
    if sys.stdout.isatty() and not args.json:
        from rich.progress import Progress

        with Progress(transient=True) as bar:
            task = bar.add_task("bench", total=None)
            data = measure(args.dtype, lambda label: bar.update(task, description=label))
    else:
        data = measure(args.dtype)
    if args.json:
        json.dump(data, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        sys.stdout.write("\n".join(_lines(data)) + "\n")
    return 0
