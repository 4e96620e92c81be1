"""Unmodified CUDA-only scripts (tests/cuda_only/) through the real CLI: ``hal run --cuda-compat``
and ``python -m hal.cuda_compat``, on this CPU, in real subprocesses with real gloo collectives."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import ISOLATED_VARS, backend_source, plugin_site, pythonpath, run_hal

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "tests" / "cuda_only"
pytestmark = pytest.mark.slow


def run_compat(*args: str, env: dict[str, str] | None = None,
               timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """``python -m hal.cuda_compat ARGS`` with a clean HAL_* environment."""
    base = {k: v for k, v in os.environ.items() if k not in ISOLATED_VARS}
    base.update(env or {})
    return subprocess.run([sys.executable, "-m", "hal.cuda_compat", *args], capture_output=True,
                          text=True, env=base, timeout=timeout)


def json_lines(text: str) -> list[dict[str, object]]:
    """Every JSON object printed (two ranks' lines can share one line of the pipe)."""
    decoder, found, at = json.JSONDecoder(), [], text.find("{")
    while at >= 0:
        obj, end = decoder.raw_decode(text, at)
        found.append(obj)
        at = text.find("{", end)
    return found


def test_the_guides_ddp_script_runs_unchanged_on_two_cpu_ranks_with_right_sums() -> None:
    done = run_hal("run", "--cuda-compat", "-n", "2", str(SCRIPTS / "deepseek_gpu_guide.py"),
                   timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = sorted(json_lines(done.stdout), key=lambda r: int(str(r["rank"])))
    assert [r["rank"] for r in ranks] == [0, 1]
    for r in ranks:
        assert r["world"] == 2 and r["device"] == "cpu"
        assert r["rank_sum"] == 1 + 2  # all_reduce of rank + 1 over two ranks
        assert r["vector"] == [0.0, 3.0, 6.0, 9.0]  # arange(4) * 1 + arange(4) * 2
        assert r["replicas_equal"] is True
        assert r["batches"][0] == 4 and all(isinstance(b, int) for b in r["batches"])
        assert int(str(r["peak"])) > 0 and int(str(r["summary_lines"])) >= 6
    assert [r["current_device"] for r in ranks] == [0, 1]  # each rank bound its own index
    assert ranks[0]["loss"] == ranks[1]["loss"]
    said = [line for line in done.stderr.splitlines() if line.startswith("hal: cuda-compat:")]
    assert len(said) == 1 and said[0].startswith("hal: cuda-compat: 'cuda' maps to cpu: ")


def test_without_the_flag_the_ranks_are_untouched() -> None:
    done = run_hal("run", "-n", "2", str(SCRIPTS / "which_device.py"), timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    for r in json_lines(done.stdout):
        assert r["is_available"] is False and r["torch_cuda"] == "module"
    assert "cuda-compat" not in done.stderr
    mapped = run_hal("run", "--cuda-compat", "-n", "2", str(SCRIPTS / "which_device.py"))
    assert mapped.returncode == 0, mapped.stderr[-3000:]
    got = sorted((r["rank"], r["current_device"], r["device"]) for r in json_lines(mapped.stdout))
    assert got == [(0, 0, "cpu"), (1, 1, "cpu")]


def test_a_call_with_no_equivalent_is_one_line_and_exit_1() -> None:
    script = str(SCRIPTS / "unmapped_call.py")
    done = run_hal("run", "--cuda-compat", "-n", "2", script, timeout=300)
    assert done.returncode == 1, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines()
              if "torch.cuda.nvtx.range_push has no equivalent" in line]
    # each rank that gets there says it once; torchrun stops the other at the first failure,
    # so on a loaded host the slower rank may be stopped before it reaches the call
    assert 1 <= len(errors) <= 2, done.stderr[-3000:]
    assert errors[0].endswith("torch.cuda.nvtx.range_push has no equivalent on cpu under hal's "
                              "cuda-compat mode: use torch.profiler.record_function(name) for "
                              "ranges any backend's profiler shows, or drop the call")
    one = run_compat(script)
    assert one.returncode == 1 and "Traceback" not in one.stderr
    assert one.stderr.splitlines()[-1].startswith(
        "hal: error: torch.cuda.nvtx.range_push has no equivalent on cpu")
    assert one.stdout == ""


def test_a_missing_script_is_one_line() -> None:
    done = run_compat("no/such/script.py")
    assert done.returncode == 2 and done.stderr == "hal: error: script 'no/such/script.py' not found\n"


def test_on_a_backend_that_drives_cuda_itself_the_mode_only_says_so(tmp_path: Path) -> None:
    site = plugin_site(tmp_path, "realgpu", backend_source(
        "realgpu", "return hal.Probe(True, 'a GPU torch drives as cuda', 1)",
        device_type="cuda", priority="200"))
    done = run_compat(str(SCRIPTS / "which_device.py"), env=pythonpath(site))
    assert done.returncode == 0, done.stderr
    report = json_lines(done.stdout)[0]
    assert report == {"rank": 0, "is_available": False, "torch_cuda": "module"}  # torch's own
    assert done.stderr.startswith("hal: cuda-compat: the selected backend realgpu drives torch's "
                                  "cuda device itself, so nothing is mapped (")


def test_libraries_that_branch_on_is_available_take_their_gpu_path_mapped() -> None:
    code = SCRIPTS / "library_branches.py"
    done = run_compat(str(code))
    assert done.returncode == 0, done.stderr[-3000:]
    got = json_lines(done.stdout)[0]
    assert got["transformers_cuda"] is True  # transformers' own check says a GPU is there
    assert got["accelerate_device"] == "cpu"  # and accelerate's state lands on hal's device
    assert got["pipeline_device"] == "cpu" and got["pipeline_ok"] is True


def test_workers_started_with_torch_multiprocessing_spawn_are_mapped_too() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    done = run_compat(str(SCRIPTS / "spawn_allreduce.py"), "2", port)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json_lines(done.stdout) == [{"sum": [3.0, 3.0, 3.0], "device": "cpu", "backend": "gloo"}]
