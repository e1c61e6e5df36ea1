"""The local training loop: batches, steps, periodic logging and checkpoints, resume."""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Generator
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from genimg.data.streaming import RecordStream
from genimg.errors import GenimgError, TrainingDiverged
from genimg.models.base import GenerativeModel
from genimg.training.checkpoint import (
    latest_checkpoint,
    load_checkpoint,
    remove_stale_staging,
    restore_rank_rng,
    save_checkpoint,
    write_checkpoint_files,
    write_rank_rng,
)
from genimg.training.config import TrainConfig
from genimg.training.graphs import GraphedStep, uses_cuda_graph
from genimg.training.steps import (
    GradientSync,
    Optimizers,
    Recipe,
    StepContext,
    make_step_context,
    mean_metrics,
    no_sync,
    recipe_for,
    to_pixels,
)

LogCallback = Callable[[int, dict[str, float]], None]
# Called after every step with the step and the images per second of the steps so far (0 until
# two steps are timed): cheap, for progress that is driven by time rather than by log_every.
StepCallback = Callable[[int, float], None]
# Data-parallel ranks must stop at the same step: each passes whether its own losses are finite
# and gets back whether every rank's are (an all-reduce); a single process passes it through.
FiniteCheck = Callable[[bool], bool]
THROUGHPUT_METRIC = "images_per_second"
# Writes this rank's part of a checkpoint into the folder it is given (rank 0: the whole
# checkpoint; other ranks: their RNG state).
CheckpointWriter = Callable[[Path], None]
CheckpointCallback = Callable[[int, dict[str, float], CheckpointWriter], None]


class BatchSchedule:
    """Which records form the batch of each step: a fresh permutation per epoch, derived from
    (seed, epoch) alone, so any step's batch is known without replaying earlier ones (exact
    resume needs no data-loader state). The last partial batch of an epoch is dropped."""

    def __init__(self, num_records: int, batch_size: int, seed: int, device: torch.device | None = None) -> None:
        if num_records < 1:
            raise ValueError("no records to train on")
        self.num_records = num_records
        self.batch_size = min(batch_size, num_records)
        self.seed = seed
        self.device = device  # where the indices go (the records' device): drawn on the CPU all the same
        self.batches_per_epoch = num_records // self.batch_size
        self._epoch = -1
        self._order: Tensor | None = None

    def epoch_order(self, epoch: int) -> Tensor:
        if epoch != self._epoch:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            order = torch.randperm(self.num_records, generator=generator)
            self._order = order.to(self.device) if self.device is not None else order
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
    images_per_second: float  # steady state: the first step (warm-up, lazy init) is not timed
    history: list[tuple[int, dict[str, float]]] = field(default_factory=list)


class Throughput:
    """Images per second measured where the steps run, from the end of the first step on (it
    carries one-off costs: allocations, cuDNN autotuning, compilation). `window()` gives the rate
    since the previous call, `overall()` the rate of every timed step."""

    def __init__(self, images_per_step: int) -> None:
        self.images_per_step = images_per_step
        self.start: tuple[int, float] | None = None
        self.mark: tuple[int, float] | None = None

    def step_done(self, step: int) -> None:
        if self.start is None:
            self.start = self.mark = (step, time.perf_counter())

    def rate_since(self, since: tuple[int, float] | None, step: int, now: float) -> float | None:
        if since is None or step <= since[0] or now <= since[1]:
            return None
        return (step - since[0]) * self.images_per_step / (now - since[1])

    def window(self, step: int) -> float | None:
        now = time.perf_counter()
        rate = self.rate_since(self.mark, step, now)
        if self.mark is not None:
            self.mark = (step, now)
        return rate

    def overall(self, step: int) -> float:
        return self.rate_since(self.start, step, time.perf_counter()) or 0.0


def check_finite(step: int, metrics: dict[str, float], finite_everywhere: FiniteCheck) -> None:
    """Stop a run whose losses are no longer finite, before it writes a checkpoint of NaNs."""
    bad = {name: value for name, value in metrics.items() if not math.isfinite(value)}
    if finite_everywhere(not bad):
        return
    shown = ", ".join(f"{name}={value}" for name, value in bad.items()) or "on another rank"
    raise TrainingDiverged(
        f"training diverged at step {step}: loss not finite ({shown}); lower train.lr or set train.grad_clip"
    )


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def rank_seed(seed: int, rank: int) -> int:
    """Each data-parallel rank draws its own noise and batches (rank 0 keeps `seed`)."""
    return seed + 1_000_003 * rank


def to_batch(records: Tensor, indices: Tensor, device: torch.device, channels_last: bool) -> Tensor:
    return to_pixels(records[indices], device, channels_last)


# (uint8 records, labels or None) of consecutive steps; a generator, closed when the loop ends
Batches = Generator[tuple[Tensor, Tensor | None], None, None]


