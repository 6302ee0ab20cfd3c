#!/bin/bash
# Every GPU check of issue 12 in one command, for a lent machine; JSON under $OUT (default ./out).
#
#   (a) the loaders feeding ViT-B/16 at 224 px in bf16 against synthetic tensors (bench_loaders.py --gpu)
#   (b) train_hf.py at 224 px for ViT-B/16 and ConvNeXt-T, real data against synthetic tensors:
#       images/s and seconds per epoch (bench_train.py)
#   (c) train_hf.py through torchrun with one process and with two (two GPUs if lent, else both on one)
#   (d) the 3D networks (hfmed.models3d): training volumes/s at 28^3 and 64^3, bf16, batch 32, on the
#       real AdrenalMNIST3D volumes (bench_3d.py; the file travels in .whl/data, since ../shared does not)
#
# On this machine first (the GPU image lacks datasets, evaluate and the loaders' inflate libraries):
#   benchmarks/gpu_wheels.sh          # pip download into ./.whl (git-ignored)
# then with the device tool: run(command="bash benchmarks/gpu.sh", carry=[".whl"], timeout_s=600).
# Budget: under 8 minutes on an H200 (data generation ~1-2 min, each part capped by `timeout`).
# `bash benchmarks/gpu.sh --tiny` is the CPU smoke test: nano models, tiny data, (a) skipped
# (bench_loaders generates its ~5 GB data set whatever the model).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/out}
mkdir -p "$OUT"
TINY=${1:-}
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HFMED_CACHE=/tmp/hfmed-gpu-cache
PY=${PYTHON:-python3}
if ! $PY -c "import datasets, evaluate" 2>/dev/null; then
  [ -d .whl ] || { echo "datasets/evaluate missing and no .whl folder: run benchmarks/gpu_wheels.sh here and carry .whl" >&2; exit 2; }
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 2
  export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
export PYTHONPATH=$PWD:${PYTHONPATH:-}
$PY - > "$OUT/env.json" <<'PY'
import json, os, torch, transformers, datasets, pyarrow
print(json.dumps({"gpu": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())], "cpus": os.cpu_count(),
                  "torch": torch.__version__, "transformers": transformers.__version__, "datasets": datasets.__version__,
                  "pyarrow": pyarrow.__version__}))
PY
cat "$OUT/env.json"
WORK=/tmp/hfmed-bench
if [ "$TINY" = "--tiny" ]; then
  timeout 900 $PY benchmarks/bench_train.py --tiny --work $WORK --json "$OUT/train.json"; echo "bench_train rc=$?"
  timeout 600 $PY benchmarks/bench_ddp.py --tiny --data $WORK/tiny/medmnist --work /tmp/hfmed-ddp --json "$OUT/ddp.json"; echo "bench_ddp rc=$?"
  exit 0
fi
GPUS=$($PY -c "import torch; print(torch.cuda.device_count())")
SHARE=$([ "$GPUS" -lt 2 ] && echo --share-gpu)
timeout 200 $PY benchmarks/bench_loaders.py --gpu --work $WORK --steps 40 > "$OUT/loaders_gpu.json"; echo "bench_loaders --gpu rc=$?"
timeout 180 $PY benchmarks/bench_train.py --work $WORK --steps 40 --warmup 5 --json "$OUT/train.json"; echo "bench_train rc=$?"
timeout 150 $PY benchmarks/bench_ddp.py --data $WORK/medmnist --work /tmp/hfmed-ddp --steps 40 $SHARE --json "$OUT/ddp.json"; echo "bench_ddp rc=$?"
timeout 90 $PY benchmarks/bench_3d.py --device cuda --batch 32 --bf16 --sizes small base --min_seconds 2 --min_steps 3 \
    --data .whl/data/adrenalmnist3d.npz --json "$OUT/bench_3d_gpu.json"; echo "bench_3d rc=$?"
