"""``hal run [-n N] script.py [args...]``: one process per device of the selected backend.

The launch goes through torch.distributed.run (torchrun's own ``main``), in this process, with
``--standalone`` on one machine; torchrun's multi-node rendezvous flags pass through unchanged.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any

#: torchrun flags hal forwards unchanged; giving any of them turns ``--standalone`` off.
RENDEZVOUS_FLAGS = ("--nnodes", "--node-rank", "--rdzv-endpoint", "--rdzv-backend", "--rdzv-id",
                    "--rdzv-conf", "--master-addr", "--master-port")
_NNODES_RE = re.compile(r"^[1-9]\d*(:[1-9]\d*)?$")


def _nnodes(value: str) -> str:
    if not _NNODES_RE.match(value):
        raise argparse.ArgumentTypeError(f"{value!r} is not a node count N or range MIN:MAX")
    return value


def _count(value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"{value!r} is not a positive number of processes")
    return int(value)


def _port(value: str) -> int:
    if not value.isdigit() or not 0 < int(value) < 65536:
        raise argparse.ArgumentTypeError(f"{value!r} is not a TCP port (1..65535)")
    return int(value)


def add_parser(sub: Any) -> None:
    """Register the ``run`` command."""
    p = sub.add_parser(
        "run", help="launch a script on every device of the selected backend (torchrun)",
        description="Launch SCRIPT with one process per device of the selected backend "
        "(one on CPU) through torch.distributed.run; rendezvous flags pass through to it.",
    )
    p.add_argument("-n", "--nproc-per-node", type=_count, default=None, metavar="N",
                   help="processes on this machine (default: the selected backend's device "
                   "count; 1 on CPU)")
    p.add_argument("--nnodes", type=_nnodes, help="nodes, N or MIN:MAX (torchrun)")
    p.add_argument("--node-rank", "--node_rank", type=int, help="this node's rank (torchrun)")
    p.add_argument("--rdzv-endpoint", "--rdzv_endpoint", help="HOST:PORT of the rendezvous")
    p.add_argument("--rdzv-backend", "--rdzv_backend", help="rendezvous backend, e.g. c10d")
    p.add_argument("--rdzv-id", "--rdzv_id", help="job id shared by every node")
    p.add_argument("--rdzv-conf", "--rdzv_conf", help="extra rendezvous settings (torchrun)")
    p.add_argument("--master-addr", "--master_addr", help="static rendezvous master address")
    p.add_argument("--master-port", "--master_port", type=_port, help="static master port")
    p.add_argument("script", help="the Python script to run in every process")
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


def run(args: argparse.Namespace) -> int:
    """Launch; exit 0 when every rank succeeds, else the first failed rank's exit code."""
    from hal.errors import ConfigError

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
    import torch.distributed.run
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    torchrun: Any = torch.distributed.run  # untyped module: its run() and parse_args()
    try:
        torchrun.run(torchrun.parse_args(torchrun_argv(args, nproc)))
    except ChildFailedError as exc:
        rank, failure = min(exc.failures.items())
        code = failure.exitcode if failure.exitcode > 0 else 1
        how = f"exit code {failure.exitcode}" if failure.exitcode >= 0 else \
            f"signal {-failure.exitcode}"
        sys.stderr.write(f"hal: error: {len(exc.failures)} of the ranks failed; first: rank "
                         f"{rank} ({how}); its output is above\n")
        return code
    return 0
