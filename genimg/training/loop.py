"""The local training loop: batches, steps, periodic logging and checkpoints, resume."""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from genimg.models.base import GenerativeModel
from genimg.training.checkpoint import (
    latest_checkpoint,
    load_checkpoint,
    restore_rank_rng,
    save_checkpoint,
    write_checkpoint_files,
    write_rank_rng,
)
from genimg.training.config import TrainConfig
from genimg.training.steps import GradientSync, make_step_context, mean_metrics, no_sync, recipe_for

LogCallback = Callable[[int, dict[str, float]], None]
# Writes this rank's part of a checkpoint into the folder it is given (rank 0: the whole
# checkpoint; other ranks: their RNG state).
CheckpointWriter = Callable[[Path], None]
CheckpointCallback = Callable[[int, dict[str, float], CheckpointWriter], None]


class BatchSchedule:
    """Which records form the batch of each step: a fresh permutation per epoch, derived from
    (seed, epoch) alone, so any step's batch is known without replaying earlier ones (exact
    resume needs no data-loader state). The last partial batch of an epoch is dropped."""

    def __init__(self, num_records: int, batch_size: int, seed: int) -> None:
        if num_records < 1:
            raise ValueError("no records to train on")
        self.num_records = num_records
        self.batch_size = min(batch_size, num_records)
        self.seed = seed
        self.batches_per_epoch = num_records // self.batch_size
        self._epoch = -1
        self._order: Tensor | None = None

    def epoch_order(self, epoch: int) -> Tensor:
        if epoch != self._epoch:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._order = torch.randperm(self.num_records, generator=generator)
            self._epoch = epoch
        assert self._order is not None
        return self._order

    def indices(self, step: int) -> Tensor:
        epoch, position = divmod(step, self.batches_per_epoch)
        start = position * self.batch_size
        return self.epoch_order(epoch)[start : start + self.batch_size]

    def steps_for_epochs(self, epochs: float) -> int:
        return max(1, math.ceil(epochs * self.batches_per_epoch))


@dataclass
class TrainResult:
    step: int
    metrics: dict[str, float]
    checkpoint: Path | None
    resumed_from_step: int
    images_per_second: float
    history: list[tuple[int, dict[str, float]]] = field(default_factory=list)


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def rank_seed(seed: int, rank: int) -> int:
    """Each data-parallel rank draws its own noise and batches (rank 0 keeps `seed`)."""
    return seed + 1_000_003 * rank


def to_batch(records: Tensor, indices: Tensor, device: torch.device, channels_last: bool) -> Tensor:
    """uint8 records → float pixels in [0, 1] on `device`."""
    batch = records[indices].to(device, non_blocking=True).float().div_(255.0)
    if channels_last and batch.dim() == 4:
        batch = batch.contiguous(memory_format=torch.channels_last)
    return batch


def prepare_model(model: GenerativeModel, config: TrainConfig, device: torch.device) -> None:
    model.to(device).train()
    if config.channels_last:
        model.to(memory_format=torch.channels_last)
    if config.compile:
        # In place (nn.Module.compile), so parameter names and checkpoints do not change.
        for child in model.children():
            if any(True for _ in child.parameters()):
                child.compile()


def train_model(
    model: GenerativeModel,
    records: Tensor,
    config: TrainConfig,
    *,
    device: str | torch.device = "cpu",
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
    restore_from: Path | None = None,
    on_log: LogCallback | None = None,
    on_checkpoint: CheckpointCallback | None = None,
    gradient_sync: GradientSync = no_sync,
    rank: int = 0,
) -> TrainResult:
    """Train `model` on uint8 `records` ((N, C, H, W) or (N, T, C, H, W)) up to `config.steps`.

    Checkpoints (every `checkpoint_every` steps and at the end) go to `checkpoint_dir`, or, when
    `on_checkpoint` is given, to that callback with a writer for this rank's files. With
    `resume`, training continues from the latest checkpoint in `checkpoint_dir` (or from
    `restore_from`) with its optimiser and RNG state, so the result equals an uninterrupted run
    (bit for bit on CPU). In data-parallel runs each `rank` passes its own shard of `records`
    and an all-reduce as `gradient_sync`.
    """
    device = torch.device(device)
    prepare_model(model, config, device)
    recipe = recipe_for(model)
    optimizers = recipe.make_optimizers(model, config)
    context = make_step_context(config.precision, device, gradient_sync)
    step = 0
    if restore_from is None and resume and checkpoint_dir is not None:
        latest = latest_checkpoint(checkpoint_dir)
        restore_from = latest.path if latest is not None else None
    if restore_from is not None:
        step = int(load_checkpoint(restore_from, model, optimizers, scaler=context.scaler,
                                   restore_rngs=rank == 0)["step"])
        if rank != 0 and not restore_rank_rng(restore_from, rank):
            seed_everything(rank_seed(config.seed + step, rank))
    else:
        seed_everything(rank_seed(config.seed, rank))
    resumed_from_step = step
    schedule = BatchSchedule(len(records), config.batch_size, rank_seed(config.seed, rank))
    window: list[dict[str, Tensor]] = []
    history: list[tuple[int, dict[str, float]]] = []
    metrics: dict[str, float] = {}
    checkpoint = restore_from
    started, start_step = time.perf_counter(), step

    def write_files(folder: Path) -> None:
        if rank == 0:
            write_checkpoint_files(folder, model, optimizers, step, config, context.scaler)
        else:
            write_rank_rng(folder, rank)

    while step < config.steps:
        batch = to_batch(records, schedule.indices(step), device, config.channels_last)
        window.append(recipe.step(model, optimizers, batch, config, context))
        step += 1
        checkpoint_now = step % config.checkpoint_every == 0 or step == config.steps
        if step % config.log_every == 0 or checkpoint_now:
            metrics = mean_metrics(window) | {"step": float(step)}
            window.clear()
            history.append((step, metrics))
            if on_log is not None:
                on_log(step, metrics)
        if checkpoint_now and on_checkpoint is not None:
            on_checkpoint(step, metrics, write_files)
        elif checkpoint_now and checkpoint_dir is not None:
            checkpoint = save_checkpoint(checkpoint_dir, model, optimizers, step, config,
                                         keep=config.keep_checkpoints, scaler=context.scaler)
    elapsed = time.perf_counter() - started
    trained = (step - start_step) * schedule.batch_size
    return TrainResult(
        step=step,
        metrics=metrics or {"step": float(step)},
        checkpoint=checkpoint,
        resumed_from_step=resumed_from_step,
        images_per_second=trained / elapsed if elapsed > 0 else 0.0,
        history=history,
    )