def in_memory_batches(records: Tensor, labels: Tensor | None, schedule: BatchSchedule, step: int) -> Batches:
    while True:
        indices = schedule.indices(step)
        yield records[indices], (labels[indices] if labels is not None else None)
        step += 1


def streamed_batches(stream: RecordStream, model: GenerativeModel, step: int) -> Batches:
    """A record stream's batches as tensors; a conditional model's labels checked on the host
    (numpy: no device sync), the stream holding only labelled records."""
    with closing(stream.batches(step)) as batches:
        for data, labels in batches:
            if not model.num_classes:
                yield torch.from_numpy(data), None
                continue
            if labels is None or int(labels.min()) < 0 or int(labels.max()) >= model.num_classes:
                raise GenimgError(
                    f"model {model.registry_name} is class-conditional: the streamed records need "
                    f"labels in 0–{model.num_classes - 1}"
                )
            yield torch.from_numpy(data), torch.from_numpy(labels)


def prepare_model(model: GenerativeModel, config: TrainConfig, device: torch.device) -> None:
    model.to(device).train()
    if device.type == "cuda":
        # Every step has the same shapes: cuDNN's autotuned algorithms are picked once.
        torch.backends.cudnn.benchmark = True
    if config.channels_last:
        # nn.Module.to takes memory_format (torch passes it to _parse_to); its typed overloads omit it.
        model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    if config.compile:
        # In place (nn.Module.compile), so parameter names and checkpoints do not change.
        for child in model.children():
            if any(True for _ in child.parameters()):
                child.compile()


def checked_labels(model: GenerativeModel, records: Tensor, labels: Tensor | None) -> Tensor | None:
    """A conditional model's labels, checked; None for an unconditional model (which ignores them)."""
    if not model.num_classes:
        return None
    if labels is None or len(labels) != len(records):
        raise GenimgError(f"model {model.registry_name} is class-conditional: it trains on one label per record")
    if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= model.num_classes):
        raise GenimgError(f"labels outside 0–{model.num_classes - 1} for a {model.num_classes}-class model")
    return labels


def restore_state(
    restore_from: Path | None, model: GenerativeModel, optimizers: Any, context: Any, config: TrainConfig, rank: int
) -> int:
    """Load a checkpoint's state (rank 0: the RNGs too; other ranks their own, or a seed derived
    from the step) and return its step; without one, seed this rank and return 0."""
    if restore_from is None:
        seed_everything(rank_seed(config.seed, rank))
        return 0
    step = int(load_checkpoint(restore_from, model, optimizers, scaler=context.scaler, restore_rngs=rank == 0)["step"])
    if rank != 0 and not restore_rank_rng(restore_from, rank):
        seed_everything(rank_seed(config.seed + step, rank))
    return step


def window_metrics(
    window: list[dict[str, Tensor]], step: int, throughput: Throughput, finite_everywhere: FiniteCheck
) -> dict[str, float]:
    """The mean losses of the steps since the last log (checked finite on every rank), this
    process's rate over them, and the step; empties the window."""
    losses = mean_metrics(window)
    window.clear()
    check_finite(step, losses, finite_everywhere)
    rate = throughput.window(step)
    return losses | ({THROUGHPUT_METRIC: rate} if rate is not None else {}) | {"step": float(step)}


def rank_files_writer(
    model: GenerativeModel, optimizers: Any, step: int, config: TrainConfig, scaler: Any, rank: int
) -> CheckpointWriter:
    """Writes this rank's part of the checkpoint of `step`: everything on rank 0, its RNG elsewhere."""

    def write(folder: Path) -> None:
        if rank == 0:
            write_checkpoint_files(folder, model, optimizers, step, config, scaler)
        else:
            write_rank_rng(folder, rank)

    return write


def batches_from(
    records: Tensor | RecordStream,
    labels: Tensor | None,
    model: GenerativeModel,
    config: TrainConfig,
    rank: int,
    step: int,
) -> tuple[int, Batches]:
    """(records per batch, the batches from `step` on) of in-memory records or of a stream."""
    if isinstance(records, RecordStream):
        return records.batch_size, streamed_batches(records, model, step)
    schedule = BatchSchedule(len(records), config.batch_size, rank_seed(config.seed, rank), records.device)
    return schedule.batch_size, in_memory_batches(records, labels, schedule, step)


# Records move to a GPU when they take at most this share of its free memory.
RESIDENT_SHARE = 0.25


def resident_on(
    device: torch.device, records: Tensor | RecordStream, labels: Tensor | None
) -> tuple[Tensor | RecordStream, Tensor | None]:
    """On a GPU, in-memory records (and labels) that fit move to its memory once, so each
    batch is gathered there: no copy from the host, no wait, per step. Elsewhere as they are."""
    if device.type != "cuda" or not isinstance(records, Tensor) or records.is_cuda:
        return records, labels
    free, _total = torch.cuda.mem_get_info(device)
    if records.nbytes > RESIDENT_SHARE * free:
        return records, labels
    return records.to(device), (labels.to(device) if labels is not None else None)


