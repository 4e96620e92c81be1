"""``hal run [-n N] script.py [args...]``: one process per device of the selected backend.

The launch goes through torch.distributed.run (torchrun's own ``main``), in this process, with
``--standalone`` on one machine; torchrun's multi-node rendezvous flags pass through unchanged.
Every rank starts through ``hal.distributed._bootstrap``, which makes it die with this process;
SIGINT/SIGTERM reach the ranks through torchrun and end here as "hal: interrupted".
torchrun's own log lines (its OMP_NUM_THREADS banner, "Sending process ... closing signal")
are shown only with ``-v``: hal says each event in one line of its own.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import shlex
import signal
import sys
from pathlib import Path
from typing import Any

from hal.commands import completes_path
from hal.errors import ConfigError, HalError
from hal.parse import flag_type, parse_int

#: torchrun flags hal forwards unchanged; giving any of them turns ``--standalone`` off.
RENDEZVOUS_FLAGS = ("--nnodes", "--node-rank", "--rdzv-endpoint", "--rdzv-backend", "--rdzv-id",
                    "--rdzv-conf", "--master-addr", "--master-port")
#: The module every rank starts through (it ties the rank's life to this process).
BOOTSTRAP = "hal.distributed._bootstrap"
_NNODES_RE = re.compile(r"^([0-9]{1,6})(?::([0-9]{1,6}))?$")
_HOST_RE = re.compile(r"^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+)$")
#: What to tell a user whose rank died by SIGABRT (a backend aborting on a mismatched collective).
ABORT_HINT = ("an abort inside a collective usually means the ranks disagreed (shapes, dtypes "
              "or the order of collectives); rerun with TORCH_DISTRIBUTED_DEBUG=DETAIL to have "
              "every collective checked")


def _nnodes(value: str) -> str:
    m = _NNODES_RE.match(value.strip())
    if not m:
        raise ConfigError(f"--nnodes={value!r} is not a node count N or range MIN:MAX")
    low = parse_int("--nnodes", m.group(1), lo=1, hi=100_000)
    high = parse_int("--nnodes", m.group(2) or m.group(1), lo=1, hi=100_000)
    if low > high:
        raise ConfigError(f"--nnodes={value}: MIN {low} is larger than MAX {high}")
    return value.strip()


def _count(value: str) -> int:
    return parse_int("-n", value, lo=1, hi=4096)


def _port(value: str) -> int:
    return parse_int("--master-port", value, lo=1, hi=65535)


def _node_rank(value: str) -> int:
    return parse_int("--node-rank", value, lo=0, hi=100_000)


def _endpoint(value: str) -> str:
    """HOST or HOST:PORT (IPv6 in brackets), as torchrun's c10d rendezvous accepts it."""
    text = value.strip()
    host, sep, port = text.rpartition(":") if not text.endswith("]") else (text, "", "")
    if not sep:
        host, port = text, ""
    if not host or not _HOST_RE.match(host) or len(host) > 253:
        raise ConfigError(f"--rdzv-endpoint={value!r} is not HOST or HOST:PORT")
    if sep:
        parse_int("--rdzv-endpoint port", port, lo=1, hi=65535)
    return text


def add_parser(sub: Any) -> None:
    """Register the ``run`` command."""
    p = sub.add_parser(
        "run", help="launch a script on every device of the selected backend (torchrun)",
        description="Launch SCRIPT with one process per device of the selected backend "
        "(one on CPU) through torch.distributed.run; rendezvous flags pass through to it.",
    )
    p.add_argument("-n", "--nproc-per-node", type=flag_type("-n", _count), default=None,
                   metavar="N", help="processes on this machine (default: the selected "
                   "backend's device count; 1 on CPU)")
    p.add_argument("--nnodes", type=flag_type("--nnodes", _nnodes),
                   help="nodes, N or MIN:MAX (torchrun)")
    p.add_argument("--node-rank", "--node_rank", type=flag_type("--node-rank", _node_rank),
                   help="this node's rank (torchrun)")
    p.add_argument("--rdzv-endpoint", "--rdzv_endpoint",
                   type=flag_type("--rdzv-endpoint", _endpoint), help="HOST:PORT of the rendezvous")
    p.add_argument("--rdzv-backend", "--rdzv_backend", help="rendezvous backend, e.g. c10d")
    p.add_argument("--rdzv-id", "--rdzv_id", help="job id shared by every node")
    p.add_argument("--rdzv-conf", "--rdzv_conf", help="extra rendezvous settings (torchrun)")
    p.add_argument("--master-addr", "--master_addr", help="static rendezvous master address")
    p.add_argument("--master-port", "--master_port", type=flag_type("--master-port", _port),
                   help="static master port")
    p.add_argument("--cuda-compat", action="store_true",
                   help="map code written for torch's GPU-only device API to the selected backend "
                   "(docs/cuda-compat.md)")
    p.add_argument("--launcher", choices=("slurm", "mpirun"),
                   help="hand the job to srun or mpirun (the line is printed; hal.distributed.launch)")
    p.add_argument("--dry-run", action="store_true", help="print the launch command line only")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="show torchrun's own log lines (hidden by default)")
    completes_path(p.add_argument("script", help="the Python script to run in every process"))
    p.add_argument("script_args", nargs=argparse.REMAINDER, help="arguments for the script")
    p.set_defaults(run=run)


