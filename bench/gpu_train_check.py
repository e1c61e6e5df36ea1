"""A timed training on one GPU through the real loop: `gan` on CIFAR-10-sized random data.

    PYTHONPATH=. python3 bench/gpu_train_check.py [--seconds 120] [--batch-size 256] [--device cuda]

50,000 random 32×32 RGB uint8 records on the host (CIFAR-10's training-set size), the CIFAR-10
preset's `gan` (genimg/configs/cifar10-gan.yaml) with `--gpu`'s defaults for 32 px (fp32; the step
recorded as a CUDA graph), trained by `genimg.training.train_model` for about `--seconds` (the
step count is set from a short probe run).
Prints one JSON object: steps, seconds, the loop's steady-state img/s and the last losses
(finite: the run trains). Needs only torch (no Ray, MLflow or boto3).
"""

from __future__ import annotations

import argparse
import json
import math
import time

import torch

from genimg.configs import CONFIGS_DIR
from genimg.models import build_model
from genimg.training.config import TrainConfig, gpu_defaults
from genimg.training.loop import train_model
from genimg.training.run import load_config_file


def train(records: torch.Tensor, steps: int, batch: int, device: torch.device) -> tuple[float, dict[str, float]]:
    torch.manual_seed(0)
    config = {**load_config_file(CONFIGS_DIR / "cifar10-gan.yaml").get("model", {}), "image_shape": [3, 32, 32]}
    model = build_model("gan", config)
    defaults = gpu_defaults(True, tuple(records.shape[1:])) if device.type == "cuda" else {}
    result = train_model(
        model,
        records,
        TrainConfig(steps=steps, batch_size=batch, log_every=max(1, steps // 10), checkpoint_every=steps, **defaults),
        device=device,
    )
    return result.images_per_second, result.metrics


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=120.0)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--records", type=int, default=50_000)
    parser.add_argument("--probe-steps", type=int, default=50)
    parser.add_argument("--device", default="cuda")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    records = torch.randint(0, 256, (args.records, 3, 32, 32), dtype=torch.uint8)
    probe_rate, _ = train(records, args.probe_steps, args.batch_size, device)
    steps = max(args.probe_steps, math.ceil(args.seconds * probe_rate / args.batch_size))
    started = time.perf_counter()
    rate, metrics = train(records, steps, args.batch_size, device)
    seconds = time.perf_counter() - started
    print(
        json.dumps(
            {
                "model": "gan (cifar10-gan.yaml)",
                "records": args.records,
                "batch": args.batch_size,
                "steps": steps,
                "seconds": round(seconds, 1),
                "images_per_second": round(rate),
                "final_metrics": {k: round(v, 4) for k, v in metrics.items()},
                "finite": all(math.isfinite(v) for v in metrics.values()),
            }
        )
    )


if __name__ == "__main__":
    main()
