#!/usr/bin/env bash
# Download, into .wheelhouse/, wheels for the packages the offline GPU machine's python3 LACKS, to
# be carried with the working tree (the device tool's `carry`); scripts/device-check.sh installs
# from it only what is missing there.  That image (Python 3.12, torch 2.11.0+cu130) already holds
# everything hal and the check import (pluggy, psutil, rich, nvidia-ml-py, transformers,
# setuptools; /work/.library/device/KINDS.md), so by default nothing is downloaded.
#
#   scripts/prepare-wheelhouse.sh [DIST==VERSION ...]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [ "$#" = 0 ]; then
    echo "the GPU image lacks none of hal's packages: no wheels to carry"
    exit 0
fi
mkdir -p .wheelhouse
python3 -m pip download -q --no-deps --only-binary=:all: -d .wheelhouse --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform any "$@"
ls -l .wheelhouse