def default_nproc() -> tuple[int, str]:
    """Processes per node for the selected backend and a phrase saying why."""
    from hal.selection import select

    sel = select()
    if sel.backend.device_type == "cpu":
        return 1, f"{sel.backend.name}: one process"
    count = next((c.device_count for c in sel.candidates if c.name == sel.backend.name), 0)
    return max(count, 1), f"{sel.backend.name}: {count} device(s)"


def torchrun_argv(args: argparse.Namespace, nproc: int) -> list[str]:
    """The argument list handed to torch.distributed.run for ``args``."""
    argv = [f"--nproc-per-node={nproc}"]
    passed = False
    for flag in RENDEZVOUS_FLAGS:
        value = getattr(args, flag[2:].replace("-", "_"))
        if value is not None:
            argv.append(f"{flag}={value}")
            passed = True
    if not passed:
        argv.append("--standalone")
    return [*argv, args.script, *args.script_args]


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def failure_summary(failures: dict[int, Any]) -> tuple[int, str]:
    """(exit code, one line) for torchrun's failed ranks, naming the one that failed first.

    When one rank dies torchrun stops the others with SIGTERM, so those SIGTERMs are its own
    doing: the rank to name is the one that failed otherwise (earliest, then lowest rank).
    """
    own = {r: f for r, f in failures.items() if f.exitcode != -signal.SIGTERM}
    pool = own or failures
    rank, failure = min(pool.items(), key=lambda kv: (getattr(kv[1], "timestamp", 0), kv[0]))
    code = failure.exitcode
    if code >= 0:
        how, exit_code, hint = f"exit code {code}", code or 1, ""
    else:
        how = f"signal {-code}, {_signal_name(-code)}"
        exit_code = 1
        hint = f"; {ABORT_HINT}" if -code == signal.SIGABRT else ""
    line = (f"{len(failures)} of the ranks failed; first: rank {rank} ({how}); its output is "
            f"above{hint}")
    return exit_code, line


def _launch_error(exc: BaseException) -> HalError:
    """A torchrun argument or rendezvous failure as one line (ConfigError for bad arguments)."""
    lines = str(exc).strip().splitlines()
    text = (lines[0] if lines else type(exc).__name__)[:300]
    text = re.sub(r"^\[[^\]]*\.(?:cc|cpp|h):\d+\]\s*", "", text)
    name = type(exc).__name__
    if "EADDRINUSE" in text or "address already in use" in text.lower():
        return ConfigError(f"hal run: the rendezvous port is already in use (another job or a "
                           f"stale process holds it); choose a free --master-port/--rdzv-endpoint "
                           f"port ({text})")
    if isinstance(exc, (ValueError, AssertionError, KeyError, TypeError)):
        return ConfigError(f"hal run: torchrun refused the arguments: {text}")
    return HalError(f"hal run: the rendezvous failed ({name}): {text}")


def _conf_seconds(conf: str | None, key: str, default: float) -> float:
    """``key=N`` from torchrun's ``--rdzv-conf k=v,...``, checked, else ``default``."""
    for item in (conf or "").split(","):
        name, _, value = item.partition("=")
        if name.strip() == key:
            from hal.parse import parse_float

            return parse_float(f"--rdzv-conf {key}", value, lo=0.0, lo_inclusive=False, hi=1e6)
    return default


def check_endpoint(args: argparse.Namespace) -> None:
    """Fail in one line, within the read timeout, on an endpoint that cannot be a store.

    torchrun's client waits without a bound on a port that accepts connections but never
    answers (another service), and an unroutable host costs two full timeouts and a C++
    stack trace per try.  A refused connection is left alone: the store may not be up yet.
    """
    import socket

    from hal.distributed.state import store_problem

    if args.rdzv_endpoint:
        host, _, port_text = args.rdzv_endpoint.rpartition(":")
        if not host:
            host, port_text = args.rdzv_endpoint, "29400"  # torchrun's c10d default port
    elif args.master_addr and args.master_port and (args.node_rank or 0) > 0:
        host, port_text = args.master_addr, str(args.master_port)
    else:
        return
    host = host.strip("[]")
    port = int(port_text)
    seconds = _conf_seconds(args.rdzv_conf, "read_timeout", 60.0)
    where = f"{host}:{port}"
    try:
        socket.create_connection((host, port), timeout=seconds).close()
    except TimeoutError:
        raise HalError(f"hal run: the rendezvous endpoint {where} did not answer within "
                       f"{seconds:g} s (host down or unreachable?)") from None
    except ConnectionRefusedError:
        return  # the store is not up yet: torchrun waits for it
    except socket.gaierror as exc:
        raise ConfigError(f"hal run: the rendezvous host {host!r} is unknown "
                          f"({exc.strerror})") from None
    except OSError as exc:
        raise HalError(f"hal run: the rendezvous endpoint {where} cannot be reached "
                       f"({exc.strerror or exc})") from None
    problem = store_problem(host, port, seconds)
    if problem:
        raise HalError(f"hal run: the rendezvous endpoint {where} {problem} (another service "
                       "on that port?)")


