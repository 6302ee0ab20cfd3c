#!/bin/bash
# Fetch, on this machine, the wheels benchmarks/gpu.sh installs on a lent GPU machine, into ./.whl
# (ignored by git; the device tool's `carry` takes it along). The GPU image (Python 3.12, see
# /work/.library/device/KINDS.md) has torch, transformers, accelerate, pyarrow, pandas, xxhash,
# fsspec, h5py, scikit-learn and matplotlib, but not `datasets` and `evaluate` (nor their dill and
# multiprocess) nor the loaders' inflate libraries; versions are those of this checkout's venv.
set -euo pipefail
# Extra names (e.g. pyarrow, if the image's is older than datasets needs) are fetched too: gpu_wheels.sh pyarrow
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
pins=$($PY -m pip list --format freeze 2>/dev/null | grep -iE '^(datasets|evaluate|dill|multiprocess|zlib-ng|isal)==')
rm -rf .whl && mkdir -p .whl
$PY -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl $pins "$@"
ls -la .whl && du -sh .whl
# bench_3d.py's real volumes: ../shared does not travel to the device machine, so they go along in .whl/data.
mkdir -p .whl/data && cp ../shared/data/medmnist/adrenalmnist3d.npz .whl/data/
