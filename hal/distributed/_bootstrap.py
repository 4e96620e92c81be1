"""A rank under ``hal run``: tie its life to the launcher's, then run the user's script as ``python`` would.

    python -m hal.distributed._bootstrap SCRIPT [ARGS...]

torchrun starts each rank in a session of its own, so when ``hal run`` is killed outright
(SIGKILL, the OOM killer) nothing would stop the ranks: they would run on, re-parented to
pid 1.  Here the rank asks Linux for SIGKILL when its parent dies (``PR_SET_PDEATHSIG``).
"""

from __future__ import annotations

import os
import runpy
import signal
import sys

#: Set by ``hal run`` to its own pid: the parent every rank must still have.
LAUNCHER_VAR = "HAL_RUN_PID"
_PR_SET_PDEATHSIG = 1


def die_with_launcher() -> None:
    """Have the kernel SIGKILL this process when its parent exits (Linux); no-op elsewhere."""
    launcher = os.environ.get(LAUNCHER_VAR, "")
    if not sys.platform.startswith("linux") or not launcher:
        return
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    except (OSError, AttributeError):
        return
    if str(os.getppid()) != launcher:  # the launcher died before prctl took hold
        os._exit(128 + signal.SIGKILL)


def main() -> None:
    """Run ``sys.argv[1]`` as ``__main__`` with the argv and sys.path ``python SCRIPT`` gives."""
    die_with_launcher()
    if len(sys.argv) < 2:
        sys.stderr.write("usage: python -m hal.distributed._bootstrap SCRIPT [ARGS...]\n")
        raise SystemExit(2)
    script = sys.argv[1]
    sys.argv = sys.argv[1:]
    sys.path[0] = os.path.dirname(os.path.abspath(script))
    from hal.cuda_compat import ENV_VAR, run_path  # torch-free: the mode loads on enable()

    if os.environ.get(ENV_VAR) == "1":  # set by ``hal run --cuda-compat``
        raise SystemExit(run_path(script))
    runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
    main()
