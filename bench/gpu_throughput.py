"""Training images/s per family on one GPU: bf16 autocast, channels_last, optional compile.

    PYTHONPATH=. python3 bench/gpu_throughput.py [--batch-size 256] [--steps 200] [--compile]

Runs the plain-PyTorch steps of genimg.training in this process (no Ray, MLflow or boto3, so
it runs on a bare GPU image with torch), on the builtin data at each family's preset, and prints
img/s for fp32 and bf16 (+ channels_last for conv models) with their ratio. `--device cpu`
runs the same code on the CPU (a smoke test).
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from genimg.config import replace_config
from genimg.configs import CONFIGS_DIR
from genimg.data.readers import read_source
from genimg.models import model_spec
from genimg.training.loop import BatchSchedule, prepare_model, to_batch
from genimg.training.run import load_config_file, merge_sections, resolve_run_config
from genimg.training.steps import make_step_context, recipe_for

CONFIGS = CONFIGS_DIR  # the packaged presets (genimg/configs/)
FAMILIES = {
    "gan-mlp": ("builtin:digits", "gan-mlp-digits.yaml"),
    "gan": ("builtin:digits", "gan-digits.yaml"),
    "vae": ("builtin:digits", "vae-digits.yaml"),
    "rvae": ("builtin:moving-digits", "rvae-moving-digits.yaml"),
}


def images_per_second(name: str, precision: str, args: argparse.Namespace, device: torch.device) -> float:
    source, preset = FAMILIES[name]
    dataset = read_source(source)
    run = resolve_run_config(name, merge_sections(load_config_file(CONFIGS / preset)), dataset)
    conv = name != "gan-mlp"
    train = replace_config(run.train, {
        "batch_size": args.batch_size, "precision": precision,
        "channels_last": conv and precision != "fp32", "compile": args.compile and precision != "fp32",
    })
    torch.manual_seed(0)
    model = model_spec(name).model_cls(run.model)
    prepare_model(model, train, device)
    recipe = recipe_for(model)
    optimizers = recipe.make_optimizers(model, train)
    context = make_step_context(precision, device)
    records = torch.from_numpy(dataset.data).to(device)
    schedule = BatchSchedule(len(records), train.batch_size, 0)

    def step(i: int) -> None:
        recipe.step(model, optimizers, to_batch(records, schedule.indices(i), device, train.channels_last), train, context)

    for i in range(args.warmup):
        step(i)
    if device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    for i in range(args.steps):
        step(args.warmup + i)
    if device.type == "cuda":
        torch.cuda.synchronize()
    frames = dataset.num_frames or 1
    return args.steps * schedule.batch_size * frames / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--families", default=",".join(FAMILIES))
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda":
        print(f"{torch.cuda.get_device_name()}  torch {torch.__version__}  batch {args.batch_size}")
    results = {}
    for name in args.families.split(","):
        fp32 = images_per_second(name, "fp32", args, device)
        bf16 = images_per_second(name, "bf16", args, device)
        results[name] = {"fp32_img_s": round(fp32), "bf16_img_s": round(bf16), "ratio": round(bf16 / fp32, 2)}
        print(f"{name:<8} fp32 {fp32:>10.0f} img/s   bf16{'+compile' if args.compile else ''} "
              f"{bf16:>10.0f} img/s   x{bf16 / fp32:.2f}", flush=True)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
