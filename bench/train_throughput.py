"""Training throughput: `genimg train` on Ray Train (1 worker) vs a plain PyTorch loop.

    .venv/bin/python bench/train_throughput.py [--families vae,gan,gan-mlp,rvae] [--json]

For each family, in one run and on the same model config (the shipped preset), data and batch:
- torch: a plain single-process loop calling the family's step function on batches of the data,
- ray:   `train_on_ray(..., workers=1)` on a local Ray, the worker given all CPUs,
both after a warm-up, as images/s in steady state (the Ray figure comes from the worker's own
step timestamps, so Ray start-up and worker launch are excluded; they are printed apart).
Goal: ratio ≥ 0.97. Sequence models count frames (a 10-frame sequence = 10 images).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import torch

from genimg.configs import CONFIGS_DIR
from genimg.data.readers import read_source
from genimg.models import model_spec
from genimg.training.loop import BatchSchedule, to_batch
from genimg.training.run import load_config_file, merge_sections, resolve_run_config
from genimg.training.steps import recipe_for

CONFIGS = CONFIGS_DIR  # the packaged presets (genimg/configs/)
FAMILIES = {
    "gan-mlp": ("builtin:digits", "gan-mlp-digits.yaml", 2000),
    "gan": ("builtin:digits", "gan-digits.yaml", 600),
    "vae": ("builtin:digits", "vae-digits.yaml", 1000),
    "rvae": ("builtin:moving-digits", "rvae-moving-digits.yaml", 150),
}
WARMUP_STEPS = 20


def sections_for(preset: str, steps: int) -> dict:
    return merge_sections(
        load_config_file(CONFIGS / preset), {"train": {"steps": steps, "log_every": 10, "checkpoint_every": steps}}
    )


def torch_loop(model_name: str, source: str, preset: str, steps: int) -> float:
    dataset = read_source(source)
    run = resolve_run_config(model_name, sections_for(preset, steps), dataset)
    torch.manual_seed(0)
    model = model_spec(model_name).model_cls(run.model).train()
    recipe = recipe_for(model)
    optimizers = recipe.make_optimizers(model, run.train)
    records = torch.from_numpy(dataset.data)
    schedule = BatchSchedule(len(records), run.train.batch_size, 0)
    device = torch.device("cpu")
    for step in range(WARMUP_STEPS):
        recipe.step(model, optimizers, to_batch(records, schedule.indices(step), device, False), run.train)
    started = time.perf_counter()
    for step in range(WARMUP_STEPS, steps):
        recipe.step(model, optimizers, to_batch(records, schedule.indices(step), device, False), run.train)
    elapsed = time.perf_counter() - started
    frames = dataset.num_frames or 1
    return (steps - WARMUP_STEPS) * schedule.batch_size * frames / elapsed


def ray_run(model_name: str, source: str, preset: str, steps: int) -> tuple[float, float]:
    from genimg.data.handle import resolve_dataset
    from genimg.distributed.trainer import train_on_ray
    from genimg.models import model_spec

    started = time.perf_counter()
    handle = resolve_dataset(source, model_spec(model_name).data_kind)
    result = train_on_ray(
        model_name,
        handle,
        sections_for(preset, steps),
        workers=1,
        run_name=f"bench-{model_name}-{int(time.time())}",
        samples=False,
    )
    frames = 10 if model_name == "rvae" else 1
    return result.images_per_second * frames, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", default=",".join(FAMILIES))
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    import os

    from genimg.distributed.cluster import ray_session

    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="genimg-bench-") as home:
        os.environ["GENIMG_HOME"] = home
        os.environ.pop("GENIMG_STORE", None)
        with ray_session():
            for name in args.families.split(","):
                source, preset, steps = FAMILIES[name]
                torch_rate = torch_loop(name, source, preset, steps)
                ray_rate, wall = ray_run(name, source, preset, steps)
                results[name] = {
                    "ray_img_s": round(ray_rate, 1),
                    "torch_img_s": round(torch_rate, 1),
                    "ratio": round(ray_rate / torch_rate, 3),
                    "ray_wall_s": round(wall, 1),
                }
    if args.json:
        print(json.dumps(results))
        return
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; ray worker gets every CPU")
    print(f"{'family':<8} {'torch img/s':>12} {'ray img/s':>10} {'ratio':>6} {'ray wall s':>11}")
    for name, row in results.items():
        print(
            f"{name:<8} {row['torch_img_s']:>12.0f} {row['ray_img_s']:>10.0f} {row['ratio']:>6.2f} "
            f"{row['ray_wall_s']:>11.1f}"
        )


if __name__ == "__main__":
    main()
