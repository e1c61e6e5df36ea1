"""Training-step img/s on one GPU: genimg's models beside the reference DCGAN, fp32 and bf16.

    PYTHONPATH=. python3 bench/gpu_throughput.py [--sizes 32,64,128] [--batches 256,1024]
        [--models gan,gan-resnet,vae] [--precisions fp32,bf16] [--seconds 2] [--device cuda]

For every image size (RGB, random pixels), batch size and precision, in one run:
- `reference`: the DCGAN of pytorch/examples (dcgan/main.py: ngf = ndf = 64, nz = 100, Adam
  2e-4 / (0.5, 0.999), D on real then on fake, then G), with one stage per doubling of the
  size, as its README builds it for 64 px; BCEWithLogitsLoss instead of Sigmoid + BCELoss,
  which autocast refuses (the same function, fused);
- genimg's `gan` (DCGAN-sized: latent 100, width 64, with its EMA generator), `gan-resnet`
  (its defaults) and `vae` (the CIFAR-10 preset's network): `recipe.step` of genimg.training,
  as the training loop calls it;
each timed over `--seconds` after `--warmup` steps, on a batch already on the device (the step
alone): `step` eager, `graph` the same step recorded once as a CUDA graph and replayed
(genimg.training.graphs.GraphedStep, from a uint8 batch on the device). bf16 runs use autocast +
channels_last. Then the real loop (`train_model`, uint8 records on the host, batches made per
step) for `gan` at 32 and 64 px: `loop` as it runs by default (a CUDA graph on one GPU) and
`loop-eager` (train.cuda_graph false), each beside its isolated step.

Prints one line per measurement and, last, one JSON object: {"rows": […], "summary": {…}} with
genimg gan / reference per size, batch and precision (eager and graphed), graph / eager step per
model, bf16 / fp32 per model, and loop / step. Needs only torch (no Ray, MLflow or boto3).
`--device cpu` runs the same code but the CUDA graphs (a smoke test).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from genimg.configs import CONFIGS_DIR
from genimg.models import build_model
from genimg.training.config import TrainConfig
from genimg.training.graphs import GraphedStep
from genimg.training.loop import prepare_model, to_pixels, train_model
from genimg.training.run import load_config_file
from genimg.training.steps import make_step_context, recipe_for

NZ, NGF, NDF = 100, 64, 64


class ReferenceGenerator(nn.Module):
    """pytorch/examples' DCGAN generator, one ConvTranspose stage per doubling from 4 × 4."""

    def __init__(self, size: int) -> None:
        super().__init__()
        stages = int(math.log2(size)) - 2  # 4 → size
        channels = NGF * 2 ** (stages - 1)
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(NZ, channels, 4, 1, 0, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(True),
        ]
        for _ in range(stages - 1):
            layers += [
                nn.ConvTranspose2d(channels, channels // 2, 4, 2, 1, bias=False),
                nn.BatchNorm2d(channels // 2),
                nn.ReLU(True),
            ]
            channels //= 2
        layers += [nn.ConvTranspose2d(channels, 3, 4, 2, 1, bias=False), nn.Tanh()]
        self.main = nn.Sequential(*layers)

    def forward(self, noise: Tensor) -> Tensor:
        return self.main(noise)  # type: ignore[no-any-return]


class ReferenceDiscriminator(nn.Module):
    """pytorch/examples' DCGAN discriminator (logits out)."""

    def __init__(self, size: int) -> None:
        super().__init__()
        stages = int(math.log2(size)) - 2
        channels = NDF
        layers: list[nn.Module] = [nn.Conv2d(3, channels, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, inplace=True)]
        for _ in range(stages - 1):
            layers += [
                nn.Conv2d(channels, channels * 2, 4, 2, 1, bias=False),
                nn.BatchNorm2d(channels * 2),
                nn.LeakyReLU(0.2, inplace=True),
            ]
            channels *= 2
        layers += [nn.Conv2d(channels, 1, 4, 1, 0, bias=False)]
        self.main = nn.Sequential(*layers)

    def forward(self, images: Tensor) -> Tensor:
        return self.main(images).view(-1)  # type: ignore[no-any-return]


def reference_step(size: int, batch: int, precision: str, device: torch.device) -> Callable[[Tensor], None]:
    """The training step of pytorch/examples' DCGAN (dcgan/main.py), as a function of the batch."""
    generator, discriminator = ReferenceGenerator(size).to(device), ReferenceDiscriminator(size).to(device)
    if precision != "fp32":
        generator.to(memory_format=torch.channels_last)
        discriminator.to(memory_format=torch.channels_last)
    criterion = nn.BCEWithLogitsLoss()
    optimizer_d = torch.optim.Adam(discriminator.parameters(), lr=2e-4, betas=(0.5, 0.999))
    optimizer_g = torch.optim.Adam(generator.parameters(), lr=2e-4, betas=(0.5, 0.999))
    real_label = torch.ones(batch, device=device)
    fake_label = torch.zeros(batch, device=device)
    autocast = make_step_context(precision, device).autocast

    def step(real: Tensor) -> None:
        discriminator.zero_grad()
        with autocast():
            error_real = criterion(discriminator(real), real_label)
        error_real.backward()
        noise = torch.randn(batch, NZ, 1, 1, device=device)
        with autocast():
            fake = generator(noise)
            error_fake = criterion(discriminator(fake.detach()), fake_label)
        error_fake.backward()
        optimizer_d.step()
        generator.zero_grad()
        with autocast():
            error_generator = criterion(discriminator(fake), real_label)
        error_generator.backward()
        optimizer_g.step()

    return step


def genimg_model_config(name: str, size: int) -> dict[str, Any]:
    shape = [3, size, size]
    if name == "gan":
        return {"image_shape": shape, "latent_dim": NZ, "width": 64}
    if name == "vae":
        return {**load_config_file(CONFIGS_DIR / "cifar10-vae.yaml").get("model", {}), "image_shape": shape}
    return {"image_shape": shape}


def train_config(batch: int, precision: str, steps: int = 1, cuda_graph: bool | None = None) -> TrainConfig:
    return TrainConfig(
        steps=steps,
        batch_size=batch,
        precision=precision,  # type: ignore[arg-type]
        channels_last=precision != "fp32",
        log_every=max(1, steps),
        checkpoint_every=max(1, steps),
        cuda_graph=cuda_graph,
    )


def genimg_step(
    name: str, size: int, batch: int, precision: str, device: torch.device, graphed: bool = False
) -> Callable[[Tensor], None]:
    """genimg's training step as a function of the batch: pixels (eager) or uint8 records (graphed)."""
    torch.manual_seed(0)
    model = build_model(name, genimg_model_config(name, size))
    config = train_config(batch, precision)
    prepare_model(model, config, device)
    recipe = recipe_for(model)
    optimizers = recipe.make_optimizers(model, config, capturable=graphed)
    context = make_step_context(precision, device, graphed=graphed)
    if graphed:
        runner = GraphedStep(recipe.step, model, optimizers, config, context, device, required=True)

        def replay(records: Tensor) -> None:
            runner(records)

        return replay

    def step(real: Tensor) -> None:
        recipe.step(model, optimizers, real, config, context)

    return step


def timed_rate(
    step: Callable[[Tensor], None], batch: Tensor, warmup: int, seconds: float, device: torch.device
) -> float:
    """img/s of `step` on `batch` after `warmup` steps, over at least `seconds` (synchronised)."""
    for _ in range(warmup):
        step(batch)
    if device.type == "cuda":
        torch.cuda.synchronize()
    started, steps = time.perf_counter(), 0
    while True:
        step(batch)
        steps += 1
        if steps % 5 == 0 or device.type != "cuda":
            if device.type == "cuda":
                torch.cuda.synchronize()
            elapsed = time.perf_counter() - started
            if elapsed >= seconds:
                return steps * len(batch) / elapsed


def loop_rate(
    size: int, batch: int, precision: str, steps: int, device: torch.device, cuda_graph: bool | None = None
) -> float:
    """img/s of the real loop (train_model): uint8 records on the host, a batch made per step."""
    torch.manual_seed(0)
    model = build_model("gan", genimg_model_config("gan", size))
    records = torch.randint(0, 256, (max(4 * batch, 2048), 3, size, size), dtype=torch.uint8)
    config = train_config(batch, precision, steps, cuda_graph)
    return train_model(model, records, config, device=device).images_per_second


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="32,64,128")
    parser.add_argument("--batches", default="256,1024")
    parser.add_argument("--models", default="gan,gan-resnet,vae")
    parser.add_argument("--precisions", default="fp32,bf16")
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--loop-steps", type=int, default=300)
    parser.add_argument("--device", default="cuda")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda":
        print(f"{torch.cuda.get_device_name()}  torch {torch.__version__}", flush=True)
    sizes = [int(s) for s in args.sizes.split(",")]
    batches = [int(b) for b in args.batches.split(",")]
    precisions = args.precisions.split(",")
    rows: list[dict[str, Any]] = []

    def record(model: str, size: int, batch: int, precision: str, kind: str, measure: Callable[[], float]) -> None:
        try:
            rate: float | str = round(measure())
        except torch.OutOfMemoryError:
            rate = "out of memory"
            torch.cuda.empty_cache()
        rows.append({"model": model, "size": size, "batch": batch, "precision": precision, "kind": kind, "img_s": rate})
        print(f"{kind:<5} {model:<10} {size:>4}px  batch {batch:>5}  {precision:<5} {rate!s:>10} img/s", flush=True)

    for size in sizes:
        for batch in batches:
            real = torch.rand(batch, 3, size, size, device=device) * 2 - 1
            for precision in precisions:
                layout = real.contiguous(memory_format=torch.channels_last) if precision != "fp32" else real
                record(
                    "reference",
                    size,
                    batch,
                    precision,
                    "step",
                    lambda: timed_rate(
                        reference_step(size, batch, precision, device), layout, args.warmup, args.seconds, device
                    ),
                )
                for name in args.models.split(","):
                    records = torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8, device=device)
                    pixels = to_pixels(records, device, precision != "fp32")
                    record(
                        name,
                        size,
                        batch,
                        precision,
                        "step",
                        lambda: timed_rate(
                            genimg_step(name, size, batch, precision, device), pixels, args.warmup, args.seconds, device
                        ),
                    )
                    if device.type == "cuda":
                        record(
                            name,
                            size,
                            batch,
                            precision,
                            "graph",
                            lambda: timed_rate(
                                genimg_step(name, size, batch, precision, device, graphed=True),
                                records,
                                args.warmup,
                                args.seconds,
                                device,
                            ),
                        )
    for size in [s for s in sizes if s <= 64]:
        for precision in precisions:
            record(
                "gan",
                size,
                batches[0],
                precision,
                "loop",
                lambda: loop_rate(size, batches[0], precision, args.loop_steps, device),
            )
            if device.type == "cuda":
                record(
                    "gan",
                    size,
                    batches[0],
                    precision,
                    "loop-eager",
                    lambda: loop_rate(size, batches[0], precision, args.loop_steps, device, cuda_graph=False),
                )
    print(
        json.dumps(
            {
                "device": torch.cuda.get_device_name() if device.type == "cuda" else str(device),
                "torch": torch.__version__,
                "rows": rows,
                "summary": summarise(rows),
            }
        )
    )


