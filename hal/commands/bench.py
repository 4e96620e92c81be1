"""``hal bench``: measured matmul TFLOPS per dtype the device runs, and memory bandwidth.

Runs on the selected device.  Each dtype is probed with a tiny matmul first (fp8 through
``torch._scaled_mm``, the only fp8 GEMM torch has on accelerators), so a dtype the device
cannot multiply is a skipped row with the reason, never a crash.  Matmul sizes double until
the rate stops rising, and the size that reached it is reported.  Every dtype's sweep and every
copy has a deadline that no call starts after, so a run ends within its budget plus one call
per measurement however slow a kernel is.  A failing measurement is a
row with its reason; rows already measured are kept.  ``--save`` records the figures for
``hal plan`` (hal.calibration).  When the device is in the catalogue, each figure is also a
share of the card's published peak.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from hal.errors import describe_exception

if TYPE_CHECKING:
    from hal.dtypes import DType

#: Seconds each matmul size or copy repeats for (after one warm-up call); a dtype's whole sweep
#: has twice this a size (SWEEP_SHARE), a copy twice this; ``HAL_BENCH_SECONDS`` overrides it.
BUDGET_S = 0.5
BUDGET_ENV = "HAL_BENCH_SECONDS"
#: A dtype's sweep may take this many budgets a size (each size's budget, and as much again for
#: warm-up calls and operands); no call starts after that.
SWEEP_SHARE = 2
#: The next size must beat the best rate so far by this factor, else the sweep stops.
GROWTH = 1.05
#: Matmul sizes tried in turn: a host CPU saturates near 512, a large accelerator near 8192.
HOST_SIZES = (256, 512, 1024, 2048)
DEVICE_SIZES = (1024, 2048, 4096, 8192, 16384)
SCHEMA = "hal.bench/2"


def add_parser(sub: Any) -> None:
    """Register the ``bench`` command."""
    from hal import dtypes

    p = sub.add_parser("bench", help="measure matmul TFLOPS and memory bandwidth on the device")
    p.add_argument("--dtype", action="append", default=None,
                   help="only this dtype (repeatable): " + ", ".join(dtypes.names(dtypes.MATMUL))
                   + " or a torch name such as bfloat16")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    p.add_argument("--save", action="store_true",
                   help="record the measured TFLOPS and copy bandwidth for 'hal plan' "
                   "(in $HAL_CACHE_DIR or ~/.cache/hal/calibration.json)")
    p.set_defaults(run=run)


def _budget() -> float:
    from hal.parse import parse_float

    text = os.environ.get(BUDGET_ENV)
    if text is None:
        return BUDGET_S
    return parse_float(BUDGET_ENV, text, lo=0.0, hi=60.0, lo_inclusive=False)


def _now() -> float:
    """The clock every deadline is read from (one name, so a test can stand in a kernel's time)."""
    return time.perf_counter()


def _timed(fn: Callable[[], Any], sync: Callable[[], None], budget: float,
           deadline: float | None = None) -> tuple[float, int]:
    """(seconds a call, calls) of ``fn`` repeated for about ``budget`` seconds after a warm-up.

    No call starts once ``deadline`` (a ``_now()`` time) has passed, and calls run in batches
    sized by the time a call takes to fit what is left, so a slow kernel (fp8 on a host CPU:
    seconds a call) overruns the deadline by at most one call; when even the warm-up ended past
    it, that one call is the measurement.
    """
    start = _now()
    fn()
    sync()
    first = _now() - start
    end = start + first + budget if deadline is None else min(start + first + budget, deadline)
    calls, begin = 0, _now()
    per_call = first
    while True:
        now = _now()
        if now >= end and (calls >= 2 or (deadline is not None and now >= deadline)):
            break
        left = max(end - now, 0.0)
        batch = max(1, min(1 << 16, int(left / per_call) if per_call > 0 else 1 << 16))
        for _ in range(batch):
            fn()
        sync()
        calls += batch
        per_call = (_now() - begin) / calls
    if calls == 0:
        return first, 1
    return (_now() - begin) / calls, calls


def _checked_dtypes(backend: Any, index: int) -> list[Any]:
    """``backend.dtypes(index)`` through the plugin boundary; HalError when it gives no list."""
    from hal.errors import PluginError
    from hal.validate import call_plugin, check_dtypes

    outcome = call_plugin(lambda: backend.dtypes(index), f"backend {backend.name!r}: dtypes()")
    try:
        if outcome.state == "ok":
            return check_dtypes(outcome.value)
        problem = outcome.describe("dtypes()")
    except ValueError as exc:
        problem = str(exc)
    raise PluginError(f"backend {backend.name!r}: {problem}; hal bench needs the dtypes it "
                      "runs (`hal doctor` says more)", plugin=backend.name)


def _wanted(backend: Any, index: int, wanted: list[str] | None) -> list[tuple[DType, bool]]:
    """(dtype, native) pairs to measure: the device's native matmul dtypes, or those asked for."""
    from hal import dtypes
    from hal.errors import PluginError

    try:
        native = [dtypes.lookup(d) for d in _checked_dtypes(backend, index)]
    except PluginError:
        if not wanted:
            raise
        native = []  # the dtypes asked for are measured; none is known to be native
    native_set = {d.short for d in native if d is not None}
    if not wanted:
        return [(d, True) for d in native if d is not None and d.has(dtypes.MATMUL)]
    out: list[tuple[DType, bool]] = []
    for name in wanted:
        entry = dtypes.parse(name, role=dtypes.MATMUL, what="--dtype")
        if all(entry is not e for e, _ in out):
            out.append((entry, entry.short in native_set))
    return out


def _builder(torch: Any, device: Any, entry: DType) -> Callable[[int], Callable[[], Any]]:
    """A function making an ``n x n`` matmul closure in ``entry``'s dtype on ``device``."""
    from hal import dtypes

    dtype = dtypes.to_torch(entry)
    if entry.kind == "fp8":
        scaled_mm = getattr(torch, "_scaled_mm", None)
        if scaled_mm is None:
            raise RuntimeError(f"this torch {torch.__version__} has no torch._scaled_mm, the "
                               "only fp8 matmul it could run")

        def fp8(n: int) -> Callable[[], Any]:
            a = torch.randn(n, n, device=device).to(dtype)
            b = torch.randn(n, n, device=device).to(dtype).t()  # column-major, as fp8 GEMMs want
            one = torch.ones((), dtype=torch.float32, device=device)
            return lambda: scaled_mm(a, b, scale_a=one, scale_b=one, out_dtype=torch.bfloat16)

        return fp8

    def plain(n: int) -> Callable[[], Any]:
        a = torch.randn(n, n, device=device).to(dtype)
        b = torch.randn(n, n, device=device).to(dtype)
        return lambda: torch.mm(a, b)

    return plain


def _matmul_row(torch: Any, device: Any, entry: DType, native: bool, sync: Callable[[], None],
                budget: float, peaks: dict[str, float], step: Callable[[str], None]) -> dict[str, Any]:
    """One dtype: probe with a 16x16 matmul, then sweep sizes until the rate stops rising."""
    row: dict[str, Any] = {"dtype": entry.short, "torch_dtype": entry.torch_name, "native": native,
                           "status": "ok", "reason": None, "n": None, "tflops": None, "calls": 0,
                           "sizes": [], "peak_tflops": peaks.get(entry.kind),
                           "percent_of_peak": None}
    how = "torch._scaled_mm" if entry.kind == "fp8" else "torch.mm"
    try:
        step(f"matmul {entry.short}: probe")
        build = _builder(torch, device, entry)
        build(16)()
        sync()
    except Exception as exc:  # any refusal means "this device cannot"
        row.update(status="skipped",
                   reason=f"{how} refused {entry.short} here ({describe_exception(exc, 200)})")
        return row
    sizes = HOST_SIZES if device.type == "cpu" else DEVICE_SIZES
    deadline = _now() + SWEEP_SHARE * budget * len(sizes)  # the whole sweep's share of the run
    best = 0.0
    last: tuple[int, float] | None = None  # (n, seconds a call) of the size before
    for n in sizes:
        if last is not None and last[1] >= budget:  # a slow kernel (not a loaded machine's
            guess = last[1] * (n / last[0]) ** 3     # jitter): a call grows as n**3, and one
            if _now() + guess > deadline:            # that cannot end in time is not started
                row["reason"] = (f"stopped before {n}x{n}: a call would take about {guess:.2g} s, "
                                 "past this dtype's time budget")
                break
        step(f"matmul {entry.short} {n}x{n}")
        try:  # the operands live only as long as this call
            seconds, calls = _timed(build(n), sync, budget, deadline)
        except Exception as exc:  # out of memory at a size: keep the smaller ones
            if not row["sizes"]:
                row.update(status="failed", reason=f"{how} at {n}x{n}: {describe_exception(exc, 200)}")
                return row
            row["reason"] = f"stopped before {n}x{n}: {describe_exception(exc, 200)}"
            break
        rate = 2 * n**3 / seconds / 1e12
        row["sizes"].append({"n": n, "tflops": rate, "calls": calls})
        last = (n, seconds)
        if rate > best:
            row.update(n=n, tflops=rate, calls=calls)
        if best and rate < best * GROWTH:
            break
        best = max(best, rate)
        if _now() >= deadline:
            if n != sizes[-1]:
                row["reason"] = f"stopped after {n}x{n}: this dtype's time budget is spent"
            break
    if row["peak_tflops"]:
        row["percent_of_peak"] = 100 * row["tflops"] / row["peak_tflops"]
    return row


def _bandwidth_row(what: str, size: int, run_copy: Callable[[], tuple[float, int]],
                   factor: int, peak: float | None) -> dict[str, Any]:
    row: dict[str, Any] = {"what": what, "bytes": size, "status": "ok", "reason": None,
                           "bytes_per_s": None, "percent_of_peak": None}
    try:
        seconds, _ = run_copy()
    except Exception as exc:  # keep the other rows
        row.update(status="failed", reason=describe_exception(exc, 200))
        return row
    row["bytes_per_s"] = factor * size / seconds
    if peak:
        row["percent_of_peak"] = 100 * row["bytes_per_s"] / peak
    return row


def _catalogue_entry(backend: Any, name: str, total: int) -> Any:
    try:
        from hal.planner.catalogue import catalogue, match_device

        return match_device(name, total, [a for a in catalogue() if a.backend == backend.name])
    except Exception:  # a broken catalogue plugin must not stop a measurement
        return None


def measure(wanted: list[str] | None = None, progress: Callable[[str], None] | None = None,
            results: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run every measurement on the selected device into ``results`` (a JSON-able dict).

    Rows are appended as they finish, so a caller holding ``results`` keeps them when a later
    step is interrupted.
    """
    import torch

    from hal import dtypes
    from hal.selection import select

    budget = _budget()
    sel = select()
    backend, index = sel.backend, sel.index or 0
    device = sel.device
    plan = _wanted(backend, index, wanted)
    from hal.validate import checked_devices

    # A backend that cannot describe its device (raises, hangs, garbage) can still be measured.
    info = next((d for d in checked_devices(backend) or () if d.index == index), None)
    name = info.name if info is not None else str(device)
    total = info.total_memory if info is not None else 0
    entry = _catalogue_entry(backend, name, total)
    peaks: dict[str, float] = {}
    for key, value in (entry.tflops.items() if entry is not None else ()):
        known = dtypes.lookup(key)
        peaks[known.kind if known is not None else key] = value
    on_host = device.type == "cpu"
    results = {} if results is None else results
    results.update({"schema": SCHEMA, "device": str(device), "name": name,
                    "backend": backend.name, "catalogue": entry.id if entry else None,
                    "matmul": [], "bandwidth": []})

    def sync() -> None:
        backend.synchronize(index)

    def step(label: str) -> None:
        if progress is not None:
            progress(label)

    for dtype_entry, native in plan:
        results["matmul"].append(
            _matmul_row(torch, device, dtype_entry, native, sync, budget, peaks, step))

    size = (256 if on_host else 1024) * 2**20
    step("device memory copy")

    def device_copy() -> tuple[float, int]:
        src = torch.empty(size, dtype=torch.uint8, device=device)
        dst = torch.empty_like(src)
        src.fill_(1)
        return _timed(lambda: dst.copy_(src), sync, budget, _now() + 2 * budget)

    results["bandwidth"].append(_bandwidth_row(  # a copy reads and writes every byte
        "device memory (copy: read + write)", size, device_copy, 2,
        entry.memory_bandwidth if entry else None))

    host_size = (128 if on_host else 512) * 2**20
    where = " (memcpy within host memory: the device is the host)" if on_host else ""
    buffers: dict[str, Any] = {}

    def pair() -> tuple[Any, Any]:
        if not buffers:
            host = torch.empty(host_size, dtype=torch.uint8)
            if not on_host:
                with contextlib.suppress(RuntimeError):  # no pinned memory: pageable copies
                    host = host.pin_memory()
            host.fill_(1)
            buffers.update(host=host, dev=torch.empty(host_size, dtype=torch.uint8, device=device))
        return buffers["host"], buffers["dev"]

    def to_device() -> tuple[float, int]:
        host, dev = pair()
        return _timed(lambda: dev.copy_(host, non_blocking=True), sync, budget,
                      _now() + 2 * budget)

    def to_host() -> tuple[float, int]:
        host, dev = pair()
        return _timed(lambda: host.copy_(dev, non_blocking=True), sync, budget,
                      _now() + 2 * budget)

    step("host to device")
    results["bandwidth"].append(_bandwidth_row("host to device" + where, host_size, to_device,
                                               1, None))
    step("device to host")
    results["bandwidth"].append(_bandwidth_row("device to host" + where, host_size, to_host,
                                               1, None))
    buffers.clear()
    return results


def steps(wanted: list[str] | None) -> int:
    """How many progress steps a run has (for the progress bar's total)."""
    from hal.selection import select

    sel = select()
    plan = _wanted(sel.backend, sel.index or 0, wanted)
    sizes = HOST_SIZES if sel.device.type == "cpu" else DEVICE_SIZES
    return len(plan) * (1 + len(sizes)) + 3


def _lines(data: dict[str, Any]) -> list[str]:
    if not data.get("device"):
        return []
    cat = f"catalogue entry {data['catalogue']}" if data.get("catalogue") else \
        "not in the catalogue: no peak to compare with"
    lines = [f"device: {data['device']} ({data['backend']}) {data['name']}; {cat}"]
    for m in data.get("matmul", []):
        head = f"  matmul {m['dtype']:<12}"
        if m["status"] != "ok":
            lines.append(f"{head} {m['status']}: {m['reason']}")
            continue
        pct = f", {m['percent_of_peak']:.0f}% of {m['peak_tflops']:g} peak" \
            if m["percent_of_peak"] is not None else ""
        sweep = ", ".join(f"{s['n']}: {s['tflops']:.3g}" for s in m["sizes"])
        note = "" if m["native"] else " (not native here)"
        lines.append(f"{head} {m['n']}x{m['n']}: {m['tflops']:8.3f} TFLOPS{pct}{note} "
                     f"[sizes tried: {sweep}]")
    for b in data.get("bandwidth", []):
        if b["status"] != "ok":
            lines.append(f"  {b['what']}: {b['status']}: {b['reason']}")
            continue
        pct = f", {b['percent_of_peak']:.0f}% of peak" if b["percent_of_peak"] is not None else ""
        lines.append(f"  {b['what']}: {b['bytes_per_s'] / 1e9:.2f} GB/s{pct}")
    if data.get("interrupted"):
        lines.append("  (interrupted: the rows above were measured)")
    if data.get("calibration"):
        lines.append(f"saved calibration: {data['calibration']}")
    return lines


def _save(data: dict[str, Any]) -> str | None:
    """Record the measured rows for ``hal plan``; the file's path, or None if nothing was measured."""
    from hal import calibration

    tflops = {m["dtype"]: m["tflops"] for m in data["matmul"] if m["status"] == "ok"}
    copy = next((b for b in data["bandwidth"] if b["what"].startswith("device memory")), None)
    bandwidth = copy["bytes_per_s"] if copy is not None and copy["status"] == "ok" else None
    if not tflops and bandwidth is None:
        return None
    calibration.save(data["backend"], data["name"], tflops, bandwidth)
    return str(calibration.path())


def run(args: argparse.Namespace) -> int:
    """Measure and print (rows measured before a failure or Ctrl-C are printed too)."""
    data: dict[str, Any] = {}
    interrupted = False
    show = not args.json and sys.stdout.isatty() and sys.stderr.isatty()
    try:
        if show:
            from rich.console import Console
            from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

            total = steps(args.dtype)
            with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                          TimeElapsedColumn(), console=Console(stderr=True),
                          transient=True) as bar:
                task = bar.add_task("bench", total=total)

                def advance(label: str) -> None:
                    bar.update(task, description=label, advance=1)

                measure(args.dtype, advance, data)
        else:
            measure(args.dtype, None, data)
    except KeyboardInterrupt:
        interrupted = True
        data["interrupted"] = True
    from hal.errors import HalError

    save_error = None
    if args.save and not interrupted and data.get("matmul") is not None:
        try:
            data["calibration"] = _save(data)
        except HalError as exc:  # the rows are printed all the same, then the error
            save_error = str(exc)
    if args.json:
        json.dump(data, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        sys.stdout.write("".join(line + "\n" for line in _lines(data)))
    if interrupted:
        sys.stdout.flush()
        sys.stderr.write("hal: interrupted\n")
        return 130
    if save_error is not None:
        sys.stdout.flush()
        sys.stderr.write(f"hal: error: {save_error}\n")
        return 1
    failed = [r for r in (*data.get("matmul", ()), *data.get("bandwidth", ()))
              if r["status"] == "failed"]
    if failed:
        sys.stdout.flush()
        sys.stderr.write(f"hal: error: {len(failed)} measurement(s) failed; the other rows "
                         "were measured\n")
        return 1
    return 0
