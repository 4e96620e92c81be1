"""``hal bench`` on the CPU: real measurements through the CLI, and faults injected in-process."""

from __future__ import annotations

import argparse
import json
import os
import pty
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from helpers import read_terminal

import hal
from hal import calibration, dtypes, selection
from hal.backends.cpu.backend import CpuBackend
from hal.commands import bench
from hal.plugins import registered


def hal_bench(*args: str, seconds: str = "0.05",
              env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "HAL_DEVICE": "cpu", "HAL_BENCH_SECONDS": seconds, **(env or {})}
    return subprocess.run([sys.executable, "-m", "hal", "bench", *args], capture_output=True,
                          text=True, timeout=300, env=full)


def test_bench_measures_matmul_and_bandwidth_on_the_cpu() -> None:
    out = hal_bench("--json", "--dtype", "float32")
    assert out.returncode == 0, out.stderr
    assert out.stderr == ""  # piped: no progress
    data = json.loads(out.stdout)
    assert data["device"] == "cpu" and data["backend"] == "cpu"
    (mm,) = data["matmul"]
    assert mm["dtype"] == "fp32" and mm["status"] == "ok" and mm["tflops"] > 0
    what = [b["what"] for b in data["bandwidth"]]
    assert what[0].startswith("device memory")
    assert all("memcpy within host memory" in w for w in what[1:])
    assert all(b["status"] == "ok" and b["bytes_per_s"] > 1e7 for b in data["bandwidth"])


def test_sizes_grow_while_the_rate_rises_and_the_best_size_is_reported() -> None:
    data = json.loads(hal_bench("--json", "--dtype", "fp32").stdout)
    (mm,) = data["matmul"]
    sizes = [s["n"] for s in mm["sizes"]]
    rates = [s["tflops"] for s in mm["sizes"]]
    assert sizes == list(bench.HOST_SIZES[:len(sizes)])
    best = max(range(len(rates)), key=rates.__getitem__)
    assert mm["n"] == sizes[best] and mm["tflops"] == rates[best]
    for i in range(1, len(rates) - 1):  # the sweep went on only past a size that still gained
        assert rates[i] >= bench.GROWTH * max(rates[:i])


def test_bf16_and_its_torch_name_are_one_dtype() -> None:
    out = hal_bench("--json", "--dtype", "bf16", "--dtype", "bfloat16")
    assert out.returncode == 0, out.stderr
    (mm,) = json.loads(out.stdout)["matmul"]
    assert (mm["dtype"], mm["torch_dtype"]) == ("bf16", "bfloat16")


def test_fp8_runs_through_scaled_mm_or_is_skipped_with_the_reason() -> None:
    out = hal_bench("--json", "--dtype", "float8_e4m3fn")
    assert out.returncode == 0, out.stderr
    (mm,) = json.loads(out.stdout)["matmul"]
    assert mm["dtype"] == "fp8" and mm["native"] is False  # the CPU backend does not list fp8
    assert mm["status"] == "ok" or "torch._scaled_mm" in mm["reason"]


def test_plain_text_lists_every_native_dtype() -> None:
    out = hal_bench()
    assert out.returncode == 0, out.stderr
    assert "matmul fp32" in out.stdout and "GB/s" in out.stdout and "sizes tried" in out.stdout
    assert "not in the catalogue" in out.stdout or "% of" in out.stdout
    assert "━" not in out.stdout + out.stderr


def test_a_terminal_gets_a_progress_bar() -> None:
    leader, follower = pty.openpty()
    env = {**os.environ, "HAL_DEVICE": "cpu", "HAL_BENCH_SECONDS": "0.2", "COLUMNS": "100"}
    proc = subprocess.Popen([sys.executable, "-m", "hal", "bench", "--dtype", "fp32"],
                            stdout=follower, stderr=follower, env=env)
    os.close(follower)
    text = read_terminal(leader).decode(errors="replace")
    assert proc.wait(timeout=300) == 0
    assert "━" in text and "matmul fp32" in text


