#!/usr/bin/env bash
# Download hal's pure-Python and small dependencies into .wheelhouse/ for an offline device
# machine (Linux x86_64, CPython 3.10-3.12), to be carried along with the working tree.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
for py in 310 311 312; do
    python3 -m pip download -q -d .wheelhouse --only-binary=:all: --python-version "$py" \
        --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
        pluggy psutil rich pytest pytest-timeout hypothesis setuptools wheel
done
ls .wheelhouse
