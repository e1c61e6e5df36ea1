"""Gradient averaging on 2 gloo ranks (torch.distributed in spawned processes, no Ray).

The overlapped all-reduce that Ray Train workers use gives the same weights, bit for bit, as a
blocking all-reduce after backward, for every family (a GAN's two phases and WGAN-GP's double
backward included); its all-reduces start during the backward pass; and the averaged gradients
equal a single process's on the global batch."""

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from genimg.distributed.gradients import BlockingAllReduce, OverlappedAllReduce
from genimg.models import build_model
from genimg.training import TrainConfig
from genimg.training.steps import apply_update, make_step_context, no_sync, recipe_for
from tests.conftest import tiny_config

FAMILIES = {
    "gan": {"ema_decay": 0.9},
    "gan-wgan-gp": {"loss": "wgan-gp"},
    "vae": {},
    "rvae": {},
}


def on_two_ranks(function, folder) -> list[dict]:
    mp.spawn(rank_main, args=(function.__name__, str(folder)), nprocs=2, join=True)
    return [torch.load(folder / f"rank-{rank}.pt") for rank in range(2)]


def rank_main(rank: int, function: str, folder: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{folder}/rendezvous", rank=rank, world_size=2)
    try:
        torch.set_num_threads(1)
        torch.save(globals()[function](rank), f"{folder}/rank-{rank}.pt")
    finally:
        dist.destroy_process_group()


def records_of(name: str, rank: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(rank)
    shape = (16, 4, 1, 16, 16) if name == "rvae" else (16, 1, 16, 16)
    return torch.randint(0, 256, shape, dtype=torch.uint8, generator=generator)


def train_three_steps(case: str, rank: int, sync) -> dict[str, torch.Tensor]:
    name = case.split("-")[0]
    torch.manual_seed(0)
    model = build_model(name, tiny_config(name, (1, 16, 16), **FAMILIES[case]))
    config = TrainConfig(batch_size=8)
    recipe = recipe_for(model)
    optimizers = recipe.make_optimizers(model, config)
    context = make_step_context("fp32", torch.device("cpu"), sync)
    torch.manual_seed(100 + rank)  # each rank its own noise
    records = records_of(name, rank).float() / 255
    for step in range(3):
        recipe.step(model, optimizers, records[step * 4 : step * 4 + 8], config, context)
    return {key: value.clone() for key, value in model.state_dict().items()}


def overlapped_and_blocking(rank: int) -> dict:
    out = {}
    for case in FAMILIES:
        overlapped = OverlappedAllReduce(bucket_bytes=256)  # small buckets: several per network
        out[case] = {
            "blocking": train_three_steps(case, rank, BlockingAllReduce()),
            "overlapped": train_three_steps(case, rank, overlapped),
            "started_in_backward": overlapped.started_in_backward,
            "buckets": max(len(plan) for plan in overlapped.plans.values()),
        }
    return out


def test_the_overlapped_all_reduce_gives_the_blocking_ones_weights_and_starts_in_backward(tmp_path):
    for rank, out in enumerate(on_two_ranks(overlapped_and_blocking, tmp_path)):
        for case, result in out.items():
            for key, blocking in result["blocking"].items():
                assert torch.equal(blocking, result["overlapped"][key]), (rank, case, key)
            assert result["buckets"] > 1 and result["started_in_backward"] > 0, (rank, case, result["buckets"])


def averaged_against_one_process(rank: int) -> dict:
    """An MLP (no noise, no BatchNorm): 2 ranks × 4 records averaged vs 1 process × 8 records."""
    generator = torch.Generator().manual_seed(0)
    inputs, targets = torch.randn(8, 5, generator=generator), torch.randn(8, 1, generator=generator)

    def train(rows: slice, sync) -> list[torch.Tensor]:
        torch.manual_seed(1)
        network = nn.Sequential(nn.Linear(5, 32), nn.Tanh(), nn.Linear(32, 1))
        parameters = list(network.parameters())
        optimizer = torch.optim.Adam(parameters, lr=1e-2)
        context = make_step_context("fp32", torch.device("cpu"), sync)
        for _ in range(3):
            loss = nn.functional.mse_loss(network(inputs[rows]), targets[rows])
            apply_update(loss, optimizer, parameters, TrainConfig(), context)
        return [p.detach().clone() for p in parameters]

    return {
        "ranks": train(slice(4 * rank, 4 * rank + 4), OverlappedAllReduce(bucket_bytes=64)),
        "one_process": train(slice(0, 8), no_sync),
    }


def test_averaged_gradients_equal_one_process_on_the_global_batch(tmp_path):
    for out in on_two_ranks(averaged_against_one_process, tmp_path):
        for ranks, single in zip(out["ranks"], out["one_process"], strict=True):
            assert torch.allclose(ranks, single, atol=1e-6, rtol=0), (ranks - single).abs().max()


def test_the_first_bucket_is_small_so_averaging_starts_early_in_backward():
    """Like DDP: the last layers (their gradients come first) fill a small first bucket."""
    network = nn.Sequential(nn.Linear(100, 100), nn.Linear(100, 100), nn.Linear(100, 10))
    parameters = list(network.parameters())
    buckets = OverlappedAllReduce(bucket_bytes=100_000, first_bucket_bytes=1_000).plan(parameters)
    assert buckets[0] == [parameters[-1], parameters[-2]]  # 40 + 4,000 bytes: past 1,000
    assert [len(bucket) for bucket in buckets] == [2, 4]  # then up to 100,000 bytes a bucket
    assert OverlappedAllReduce(bucket_bytes=100_000, first_bucket_bytes=100_000).plan(parameters) == [parameters[::-1]]
