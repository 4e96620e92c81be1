"""``python -m hal.cuda_compat SCRIPT [ARGS...]``: run a CUDA-only script, in one process, on hal's device."""

from __future__ import annotations

import os
import sys


def main() -> int:
    """Run ``sys.argv[1]`` as ``python SCRIPT`` would, with the mode on; its exit status."""
    if len(sys.argv) < 2 or sys.argv[1] in ("-h", "--help"):
        sys.stderr.write("usage: python -m hal.cuda_compat SCRIPT [ARGS...]\n")
        return 2
    script = sys.argv[1]
    if not os.path.isfile(script):
        sys.stderr.write(f"hal: error: script {script!r} not found\n")
        return 2
    from hal.cuda_compat import run_path

    sys.argv = sys.argv[1:]
    sys.path[0] = os.path.dirname(os.path.abspath(script))
    return run_path(script)


if __name__ == "__main__":
    raise SystemExit(main())
