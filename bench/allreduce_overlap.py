"""Gradient averaging on 2 ranks: genimg's overlapped all-reduce beside PyTorch's DDP, same network.

    PYTHONPATH=. python3 bench/allreduce_overlap.py [--steps 10] [--rounds 7] [--batch 64] [--size 32] [--width 64]

Two spawned processes (gloo, one thread each), the `gan` discriminator (genimg's conv encoder,
RGB, `--size` px, `--width` channels) trained on random images with Adam, in four ways measured
in the same run, taking turns (`--rounds` rounds of `--steps` steps each; the median rate): `none` (no averaging: the ranks' compute alone, the upper bound), `blocking`
(one flat all-reduce after backward), `overlapped` (genimg.distributed.gradients.
OverlappedAllReduce: bucketed all-reduces started from gradient hooks during backward, what Ray
Train workers use), and `ddp` (torch.nn.parallel.DistributedDataParallel, the baseline). Prints
steps/s per way and, last, one JSON object with the ratios to DDP. No Ray, MLflow or boto3.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from genimg.distributed.gradients import BlockingAllReduce, OverlappedAllReduce
from genimg.models.gan import ConvDiscriminator, GANConfig
from genimg.training.config import TrainConfig
from genimg.training.steps import GradientSync, apply_update, make_step_context, no_sync

WAYS = ("none", "blocking", "overlapped", "ddp")


def training_step(way: str, args: argparse.Namespace, rank: int) -> Callable[[], None]:
    """One Adam step of the discriminator on this rank's batch, its gradients averaged `way`."""
    torch.manual_seed(0)
    network: nn.Module = ConvDiscriminator(GANConfig(image_shape=(3, args.size, args.size), width=args.width))
    parameters = list(network.parameters())
    optimizer = torch.optim.Adam(parameters, lr=2e-4)
    sync: GradientSync = {"blocking": BlockingAllReduce(), "overlapped": OverlappedAllReduce()}.get(way, no_sync)
    context = make_step_context("fp32", torch.device("cpu"), sync)
    if way == "ddp":
        network = DistributedDataParallel(network)
    generator = torch.Generator().manual_seed(rank)
    images = torch.rand(args.batch, 3, args.size, args.size, generator=generator) * 2 - 1
    config = TrainConfig()

    def step() -> None:
        loss = nn.functional.softplus(-network(images)).mean()
        apply_update(loss, optimizer, parameters, config, context)

    return step


def rank_main(rank: int, args: argparse.Namespace, folder: str) -> None:
    """Every way in turn, `--rounds` times (machine noise hits them alike); the median rate."""
    dist.init_process_group("gloo", init_method=f"file://{folder}/rendezvous", rank=rank, world_size=2)
    try:
        torch.set_num_threads(1)
        steps = {way: training_step(way, args, rank) for way in WAYS}
        rates: dict[str, list[float]] = {way: [] for way in WAYS}
        for round_index in range(args.rounds + 1):
            for way, step in steps.items():
                dist.barrier()
                started = time.perf_counter()
                for _ in range(args.steps):
                    step()
                dist.barrier()
                if round_index > 0:  # round 0 warms up
                    rates[way].append(args.steps / (time.perf_counter() - started))
        if rank == 0:
            (Path(folder) / "rates.json").write_text(json.dumps({w: statistics.median(r) for w, r in rates.items()}))
    finally:
        dist.destroy_process_group()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--width", type=int, default=64)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        mp.spawn(rank_main, args=(args, folder), nprocs=2, join=True)
        rates = json.loads((Path(folder) / "rates.json").read_text())
    for way in WAYS:
        print(f"{way:<11} {rates[way]:8.2f} steps/s", flush=True)
    ratios = {f"{way}_over_ddp": round(rates[way] / rates["ddp"], 3) for way in WAYS if way != "ddp"}
    print(json.dumps({"steps_per_second": {way: round(rate, 2) for way, rate in rates.items()}, **ratios}))


if __name__ == "__main__":
    main()
