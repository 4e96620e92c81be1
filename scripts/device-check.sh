#!/usr/bin/env bash
# Run hal's real-GPU checks and the benchmarks on a Linux + NVIDIA machine, in one go.
# Works offline when torch (CUDA build) is already installed: the venv then reuses the system
# site-packages.  Every step is time-bounded and prints everything; the exit code is pytest's.
set -u -o pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="${PYTHON:-python3}"
VENV="${HAL_CHECK_VENV:-$ROOT/.venv-device-check}"
STEP_TIMEOUT="${HAL_CHECK_TIMEOUT:-600}"
BENCH_TIMEOUT="${HAL_BENCH_TIMEOUT:-300}"

say() { printf '\n==== %s ====\n' "$*"; }
run() { timeout --kill-after=10 "$@"; }

say "host"
uname -a
"$PY" --version
if command -v nvidia-smi >/dev/null 2>&1; then
    run 60 nvidia-smi || echo "nvidia-smi failed: $?"
    run 60 nvidia-smi -L || true
else
    echo "nvidia-smi not found"
fi

say "python environment"
if run 120 "$PY" -c 'import sys, torch; sys.exit(0 if torch.version.cuda else 1)' 2>/dev/null; then
    echo "system torch has CUDA: reusing system site-packages"
    [ -x "$VENV/bin/python" ] || run 120 "$PY" -m venv --system-site-packages "$VENV"
    NEED_TORCH=0
else
    echo "no CUDA torch importable from $PY: a fresh venv will pip install torch"
    [ -x "$VENV/bin/python" ] || run 120 "$PY" -m venv "$VENV"
    NEED_TORCH=1
fi
VPY="$VENV/bin/python"
if [ "$NEED_TORCH" = 1 ]; then
    run "$STEP_TIMEOUT" "$VPY" -m pip install torch || echo "pip install torch failed: $?"
fi
# The device machine reaches no index: a wheelhouse prepared here travels with the tree
# (scripts/prepare-wheelhouse.sh; pass .wheelhouse in the device tool's carry list).
PIP_SOURCE=()
if [ -d "$ROOT/.wheelhouse" ]; then
    PIP_SOURCE=(--no-index --find-links "$ROOT/.wheelhouse")
    run "$STEP_TIMEOUT" "$VPY" -m pip install "${PIP_SOURCE[@]}" pluggy psutil rich pytest \
        pytest-timeout hypothesis || echo "wheelhouse install failed: $?"
fi
# --no-build-isolation: setuptools from the venv, so an offline machine can still install.
run "$STEP_TIMEOUT" "$VPY" -m pip install "${PIP_SOURCE[@]}" --no-build-isolation -e ".[test]" \
    || run "$STEP_TIMEOUT" "$VPY" -m pip install --no-build-isolation --no-deps -e . \
    || echo "pip install of the project failed: $?"
run 120 "$VPY" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda,
    "devices", torch.cuda.device_count())'

say "hal devices"
run 300 "$VPY" -m hal devices || echo "hal devices exited $?"
run 300 "$VPY" -m hal devices --json || true

say "pytest -m gpu"
run "$STEP_TIMEOUT" "$VPY" -m pytest -m gpu -q -rs -p no:cacheprovider
STATUS=$?
echo "pytest -m gpu exit code: $STATUS"

say "benchmarks"
shopt -s nullglob
for bench in bench/*.py; do
    echo "---- $bench"
    run "$BENCH_TIMEOUT" "$VPY" "$bench" || echo "$bench exited $?"
done

say "done (pytest exit code $STATUS)"
exit "$STATUS"