StepRunner = Callable[[Tensor, Tensor | None], dict[str, Tensor]]


def step_runner(
    recipe: Recipe,
    model: GenerativeModel,
    optimizers: Optimizers,
    config: TrainConfig,
    context: StepContext,
    device: torch.device,
    graphed: bool,
) -> StepRunner:
    """One training step as a function of a batch of uint8 records (and labels): replayed from a
    CUDA graph when `graphed` (genimg.training.graphs), else eager."""
    if graphed:
        return GraphedStep(recipe.step, model, optimizers, config, context, device, required=config.cuda_graph is True)

    def eager_step(records: Tensor, labels: Tensor | None) -> dict[str, Tensor]:
        batch = to_pixels(records, device, config.channels_last)
        labels = labels.to(device, non_blocking=True) if labels is not None else None
        return recipe.step(model, optimizers, batch, config, context, labels)

    return eager_step


def train_model(
    model: GenerativeModel,
    records: Tensor | RecordStream,
    config: TrainConfig,
    *,
    device: str | torch.device = "cpu",
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
    restore_from: Path | None = None,
    on_log: LogCallback | None = None,
    on_step: StepCallback | None = None,
    on_checkpoint: CheckpointCallback | None = None,
    gradient_sync: GradientSync = no_sync,
    rank: int = 0,
    finite_everywhere: FiniteCheck = lambda finite: finite,
    labels: Tensor | None = None,
) -> TrainResult:
    """Train `model` on uint8 `records` ((N, C, H, W) or (N, T, C, H, W)) up to `config.steps`;
    or on a RecordStream (a store version's shards read as the steps need them).

    Checkpoints (every `checkpoint_every` steps and at the end) go to `checkpoint_dir`, or, when
    `on_checkpoint` is given, to that callback with a writer for this rank's files. With
    `resume`, training continues from the latest checkpoint in `checkpoint_dir` (or from
    `restore_from`) with its optimiser and RNG state, so the result equals an uninterrupted run
    (bit for bit on CPU). In data-parallel runs each `rank` passes its own shard of `records`
    and an all-reduce as `gradient_sync` (and one of a flag as `finite_everywhere`).

    Raises TrainingDiverged at the first log step whose losses are not finite. Logged metrics
    carry `images_per_second` of this process over the last log window. A class-conditional
    model needs `labels` (int64, one class index per record), which follow the batches.
    """
    device = torch.device(device)
    if not isinstance(records, RecordStream):
        labels = checked_labels(model, records, labels)  # before any state changes
    graphed = uses_cuda_graph(config, device, gradient_sync)
    prepare_model(model, config, device)
    recipe = recipe_for(model)
    optimizers = recipe.make_optimizers(model, config, capturable=graphed)
    context = make_step_context(config.precision, device, gradient_sync, graphed=graphed)
    if restore_from is None and resume and checkpoint_dir is not None:
        latest = latest_checkpoint(checkpoint_dir)
        restore_from = latest.path if latest is not None else None
    step = restore_state(restore_from, model, optimizers, context, config, rank)
    resumed_from_step = step
    records, labels = resident_on(device, records, labels)
    if checkpoint_dir is not None and on_checkpoint is None:
        remove_stale_staging(checkpoint_dir)  # what a killed run into this folder left behind
    batch_size, batches = batches_from(records, labels, model, config, rank, step)
    window: list[dict[str, Tensor]] = []
    history: list[tuple[int, dict[str, float]]] = []
    metrics: dict[str, float] = {}
    checkpoint = restore_from
    throughput = Throughput(batch_size)  # records: sequences for a sequence model
    run_step = step_runner(recipe, model, optimizers, config, context, device, graphed)
    with closing(batches):  # a stream's reader thread ends with the loop
        while step < config.steps:
            window.append(run_step(*next(batches)))
            step += 1
            throughput.step_done(step)
            if on_step is not None:
                on_step(step, throughput.overall(step))
            checkpoint_now = step % config.checkpoint_every == 0 or step == config.steps
            if step % config.log_every == 0 or checkpoint_now:
                metrics = window_metrics(window, step, throughput, finite_everywhere)
                history.append((step, metrics))
                if on_log is not None:
                    on_log(step, metrics)
            if checkpoint_now and on_checkpoint is not None:
                on_checkpoint(step, metrics, rank_files_writer(model, optimizers, step, config, context.scaler, rank))
            elif checkpoint_now and checkpoint_dir is not None:
                checkpoint = save_checkpoint(
                    checkpoint_dir, model, optimizers, step, config, keep=config.keep_checkpoints, scaler=context.scaler
                )
    return TrainResult(
        step=step,
        metrics=metrics or {"step": float(step)},
        checkpoint=checkpoint,
        resumed_from_step=resumed_from_step,
        images_per_second=throughput.overall(step),
        history=history,
    )