#: Exit status of an interrupted launch, SIGINT or SIGTERM alike (as the issue asks): 128 + SIGINT.
INTERRUPTED = 130


def omp_threads(nproc: int) -> int:
    """OMP_NUM_THREADS for each of ``nproc`` ranks: this process's usable cores shared out.

    torchrun sets 1 (with a four-line banner) whenever several ranks start; sharing the cores
    avoids the same oversubscription without leaving a many-core machine idle.
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, (cores or 1) // max(nproc, 1))


def _interrupted() -> int:
    sys.stderr.write("hal: interrupted\n")
    return INTERRUPTED


def run(args: argparse.Namespace) -> int:
    """Launch; exit 0 when every rank succeeds, else the first failed rank's exit code."""
    if not Path(args.script).is_file():
        raise ConfigError(f"hal run: script {args.script!r} not found")
    nproc, why = default_nproc()
    if args.nproc_per_node is not None:
        from hal.selection import select

        sel = select()
        if sel.backend.device_type != "cpu" and args.nproc_per_node > nproc:
            raise ConfigError(f"hal run -n {args.nproc_per_node}: {why}; launch at most {nproc} "
                              "process(es) per node, or HAL_DEVICE=cpu for CPU ranks")
        nproc = args.nproc_per_node
    from hal.distributed.launch import fill_from_allocation, run_with

    if args.launcher:
        return run_with(args.launcher, args.script, args.script_args,
                        args.nproc_per_node or (nproc if args.launcher == "mpirun" else None),
                        args.dry_run)
    if note := fill_from_allocation(args):
        sys.stderr.write(f"hal run: {note}\n")
    if args.dry_run:
        print(shlex.join(["torchrun", *torchrun_argv(args, nproc)]))
        return 0
    check_endpoint(args)
    import torch.distributed.run

    from hal.distributed._bootstrap import LAUNCHER_VAR, VERBOSE_VAR

    torchrun: Any = torch.distributed.run  # untyped module: its run() and parse_args()
    argv = torchrun_argv(args, nproc)
    # every rank starts as ``python -m hal.distributed._bootstrap SCRIPT ARGS``
    cut = len(argv) - 1 - len(args.script_args)  # where the script starts
    argv = [*argv[:cut], "--module", BOOTSTRAP, *argv[cut:]]
    os.environ[LAUNCHER_VAR] = str(os.getpid())
    if args.verbose:
        os.environ[VERBOSE_VAR] = "1"
    else:
        os.environ.pop(VERBOSE_VAR, None)
    if args.cuda_compat:  # every rank's bootstrap enables the mode before the script runs
        from hal.cuda_compat import ENV_VAR

        os.environ[ENV_VAR] = "1"
    if nproc > 1 and "OMP_NUM_THREADS" not in os.environ:  # the user's value is kept
        os.environ["OMP_NUM_THREADS"] = str(omp_threads(nproc))
        if args.verbose:
            sys.stderr.write(f"hal run: OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']} for each "
                             f"of {nproc} ranks (set it to choose)\n")
    received = _note_signals()
    if not args.verbose:  # torchrun logs from this process only: the ranks' logging is theirs
        logging.disable(logging.ERROR)
    try:
        return _launch(torchrun, argv, received)
    finally:
        logging.disable(logging.NOTSET)


def _launch(torchrun: Any, argv: list[str], received: list[int]) -> int:
    """torchrun's ``run`` on ``argv``, its outcomes as hal's exit code and one line."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    try:
        torchrun.run(torchrun.parse_args(argv))
    except ChildFailedError as exc:
        if received:  # the ranks failed because the signal reached them
            return _interrupted()
        code, line = failure_summary(exc.failures)
        sys.stderr.write(f"hal: error: {line}\n")
        return code
    except SignalException:  # torchrun already passed the signal on to every rank
        return _interrupted()
    except KeyboardInterrupt:
        return _interrupted()
    except SystemExit:
        raise
    except Exception as exc:
        if received:  # torchrun turned the signal into another error on its way out
            return _interrupted()
        raise _launch_error(exc) from None
    return 0


def _note_signals() -> list[int]:
    """Record the signal torchrun's own handler receives (it forwards it to the ranks).

    torchrun installs ``_terminate_process_handler`` for SIGINT/SIGTERM when it starts the
    ranks; wrapping that module attribute lets hal say "interrupted" even when torchrun's
    shutdown path turns the SignalException into another error.
    """
    from torch.distributed.elastic.multiprocessing import api

    received: list[int] = []
    original = api._terminate_process_handler

    def handler(signum: int, frame: Any) -> None:
        received.append(signum)
        original(signum, frame)

    api._terminate_process_handler = handler
    return received