def test_save_writes_the_calibration_hal_plan_reads(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    out = hal_bench("--json", "--save", "--dtype", "fp32", "--dtype", "bf16",
                    env={"HAL_CACHE_DIR": str(tmp_path)})
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["calibration"] == str(tmp_path / "calibration.json")
    monkeypatch.setenv("HAL_CACHE_DIR", str(tmp_path))
    cal = calibration.load("cpu", data["name"])
    assert cal is not None
    assert cal.tflops == {m["dtype"]: m["tflops"] for m in data["matmul"]}
    assert cal.bandwidth == data["bandwidth"][0]["bytes_per_s"]


def test_bad_input_exit_2() -> None:
    out = hal_bench("--dtype", "int3")
    assert out.returncode == 2 and "'int3'" in out.stderr
    out = hal_bench("--dtype", "fp64")
    assert out.returncode == 2 and "not a matmul dtype" in out.stderr
    for seconds in ("forever", "0", "1e400", "nan"):
        out = hal_bench(seconds=seconds)
        assert out.returncode == 2 and "HAL_BENCH_SECONDS" in out.stderr
        assert len(out.stderr.strip().splitlines()) == 1


# -- faults injected in-process: the device refuses or fails part-way ----------------------


@pytest.fixture
def short_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HAL_DEVICE", "cpu")
    monkeypatch.setenv(bench.BUDGET_ENV, "0.02")
    monkeypatch.setattr(bench, "HOST_SIZES", (64, 128))


def _failing_mm(monkeypatch: pytest.MonkeyPatch, dtype: torch.dtype, above: int) -> None:
    """torch.mm raises for ``dtype`` operands larger than ``above`` (as a device kernel would)."""
    real = torch.mm

    def mm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if a.dtype == dtype and a.shape[0] > above:
            raise RuntimeError("CUBLAS_STATUS_EXECUTION_FAILED when calling cublasGemmEx\nmore")
        return real(a, b)

    monkeypatch.setattr(torch, "mm", mm)


def _run(capsys: pytest.CaptureFixture[str], *dtypes: str, json_out: bool = True,
         save: bool = False) -> tuple[int, Any, str]:
    args = argparse.Namespace(dtype=list(dtypes), json=json_out, save=save)
    code = bench.run(args)
    out = capsys.readouterr()
    return code, json.loads(out.out) if json_out else out.out, out.err


def test_a_failure_part_way_keeps_the_rows_already_measured(
        short_budget: None, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    _failing_mm(monkeypatch, torch.bfloat16, above=16)  # the probe passes, the timing fails
    code, data, err = _run(capsys, "fp32", "bf16")
    assert code == 1 and "1 measurement(s) failed" in err
    fp32, bf16 = data["matmul"]
    assert fp32["status"] == "ok" and fp32["tflops"] > 0
    assert bf16["status"] == "failed" and "CUBLAS_STATUS_EXECUTION_FAILED" in bf16["reason"]
    assert "\n" not in bf16["reason"]
    assert [b["status"] for b in data["bandwidth"]] == ["ok", "ok", "ok"]


def test_a_failure_at_a_larger_size_keeps_the_smaller_ones(
        short_budget: None, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(bench, "GROWTH", 0.0)  # always try the next size
    # what is checked is the sweep's handling of a failing size, not its clock: each timing is
    # one real call, and the budget is far from spent, however loaded the machine
    monkeypatch.setenv(bench.BUDGET_ENV, "30")

    def once(fn: Any, sync: Any, budget: float, deadline: float | None = None) -> tuple[float, int]:
        fn()
        sync()
        return 1e-3, 1

    monkeypatch.setattr(bench, "_timed", once)
    _failing_mm(monkeypatch, torch.float32, above=64)
    code, data, _ = _run(capsys, "fp32")
    (row,) = data["matmul"]
    assert code == 0 and row["status"] == "ok" and row["n"] == 64
    assert row["reason"].startswith("stopped before 128x128: RuntimeError")


def test_a_dtype_the_device_cannot_multiply_is_skipped_with_the_reason(
        short_budget: None, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    _failing_mm(monkeypatch, torch.float16, above=0)
    monkeypatch.delattr(torch, "_scaled_mm")
    code, text, _ = _run(capsys, "fp16", "fp32", "fp8", json_out=False)
    assert code == 0
    assert "matmul fp16         skipped: torch.mm refused fp16 here (RuntimeError: CUBLAS" in text
    assert "matmul fp8          skipped: torch._scaled_mm refused fp8 here" in text
    assert "no torch._scaled_mm" in text
    assert "matmul fp32" in text and "TFLOPS" in text


def test_interrupted_bench_prints_what_it_measured(
        short_budget: None, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    def interrupt(*args: Any, **kwargs: Any) -> dict[str, Any]:
        raise KeyboardInterrupt

    monkeypatch.setattr(bench, "_bandwidth_row", interrupt)
    code, data, err = _run(capsys, "fp32")
    assert code == 130 and err == "hal: interrupted\n"
    assert data["interrupted"] is True and data["matmul"][0]["status"] == "ok"


def test_save_records_only_what_was_measured(
        short_budget: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("HAL_CACHE_DIR", str(tmp_path))
    _failing_mm(monkeypatch, torch.bfloat16, above=16)
    code, data, _ = _run(capsys, "fp32", "bf16", save=True)
    assert code == 1
    cal = calibration.load("cpu", data["name"])
    assert cal is not None and set(cal.tflops) == {"fp32"}


class Fp8Host(CpuBackend):
    """The host CPU reporting fp8 as an H100 or MI300 does (e4m3fn, or e4m3fnuz)."""

    name = "fp8host"
    priority = 5

    def __init__(self, fp8: torch.dtype) -> None:
        super().__init__()
        self.fp8 = fp8

    def dtypes(self, index: int = 0) -> list[torch.dtype]:
        return [torch.bfloat16, self.fp8, torch.float32]


def _scaled_mm_accepting(monkeypatch: pytest.MonkeyPatch, accepts: set[torch.dtype],
                         calls: list[torch.dtype]) -> None:
    """torch._scaled_mm as a device's fp8 GEMM: runs for ``accepts`` operands, refuses others.

    Which fp8 formats the host CPU's real kernel takes varies by CPU and torch build (torch
    2.13 on some CPUs refuses e4m3fnuz); the tests check hal's handling, not the host's kernels.
    """
    def scaled_mm(a: torch.Tensor, b: torch.Tensor, *, scale_a: torch.Tensor,
                  scale_b: torch.Tensor, out_dtype: torch.dtype) -> torch.Tensor:
        calls.append(a.dtype)
        if a.dtype not in accepts or b.dtype not in accepts:
            raise RuntimeError(f"expects fp8 tensor input{a.dtype}")
        return (a.float() * scale_a) @ (b.float() * scale_b)

    monkeypatch.setattr(torch, "_scaled_mm", scaled_mm)


@pytest.mark.parametrize("fp8", [torch.float8_e4m3fn, torch.float8_e4m3fnuz])
def test_a_device_listing_fp8_is_benched_without_torch_mm_on_fp8(
        short_budget: None, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str], fp8: torch.dtype) -> None:
    """Issue 14: torch.mm has no fp8 kernel on GPUs; bench must use _scaled_mm or skip."""
    _failing_mm(monkeypatch, fp8, above=0)  # torch.mm refuses fp8, as addmm on a GPU does
    calls: list[torch.dtype] = []
    _scaled_mm_accepting(monkeypatch, {fp8}, calls)

    class Plugin:
        @hal.hookimpl
        def hal_backends(self) -> list[CpuBackend]:
            return [Fp8Host(fp8)]

    with registered(Plugin(), "test-fp8host"):
        monkeypatch.setenv("HAL_DEVICE", "fp8host")
        selection.reset()
        code, data, _ = _run(capsys)
        assert code == 0
        assert [(m["dtype"], m["status"]) for m in data["matmul"]] == [
            ("bf16", "ok"), (dtypes.short(fp8), "ok"), ("fp32", "ok")]
        assert calls and set(calls) == {fp8}  # fp8 went through _scaled_mm, never torch.mm

        other = torch.float8_e4m3fnuz if fp8 == torch.float8_e4m3fn else torch.float8_e4m3fn
        _scaled_mm_accepting(monkeypatch, {other}, [])  # a kernel that refuses this format
        code, data, _ = _run(capsys)
        assert code == 0
        (row,) = [m for m in data["matmul"] if m["dtype"] == dtypes.short(fp8)]
        assert row["status"] == "skipped"
        assert row["reason"].startswith(f"torch._scaled_mm refused {dtypes.short(fp8)} here")

        monkeypatch.delattr(torch, "_scaled_mm")  # a torch without the fp8 GEMM
        code, data, _ = _run(capsys)
        assert code == 0
        assert [m["status"] for m in data["matmul"]] == ["ok", "skipped", "ok"]
    selection.reset()



@pytest.mark.parametrize("at_256", [1.2, 0.004])  # s a call: fp8 on a host CPU; a quick kernel
def test_a_slow_kernel_cannot_make_the_run_outlast_its_budget_by_more_than_one_call(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        at_256: float) -> None:
    """Issue 20: the budget was checked only between calls, so fp8 at 8 s a call never ended.

    Stand-in kernels advance bench's clock by a cost growing as n**3, so no real second passes.
    """
    import time

    monkeypatch.setenv("HAL_DEVICE", "cpu")
    monkeypatch.setenv(bench.BUDGET_ENV, "0.05")
    skew = [0.0]
    monkeypatch.setattr(bench, "_now", lambda: time.perf_counter() + skew[0])
    costs: dict[torch.dtype, list[float]] = {}

    def charge(a: torch.Tensor, out_dtype: torch.dtype) -> torch.Tensor:
        cost = at_256 * (a.shape[0] / 256) ** 3
        costs.setdefault(a.dtype, []).append(cost)
        skew[0] += cost
        return torch.zeros(2, 2, dtype=out_dtype)

    def scaled_mm(a: torch.Tensor, b: torch.Tensor, *, scale_a: torch.Tensor,
                  scale_b: torch.Tensor, out_dtype: torch.dtype) -> torch.Tensor:
        return charge(a, out_dtype)

    monkeypatch.setattr(torch, "_scaled_mm", scaled_mm)
    monkeypatch.setattr(torch, "mm", lambda a, b: charge(a, a.dtype))
    code, data, _ = _run(capsys, "fp32", "bf16", "fp8")
    assert code == 0 and [m["status"] for m in data["matmul"]] == ["ok", "ok", "ok"]
    share = bench.SWEEP_SHARE * 0.05 * len(bench.HOST_SIZES)  # one dtype's sweep
    assert len(costs) == 3
    for dtype, spent in costs.items():
        assert sum(spent) <= share + max(spent), (dtype, spent)
    if at_256 > share:  # the first size's warm-up spent it all: that call is the measurement
        assert all(m["n"] == 256 and m["calls"] == 1 for m in data["matmul"])
        assert all("time budget" in m["reason"] for m in data["matmul"])


class GarbageHost(CpuBackend):
    """The host CPU behind a plugin whose devices() and dtypes() return garbage."""

    name = "garbagehost"
    priority = 5

    def devices(self) -> list[hal.DeviceInfo]:
        return "not a list of DeviceInfo"  # type: ignore[return-value]

    def dtypes(self, index: int = 0) -> list[torch.dtype]:
        return [1, "bf16"]  # type: ignore[list-item]


def test_garbage_from_a_plugins_devices_and_dtypes_is_checked_at_the_boundary(
        short_budget: None, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    # Issue 20: bench called backend.devices()/dtypes() directly; garbage raised inside bench.
    from hal.errors import PluginError

    class Plugin:
        @hal.hookimpl
        def hal_backends(self) -> list[CpuBackend]:
            return [GarbageHost()]

    with registered(Plugin(), "test-garbagehost"):
        monkeypatch.setenv("HAL_DEVICE", "garbagehost")
        selection.reset()
        with pytest.raises(PluginError, match=r"backend 'garbagehost': dtypes\(\) returned a int"):
            _run(capsys)
        code, data, _ = _run(capsys, "fp32")  # what was asked for is measured all the same
        assert code == 0 and data["name"] == "cpu" and data["matmul"][0]["status"] == "ok"
        assert data["matmul"][0]["native"] is False
    selection.reset()


def test_a_calibration_that_cannot_be_saved_still_prints_the_rows(
        short_budget: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("HAL_CACHE_DIR", str(tmp_path))
    newer = tmp_path / "calibration.json"
    newer.write_text('{"schema": "hal.calibration/9", "entries": []}')  # another hal's file
    code, data, err = _run(capsys, "fp32", save=True)
    assert code == 1 and data["matmul"][0]["status"] == "ok"  # measured and printed
    assert err.startswith("hal: error: calibration file") and "not replaced" in err
    assert newer.read_text() == '{"schema": "hal.calibration/9", "entries": []}'
