#!/usr/bin/env bash
# The RVAE on Moving MNIST on one GPU (≤ 8 minutes on one H100): bench/quality_moving_mnist.py
# with twice the preset's channels (width 32, frame_dim 64, hidden_dim 64, z 8 per position),
# batch 32, 6 minutes of training, 1,000 held-out test sequences, K = 5 continuations each.
# Torch only (no Ray, MLflow, Prefect or network): needs python3 with torch (CUDA), numpy,
# pillow, pyyaml, scipy and torchmetrics, and the MNIST test images (IDX, gz).
# Usage (repository root on the GPU machine):
#   bash bench/gpu_quality_mmnist.sh [MNIST_DIR] [extra quality_moving_mnist.py options]
# A CPU smoke test of the same script: DEVICE=cpu BUDGET=5 bash bench/gpu_quality_mmnist.sh DIR --test-sequences 8 --train-sequences 64
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
MNIST="${1:-../shared/data/mnist}"
shift || true
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true
mkdir -p "${OUT:-docs}"
PYTHONPATH=. timeout 470 "$PY" bench/quality_moving_mnist.py --mnist "$MNIST" --device "${DEVICE:-cuda}" \
    --budget "${BUDGET:-360}" --test-sequences 1000 --best-of 5 \
    --set model.width=32 --set model.frame_dim=64 --set model.hidden_dim=64 --set model.latent_dim=8 \
    --set train.batch_size=32 --gif "${OUT:-docs}/moving-mnist-rvae-gpu.gif" "$@"
