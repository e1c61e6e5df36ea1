#!/usr/bin/env bash
# CIFAR-10 sample quality on one GPU (≤ 8 minutes on one H100): bench/quality_cifar10.py with the
# presets' widths (--widths preset: gan and gan-resnet 64, vae 64/128 as in genimg/configs/cifar10-*.yaml),
# bf16, 70 s of training per family, 5,000 samples per evaluation, VAE NLL with k = 100.
# Torch only (no Ray, MLflow, Prefect or network): needs python3 with torch (CUDA), numpy, pillow,
# pyarrow, safetensors, pyyaml, scipy, scikit-learn and torchmetrics, and the CIFAR-10 archive.
# Usage (repository root on the GPU machine):
#   bash bench/gpu_quality.sh [CIFAR10_DIR] [extra quality_cifar10.py options]
# A CPU smoke test of the same script: DEVICE=cpu BUDGET=5 bash bench/gpu_quality.sh DIR --limit 400 --extractor-steps 20 --samples 64 --widths cpu
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
CIFAR10="${1:-../shared/data/cifar10}"
shift || true
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true
mkdir -p "${OUT:-docs}"
PYTHONPATH=. timeout 470 "$PY" bench/quality_cifar10.py --cifar10 "$CIFAR10" --device "${DEVICE:-cuda}" \
    --budget "${BUDGET:-70}" --widths preset --samples 5000 --nll-k 100 --grids "${OUT:-docs}" "$@"
