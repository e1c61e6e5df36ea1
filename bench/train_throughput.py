"""Training throughput per model family, as ratios to the gan-mlp baseline (same process).

    .venv/bin/python bench/train_throughput.py [--steps 30] [--batch-size 64]

Each family trains on its builtin dataset with its shipped preset (configs/), after a few
warm-up steps; images/s counts frames for sequence models (a 10-frame sequence = 10 images).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from genimg.data import read_source
from genimg.models import model_spec
from genimg.training.run import load_config_file, merge_sections, resolve_run_config
from genimg.training.steps import recipe_for

CONFIGS = Path(__file__).parent.parent / "configs"
FAMILIES = [
    ("gan-mlp", "builtin:digits", "gan-mlp-digits.yaml"),
    ("gan", "builtin:digits", "gan-digits.yaml"),
    ("vae", "builtin:digits", "vae-digits.yaml"),
    ("rvae", "builtin:moving-digits", "rvae-moving-digits.yaml"),
]


def images_per_second(model_name: str, source: str, preset: str, steps: int, batch_size: int) -> float:
    dataset = read_source(source)
    sections = merge_sections(load_config_file(CONFIGS / preset), {"train": {"batch_size": batch_size}})
    run = resolve_run_config(model_name, sections, dataset)
    torch.manual_seed(0)
    model = model_spec(model_name).model_cls(run.model).train()
    recipe = recipe_for(model)
    optimizers = recipe.make_optimizers(model, run.train)
    batch = torch.from_numpy(dataset.data[:batch_size]).float() / 255
    for _ in range(3):
        recipe.step(model, optimizers, batch, run.train)
    started = time.perf_counter()
    for _ in range(steps):
        recipe.step(model, optimizers, batch, run.train)
    elapsed = time.perf_counter() - started
    frames = dataset.num_frames or 1
    return steps * batch_size * frames / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch_size}")
    results = {name: images_per_second(name, source, preset, args.steps, args.batch_size)
               for name, source, preset in FAMILIES}
    baseline = results["gan-mlp"]
    print(f"{'model':<8} {'images/s':>10} {'vs gan-mlp':>11}")
    for name, rate in results.items():
        print(f"{name:<8} {rate:>10.0f} {rate / baseline:>10.2f}x")


if __name__ == "__main__":
    main()
