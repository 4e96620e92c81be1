"""Fault injection for hal.distributed: absurd environments, ports that are no store, ranks
that disagree about a collective (torch's DETAIL check), connections that fail on time.

In-process checks for the environment; real gloo on 127.0.0.1 in subprocesses for the rest.
"""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from helpers import ISOLATED_VARS

import hal
from hal import distributed as hd

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = Path(__file__).resolve().parent / "dist_scripts"
ENV = {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "MASTER_ADDR": "127.0.0.1",
       "MASTER_PORT": "29500"}


@pytest.fixture(autouse=True)
def _no_world(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for var in hd.ENV_VARS:
        monkeypatch.delenv(var, raising=False)
    hd.shutdown()
    yield
    hd.shutdown()


@pytest.mark.parametrize(("var", "value", "match"), [
    ("RANK", "²", r"RANK='²' is not a whole number"),
    ("LOCAL_RANK", "٣", r"LOCAL_RANK='٣' is not a whole number"),
    ("MASTER_PORT", "9" * 5000, r"MASTER_PORT='9{37}\.\.\.' is not a whole number"),
    ("MASTER_PORT", "0", r"MASTER_PORT=0 is out of range; expected 1\.\.65535"),
    ("WORLD_SIZE", str(10**12), r"WORLD_SIZE=1000000000000 is out of range; expected 1\.\.1048576"),
    ("WORLD_SIZE", "1_000", r"WORLD_SIZE='1_000' is not a whole number"),
    ("RANK", "-1", r"RANK='-1' is not a whole number"),
    ("MASTER_ADDR", "host name", r"MASTER_ADDR='host name' is not a host name or IP address"),
])
def test_absurd_environment_values_are_one_line_config_errors(
        monkeypatch: pytest.MonkeyPatch, var: str, value: str, match: str) -> None:
    for k, v in {**ENV, var: value}.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(hal.ConfigError, match=match) as info:
        hd.init(timeout=5)
    assert "\n" not in str(info.value) and len(str(info.value)) < 200
    assert not hd.is_initialized()


@pytest.mark.parametrize("timeout", [math.inf, -math.inf, math.nan, 1e400, 0, -1,
                                     timedelta(days=10**6), "10", True])
def test_absurd_timeouts_are_one_line_config_errors(timeout: Any) -> None:
    with pytest.raises(hal.ConfigError, match="timeout") as info:
        hd.init(timeout=timeout)
    assert "\n" not in str(info.value)


def test_the_cli_reports_a_bad_environment_in_one_line(tmp_path: Path) -> None:
    script = tmp_path / "s.py"
    script.write_text("from hal import distributed as hd\nhd.init()\n")
    env = {**_env(), **ENV, "RANK": "²"}
    proc = subprocess.run([sys.executable, "-c", "import runpy, sys, hal\n"
                           "try:\n    runpy.run_path(sys.argv[1])\n"
                           "except hal.ConfigError as exc:\n    print('ERR', exc)\n",
                           str(script)], capture_output=True, text=True, env=env, timeout=120)
    assert proc.stdout.startswith("ERR RANK='²' is not a whole number"), proc.stderr[-2000:]


# -- subprocesses: real gloo on 127.0.0.1 ---------------------------------------------------


def _env(**extra: str) -> dict[str, str]:
    drop = {*ISOLATED_VARS, "MASTER_ADDR", "MASTER_PORT", "LOCAL_WORLD_SIZE", "GROUP_RANK",
            "TORCH_DISTRIBUTED_DEBUG"}
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(OMP_NUM_THREADS="1", TORCH_CPP_LOG_LEVEL="ERROR", **extra)
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _one_rank(rank: int, port: int, timeout: float) -> tuple[dict[str, Any], str]:
    env = _env(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
               MASTER_PORT=str(port))
    proc = subprocess.run([sys.executable, str(SCRIPTS / "one_rank.py"), str(timeout)],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=timeout + 120)
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("HALRESULT "))
    return json.loads(line[len("HALRESULT "):]), proc.stderr


@pytest.mark.slow
def test_a_missing_master_fails_at_the_timeout_without_cpp_noise() -> None:
    result, stderr = _one_rank(1, _free_port(), 4)
    assert result["error"] == "DistributedError", result
    assert result["message"].startswith("rank 1 of 2 could not reach the master at 127.0.0.1:")
    assert "within 4 s" in result["message"] and "\n" not in result["message"]
    # the stated timeout, not torch's two tries of it (a bound, loose for a loaded machine)
    assert 3.5 < result["elapsed"] < 4 + 4, result
    assert "frame #" not in stderr and "Exception raised from" not in stderr, stderr[-2000:]


@pytest.mark.slow
def test_a_port_that_is_not_a_store_fails_instead_of_hanging() -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        result, _ = _one_rank(1, silent.getsockname()[1], 3)
    assert result["error"] == "DistributedError", result
    assert "accepts connections but did not answer as a torch store within" in result["message"]


@pytest.mark.slow
@pytest.mark.parametrize("op", ["all_gather", "all_reduce", "broadcast", "order"])
def test_ranks_that_disagree_get_one_line_errors_under_the_detail_check(op: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "hal", "run", "-n", "2", str(SCRIPTS / "mismatch.py"), op],
        capture_output=True, text=True, cwd=ROOT, timeout=240,
        env=_env(TORCH_DISTRIBUTED_DEBUG="DETAIL"))
    results = {}
    decoder = json.JSONDecoder()
    start = proc.stdout.find("HALRESULT ")
    while start != -1:
        obj, end = decoder.raw_decode(proc.stdout, start + len("HALRESULT "))
        results[obj["rank"]] = obj
        start = proc.stdout.find("HALRESULT ", end)
    assert sorted(results) == [0, 1], proc.stderr[-3000:]
    for rank, r in results.items():
        assert r["error"] == "DistributedError" and r["is_hal_error"], r
        assert "\n" not in r["message"]
        assert "the ranks disagree about this collective" in r["message"]
        assert f"on rank {rank} of 2" in r["message"]
        assert "rank 0 called" in r["message"] and "rank 1 called" in r["message"]
