"""Real multi-process runs on 127.0.0.1: spawn, ``hal run`` (torchrun), two nodes, and failures.

Every run is a subprocess with a hard timeout; ports are picked free.  Runs that mostly wait
(a stalled rank, a missing rank, no master) start together in the background at module start,
so the whole file costs about one timeout of waiting, not one per scenario.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import ISOLATED_VARS

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = Path(__file__).resolve().parent / "dist_scripts"
FAIL_TIMEOUT = 10  # seconds: the hal.distributed timeout in the failure scenarios
SLACK = 25  # seconds a failing rank may take beyond its timeout on a loaded 2-core machine


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def clean_env(**extra: str) -> dict[str, str]:
    drop = {*ISOLATED_VARS, "MASTER_ADDR", "MASTER_PORT", "LOCAL_WORLD_SIZE", "GROUP_RANK"}
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(OMP_NUM_THREADS="1", TORCH_CPP_LOG_LEVEL="ERROR", **extra)
    return env


class Job:
    """A bounded background subprocess whose HAL* lines are parsed when it ends."""

    def __init__(self, argv: list[str], timeout: float, env: dict[str, str] | None = None):
        self.timeout = timeout
        self.started = time.monotonic()
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, env=env or clean_env(), cwd=ROOT)
        self._out: tuple[str, str] | None = None
        self.elapsed = 0.0

    def wait(self) -> Job:
        if self._out is None:
            left = max(1.0, self.timeout - (time.monotonic() - self.started))
            try:
                self._out = self.proc.communicate(timeout=left)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                out, err = self.proc.communicate()
                pytest.fail(f"{self.proc.args} ran past {self.timeout} s\n{out}\n{err[-3000:]}")
            self.elapsed = time.monotonic() - self.started
        return self

    @property
    def stdout(self) -> str:
        return self.wait()._out[0]  # type: ignore[index]

    @property
    def stderr(self) -> str:
        return self.wait()._out[1]  # type: ignore[index]

    def lines(self, tag: str) -> list[Any]:
        # Ranks share one stdout pipe, so two reports can land on one line: decode each
        # "TAG {json}" where it starts rather than line by line.
        decoder = json.JSONDecoder()
        out = self.stdout
        found, start = [], out.find(tag + " ")
        while start != -1:
            obj, end = decoder.raw_decode(out, start + len(tag) + 1)
            found.append(obj)
            start = out.find(tag + " ", end)
        return found


def spawn(scenario: str, nprocs: int, timeout: float) -> Job:
    return Job([sys.executable, str(SCRIPTS / "spawn.py"), scenario, str(nprocs),
                str(free_port()), str(timeout)], timeout=timeout + 120)


def one_rank(env: dict[str, str], timeout: float) -> Job:
    return Job([sys.executable, str(SCRIPTS / "one_rank.py"), str(timeout)],
               timeout=timeout + 90, env=clean_env(**env))


def hal_run(*args: str, timeout: float = 150) -> Job:
    return Job([sys.executable, "-m", "hal", "run", *args], timeout=timeout)


def rank_env(rank: int, world: int, port: int, addr: str = "127.0.0.1") -> dict[str, str]:
    return {"RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank),
            "MASTER_ADDR": addr, "MASTER_PORT": str(port)}


@pytest.fixture(scope="module")
def waiting_jobs() -> Iterator[dict[str, Any]]:
    """The scenarios that mostly wait on a timeout, started at once."""
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    busy_port = busy.getsockname()[1]
    jobs: dict[str, Any] = {
        "stall": spawn("stall", 2, FAIL_TIMEOUT),
        "missing": one_rank(rank_env(0, 2, free_port()), FAIL_TIMEOUT),
        "no_master": one_rank(rank_env(1, 2, free_port()), 5),
        "busy_port": one_rank(rank_env(0, 2, busy_port), 5),
        "busy_port_number": busy_port,
    }
    try:
        yield jobs
    finally:
        for job in jobs.values():
            if isinstance(job, Job) and job.proc.poll() is None:
                job.proc.kill()
                job.proc.communicate()
        busy.close()


def assert_all_checks_passed(job: Job, world: int) -> list[Any]:
    reports = job.lines("HALCHECK")
    assert sorted(r["rank"] for r in reports) == list(range(world)), job.stderr[-3000:]
    for r in reports:
        assert r["failures"] == [], r
        assert r["world_size"] == world and r["backend"] == "gloo"
        assert r["passed"] > 100  # every dtype x every collective, not a handful
    assert len({r["passed"] for r in reports}) == 1
    return reports


# -- collectives on real processes ------------------------------------------------------------


def test_every_collective_and_dtype_on_2_spawned_ranks(waiting_jobs: dict[str, Any]) -> None:
    job = spawn("checks", 2, 60).wait()
    assert_all_checks_passed(job, 2)
    assert job.lines("HALEXIT") == [[0, 0]]


def test_every_collective_and_dtype_on_4_ranks_under_hal_run() -> None:
    job = hal_run("-n", "4", str(SCRIPTS / "checks.py")).wait()
    assert job.proc.returncode == 0, job.stderr[-3000:]
    reports = assert_all_checks_passed(job, 4)
    assert sorted(r["local_rank"] for r in reports) == [0, 1, 2, 3]


def test_two_torchrun_nodes_on_localhost() -> None:
    port = free_port()
    nodes = [hal_run("--nnodes", "2", "--node-rank", str(node), "--master-addr", "127.0.0.1",
                     "--master-port", str(port), "-n", "2", "--", str(SCRIPTS / "checks.py"))
             for node in (0, 1)]
    reports = []
    for node, job in enumerate(nodes):
        job.wait()
        assert job.proc.returncode == 0, job.stderr[-3000:]
        mine = job.lines("HALCHECK")
        assert sorted((r["rank"], r["local_rank"]) for r in mine) == \
            [(2 * node, 0), (2 * node + 1, 1)]
        reports += mine
    assert all(r["failures"] == [] and r["world_size"] == 4 for r in reports)


def test_example_gives_the_same_result_as_one_process_and_under_hal_run() -> None:
    example = str(ROOT / "examples" / "distributed_sum.py")
    alone = Job([sys.executable, example], timeout=120)
    ranks = hal_run("-n", "2", example)
    assert alone.wait().proc.returncode == 0, alone.stderr[-2000:]
    assert ranks.wait().proc.returncode == 0, ranks.stderr[-2000:]
    result = alone.stdout.strip()
    assert result.startswith("sum of squares 0..1023 = 357389824; fit y = ")
    assert ranks.stdout.strip() == result  # printed once, by rank 0, and identical


# -- failures: never a hang, always a one-line hal error ------------------------------------


def test_a_killed_rank_makes_the_others_fail_quickly() -> None:
    job = spawn("kill", 4, FAIL_TIMEOUT).wait()
    results = job.lines("HALRESULT")
    assert sorted(r["rank"] for r in results) == [0, 1, 2], job.stderr[-3000:]
    for r in results:
        assert r["error"] == "DistributedError" and r["module"] == "hal.errors", r
        assert f"all_reduce failed on rank {r['rank']} of 4" in r["message"]
        assert "\n" not in r["message"]
        assert r["elapsed"] < FAIL_TIMEOUT + SLACK
    assert job.lines("HALEXIT")[0][3] == 3


def test_a_stalled_rank_makes_the_others_fail_within_the_timeout(
        waiting_jobs: dict[str, Any]) -> None:
    job = waiting_jobs["stall"].wait()
    [r] = job.lines("HALRESULT")
    assert r["rank"] == 0 and r["error"] == "DistributedError", job.stderr[-3000:]
    assert "all_reduce failed on rank 0 of 2 (timeout 10 s): a peer rank did not take part" \
        in r["message"]
    assert FAIL_TIMEOUT - 1 < r["elapsed"] < FAIL_TIMEOUT + SLACK


def test_a_rank_that_never_arrives_fails_init_within_the_timeout(
        waiting_jobs: dict[str, Any]) -> None:
    [r] = waiting_jobs["missing"].lines("HALRESULT")
    assert r["error"] == "DistributedError" and r["is_hal_error"], r
    assert "rank 0 of 2: only 1 of 2 ranks reached the rendezvous at 127.0.0.1:" in r["message"]
    assert "1 rank(s) missing" in r["message"]
    assert r["elapsed"] < FAIL_TIMEOUT + SLACK


def test_an_unreachable_master_is_a_one_line_error(waiting_jobs: dict[str, Any]) -> None:
    [r] = waiting_jobs["no_master"].lines("HALRESULT")
    assert r["error"] == "DistributedError" and r["is_hal_error"], r
    assert r["message"].startswith("rank 1 of 2 could not reach the master at 127.0.0.1:")
    assert "\n" not in r["message"]
    assert r["elapsed"] < 5 + SLACK


def test_a_port_in_use_is_a_one_line_error(waiting_jobs: dict[str, Any]) -> None:
    [r] = waiting_jobs["busy_port"].lines("HALRESULT")
    port = waiting_jobs["busy_port_number"]
    assert r["error"] == "DistributedError" and r["is_hal_error"], r
    assert r["message"] == (f"MASTER_PORT={port} on 127.0.0.1 is already in use (another job "
                            "or a stale process holds it); choose a free port")


def test_hal_run_reports_a_crashed_rank_and_exits_nonzero(tmp_path: Path) -> None:
    script = tmp_path / "crash.py"
    script.write_text(
        "import os, torch\nfrom hal import distributed as hd\n"
        "w = hd.init(timeout=10)\nhd.barrier()\n"
        "if w.rank == 1:\n    os._exit(3)\nhd.all_reduce(torch.ones(4))\n")
    job = hal_run("-n", "2", str(script), timeout=120).wait()
    assert job.proc.returncode != 0
    assert job.stderr.rstrip().splitlines()[-1].startswith("hal: error: ")
    assert job.elapsed < 10 + 60


def test_hal_run_with_a_missing_script_is_a_one_line_usage_error() -> None:
    job = hal_run("-n", "2", "no/such/script.py", timeout=60).wait()
    assert job.proc.returncode == 2
    assert job.stderr == "hal: error: hal run: script 'no/such/script.py' not found\n"