def summarise(rows: list[dict[str, Any]]) -> dict[str, float]:
    rate = {(r["model"], r["size"], r["batch"], r["precision"], r["kind"]): r["img_s"] for r in rows}
    summary: dict[str, float] = {}

    def ratio(name: str, value: float, baseline_key: tuple[Any, ...]) -> None:
        baseline = rate.get(baseline_key)
        if isinstance(baseline, (int, float)) and baseline > 0:
            summary[name] = round(value / baseline, 3)

    for (model, size, batch, precision, kind), value in rate.items():
        if not isinstance(value, (int, float)) or value <= 0:
            continue
        reference = ("reference", size, batch, precision, "step")
        if kind == "step" and model == "gan":
            ratio(f"gan_over_reference_{size}px_b{batch}_{precision}", value, reference)
        if kind == "graph" and model == "gan":
            ratio(f"gan_graph_over_reference_{size}px_b{batch}_{precision}", value, reference)
        if kind == "graph":
            ratio(
                f"graph_over_step_{model}_{size}px_b{batch}_{precision}", value, (model, size, batch, precision, "step")
            )
        if kind in ("step", "graph") and precision == "bf16":
            suffix = "" if kind == "step" else "_graph"
            ratio(f"bf16_over_fp32_{model}_{size}px_b{batch}{suffix}", value, (model, size, batch, "fp32", kind))
        if kind == "loop":  # the default loop: graphed on a GPU, eager elsewhere
            step_kind = "graph" if (model, size, batch, precision, "graph") in rate else "step"
            ratio(
                f"loop_over_step_{model}_{size}px_b{batch}_{precision}",
                value,
                (model, size, batch, precision, step_kind),
            )
        if kind == "loop-eager":
            ratio(
                f"eager_loop_over_step_{model}_{size}px_b{batch}_{precision}",
                value,
                (model, size, batch, precision, "step"),
            )
    return summary


if __name__ == "__main__":
    main()
