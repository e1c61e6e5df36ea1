#!/usr/bin/env bash
# One prepared GPU check (< 8 min on one H100): img/s per family at batch 256, fp32 vs bf16
# autocast + channels_last, eager then torch.compile. Needs only python3 with torch (CUDA),
# numpy, pillow, pyarrow, safetensors, pyyaml and scikit-learn: no install, no network.
# Usage (from the repository root on the GPU machine): bash bench/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
echo "== eager"
PYTHONPATH=. timeout 240 "$PY" bench/gpu_throughput.py --batch-size 256 --steps 200
echo "== torch.compile"
PYTHONPATH=. timeout 240 "$PY" bench/gpu_throughput.py --batch-size 256 --steps 200 --compile
