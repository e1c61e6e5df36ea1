#!/usr/bin/env bash
# One prepared GPU check (< 8 min on one H100): the training step's img/s for gan, gan-resnet and
# vae, eager and as a CUDA graph, beside the reference DCGAN of pytorch/examples (32, 64, 128 px;
# batch 256 and 1024; fp32 and bf16) and the real loop (graphed and eager) beside the isolated step (bench/gpu_throughput.py, < 6 min), then a
# 2-minute training through genimg.training.train_model on CIFAR-10-sized random data
# (bench/gpu_train_check.py). Prints one JSON summary last. Needs only python3 with torch (CUDA),
# numpy, pillow, pyarrow, safetensors, pyyaml and scikit-learn: no install, no network.
# Usage (from the repository root on the GPU machine): bash bench/gpu_check.sh
# DEVICE=cpu SECONDS_PER_RUN=0.1 … runs the same on a CPU (a smoke test; extra arguments go to
# gpu_throughput.py).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
DEVICE="${DEVICE:-cuda}"
TRAIN_SECONDS="${TRAIN_SECONDS:-120}"
OUT="$(mktemp -d)"
trap 'rm -rf "$OUT"' EXIT
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
PYTHONPATH=. timeout 420 "$PY" bench/gpu_throughput.py --device "$DEVICE" --seconds "${SECONDS_PER_RUN:-1.5}" "$@" \
  | tee "$OUT/throughput.log"
PYTHONPATH=. timeout 200 "$PY" bench/gpu_train_check.py --device "$DEVICE" --seconds "$TRAIN_SECONDS" \
  ${TRAIN_ARGS:-} | tee "$OUT/train.log"
"$PY" - "$OUT" <<'PYTHON'
import json, sys
from pathlib import Path

out = Path(sys.argv[1])
last = lambda name: json.loads((out / name).read_text().strip().splitlines()[-1])
throughput = last("throughput.log")
print(json.dumps({"device": throughput["device"], "torch": throughput["torch"], "summary": throughput["summary"],
                  "train_check": last("train.log"), "rows": throughput["rows"]}))
PYTHON
