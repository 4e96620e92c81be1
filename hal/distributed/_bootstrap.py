"""A rank under ``hal run``: tie its life to the launcher's, then run the user's script as ``python`` would.

    python -m hal.distributed._bootstrap SCRIPT [ARGS...]

torchrun starts each rank in a session of its own, so when ``hal run`` is killed outright
(SIGKILL, the OOM killer) nothing would stop the ranks: they would run on, re-parented to
pid 1.  Here the rank asks Linux for SIGKILL when its parent dies (``PR_SET_PDEATHSIG``).
Being in a session of its own, a rank gets SIGINT only from ``hal run`` passing on the
user's Ctrl-C; the KeyboardInterrupt it raises, if the script lets it through, ends the rank
with status 130 and no traceback (the launcher says "hal: interrupted" once for all ranks).

Two things a plain ``python SCRIPT`` rank gets wrong are set right here:

- under ``PYTHONUNBUFFERED=1`` (common in containers and CI) each ``print`` is several
  writes, so two ranks sharing the terminal interleave mid-line (``ranran 1 1``); a rank
  of a multi-rank world writes whole lines instead (line buffering flushes at every newline
  and carriage return, so output stays prompt);
- a script that used torch.distributed ends without interpreter finalization: non-daemon
  threads are joined, atexit handlers run and open files are flushed while the interpreter
  is whole, then the process exits.  Left to finalization, a gloo worker thread that drops
  the last reference to a Python-owned tensor (a DistributedDataParallel keeps the group
  alive past ``destroy_process_group``) needs the GIL, is stopped by the finalizing
  interpreter and aborts the rank (``terminate called without an active exception``, SIGABRT).
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import io
import os
import runpy
import signal
import sys
import threading
from typing import NoReturn

#: Set by ``hal run`` to its own pid: the parent every rank must still have.
LAUNCHER_VAR = "HAL_RUN_PID"
#: Set to 1 by ``hal run -v``: a rank's KeyboardInterrupt keeps its traceback.
VERBOSE_VAR = "HAL_RUN_VERBOSE"
_PR_SET_PDEATHSIG = 1
#: A rank's exit status when the forwarded SIGINT ended it: 128 + SIGINT, as a shell reports it.
INTERRUPTED = 128 + int(signal.SIGINT)
#: The file objects that hold written data in memory until flushed (``open()`` returns these).
_BUFFERED = (io.TextIOWrapper, io.BufferedWriter, io.BufferedRandom)


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
    """Run the script; a KeyboardInterrupt that reaches here ends the rank quietly, status 130
    (with its traceback under ``hal run -v``, which sets VERBOSE_VAR)."""
    try:
        run_script()
    except KeyboardInterrupt:
        if os.environ.get(VERBOSE_VAR) == "1":
            raise
        raise SystemExit(INTERRUPTED) from None
    except SystemExit as exc:
        end(exit_status(exc.code))
    end(0)


def exit_status(code: object) -> int:
    """The status ``raise SystemExit(code)`` gives, as the interpreter computes it (a message
    is printed to stderr and gives 1)."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    sys.stderr.write(f"{code}\n")
    return 1


def whole_lines() -> None:
    """Make an unbuffered stdout/stderr (``-u``, PYTHONUNBUFFERED) line-buffered, so that the
    ranks sharing one terminal or pipe never interleave within a line."""
    for stream in (sys.stdout, sys.stderr):
        if getattr(stream, "write_through", False) and hasattr(stream, "reconfigure"):
            with contextlib.suppress(ValueError, OSError):  # a closed stream is left as it is
                stream.reconfigure(line_buffering=True, write_through=False)


def end(status: int) -> NoReturn:
    """Exit with ``status``; after torch.distributed, without interpreter finalization (see the
    module docstring): threads joined, atexit handlers run, files flushed, then ``os._exit``."""
    if "torch.distributed" not in sys.modules:
        raise SystemExit(status)
    me = threading.current_thread()
    for thread in threading.enumerate():  # what the interpreter waits for before exiting
        if thread is not me and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()  # logging.shutdown, torch's and the user's handlers
    for obj in gc.get_objects():  # files the script left open would be flushed at finalization
        # type(), not isinstance(): an ABC check reads __class__, which some objects warn on
        if issubclass(type(obj), _BUFFERED):
            with contextlib.suppress(ValueError, OSError):
                if not obj.closed and obj.writable():
                    obj.flush()
    for stream in (sys.stdout, sys.stderr):  # also when the script replaced them (a tee object)
        with contextlib.suppress(ValueError, OSError, AttributeError):
            stream.flush()
    os._exit(status)


def run_script() -> None:
    """Run ``sys.argv[1]`` as ``__main__`` with the argv and sys.path ``python SCRIPT`` gives."""
    die_with_launcher()
    if len(sys.argv) < 2:
        sys.stderr.write("usage: python -m hal.distributed._bootstrap SCRIPT [ARGS...]\n")
        raise SystemExit(2)
    script = sys.argv[1]
    sys.argv = sys.argv[1:]
    sys.path[0] = os.path.dirname(os.path.abspath(script))
    if os.environ.get("WORLD_SIZE", "1").strip() not in {"", "0", "1"}:  # several ranks
        whole_lines()
    from hal.cuda_compat import ENV_VAR, run_path  # torch-free: the mode loads on enable()

    if os.environ.get(ENV_VAR) == "1":  # set by ``hal run --cuda-compat``
        raise SystemExit(run_path(script))
    runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
    main()
