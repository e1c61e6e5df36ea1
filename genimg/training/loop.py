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
from genimg.training.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from genimg.training.config import TrainConfig
from genimg.training.steps import GradientSync, mean_metrics, no_sync, recipe_for

LogCallback = Callable[[int, dict[str, float]], None]


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


def to_batch(records: Tensor, indices: Tensor, device: torch.device) -> Tensor:
    """uint8 records → float pixels in [0, 1] on `device`."""
    return records[indices].to(device, non_blocking=True).float().div_(255.0)


def train_model(
    model: GenerativeModel,
    records: Tensor,
    config: TrainConfig,
    *,
    device: str | torch.device = "cpu",
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
    on_log: LogCallback | None = None,
    gradient_sync: GradientSync = no_sync,
) -> TrainResult:
    """Train `model` on uint8 `records` ((N, C, H, W) or (N, T, C, H, W)) up to `config.steps`.

    With `resume` and a checkpoint in `checkpoint_dir`, training continues from its step with
    its optimiser and RNG state, so the result equals an uninterrupted run (bit for bit on CPU).
    """
    device = torch.device(device)
    model.to(device).train()
    recipe = recipe_for(model)
    optimizers = recipe.make_optimizers(model, config)
    step = 0
    latest = latest_checkpoint(checkpoint_dir) if (resume and checkpoint_dir) else None
    if latest is not None:
        step = int(load_checkpoint(latest.path, model, optimizers)["step"])
    else:
        seed_everything(config.seed)
    resumed_from_step = step
    schedule = BatchSchedule(len(records), config.batch_size, config.seed)
    window: list[dict[str, Tensor]] = []
    history: list[tuple[int, dict[str, float]]] = []
    metrics: dict[str, float] = {}
    checkpoint = latest.path if latest is not None else None
    started, start_step = time.perf_counter(), step
    while step < config.steps:
        batch = to_batch(records, schedule.indices(step), device)
        window.append(recipe.step(model, optimizers, batch, config, gradient_sync))
        step += 1
        if step % config.log_every == 0 or step == config.steps:
            metrics = mean_metrics(window) | {"step": float(step)}
            window.clear()
            history.append((step, metrics))
            if on_log is not None:
                on_log(step, metrics)
        if checkpoint_dir is not None and (step % config.checkpoint_every == 0 or step == config.steps):
            checkpoint = save_checkpoint(
                checkpoint_dir, model, optimizers, step, config, keep=config.keep_checkpoints
            )
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
