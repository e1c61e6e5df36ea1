"""What every Ray Train worker runs: the plain-PyTorch loop of `genimg.training` on its share of
the data, with gradients averaged across workers and progress pushed to the run's events actor.

Data parallelism: every worker holds a full replica; its gradients are averaged over the process
group Ray Train sets up (gloo on CPU, NCCL on GPU) by bucketed all-reduces that start during the
backward pass (`gradients.OverlappedAllReduce`) — what DDP does, without wrapping the model (a
GAN has two networks and two optimisers, each averaged in its own phase).
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from genimg.config import config_from_dict
from genimg.data.handle import StoreShards
from genimg.data.streaming import RecordStream
from genimg.distributed.data import SharedInput, first_records, load_partition, stream_partition
from genimg.distributed.gradients import OverlappedAllReduce
from genimg.errors import TrainingDiverged
from genimg.evaluation.grids import sample_png
from genimg.evaluation.validation import MAX_RECORDS, make_validator
from genimg.models.base import GenerativeModel, model_spec
from genimg.training.checkpoint import checkpoint_step
from genimg.training.config import TrainConfig
from genimg.training.loop import THROUGHPUT_METRIC, seed_everything, train_model
from genimg.training.steps import no_sync


@dataclass(frozen=True)
class ValidationInput:
    """What rank 0 validates on at each checkpoint: val records and, for val_fid, the dataset's
    feature network (its weights, so no worker trains or downloads one)."""

    data: SharedInput
    features: dict[str, Any] | None = None


@dataclass(frozen=True)
class WorkerJob:
    model_name: str
    model: dict[str, Any]  # the model config, fitted to the data
    train: dict[str, Any]  # the TrainConfig
    data: SharedInput
    events: Any  # the RunEvents actor
    use_gpu: bool
    threads: int
    samples: bool  # a sample grid per checkpoint
    validation: ValidationInput | None


def all_ranks_finite(device: torch.device) -> Callable[[bool], bool]:
    """Whether every rank's losses are finite (a MIN all-reduce of a flag), so all ranks stop at
    the same step: one rank stopping alone would leave the others waiting in an all-reduce."""
    import torch.distributed as dist

    def agree(finite: bool) -> bool:
        flag = torch.tensor([1 if finite else 0], dtype=torch.int32, device=device)
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)
        return bool(flag.item())

    return agree


def worker_device(job: WorkerJob) -> torch.device:
    if job.use_gpu:
        import ray.train.torch

        device = ray.train.torch.get_device()
        torch.cuda.set_device(device)
        return device
    torch.set_num_threads(max(1, job.threads))
    return torch.device("cpu")


def training_records(
    job: WorkerJob, model: GenerativeModel, config: TrainConfig, rank: int, world: int
) -> tuple[torch.Tensor | RecordStream, torch.Tensor | None]:
    """This rank's records (in memory, or a stream of them); a conditional model trains on the
    labelled ones, with their labels."""
    if isinstance(job.data, StoreShards) and job.data.streaming:
        # The shard order of an epoch is drawn from the run's seed (the same on every rank: the
        # ranks share the shards out); the shuffle within a rank from its own seed.
        stream = stream_partition(
            job.data, rank, world, labelled_only=bool(model.num_classes), options=config.stream_options()
        )
        return stream, None
    data, labels = load_partition(job.data, rank, world)
    if not model.num_classes:
        return torch.from_numpy(data), None
    assert labels is not None  # fit_model_to_data refused unlabelled data
    keep = labels >= 0
    return torch.from_numpy(data[keep]), torch.from_numpy(np.ascontiguousarray(labels[keep]))


class WorkerReports:
    """Rank 0's metrics, samples and validation go to the events actor; every rank's checkpoint
    part goes to Ray Train (which merges them into one checkpoint)."""

    def __init__(self, job: WorkerJob, model: GenerativeModel, rank: int, world: int, resumed_from: int) -> None:
        self.job, self.model, self.rank, self.world, self.resumed_from = job, model, rank, world, resumed_from
        self.validator = None
        if rank == 0 and job.validation is not None:
            self.validator = make_validator(first_records(job.validation.data, MAX_RECORDS), job.validation.features)

    def on_log(self, step: int, metrics: dict[str, float]) -> None:
        if self.rank != 0:
            return
        if THROUGHPUT_METRIC in metrics:  # every rank steps in lockstep: the run's rate
            metrics = {**metrics, THROUGHPUT_METRIC: metrics[THROUGHPUT_METRIC] * self.world}
        self.job.events.push.remote({"type": "metrics", "step": step, "metrics": metrics, "time": time.time()})

    def on_checkpoint(self, step: int, metrics: dict[str, float], write: Callable[[Path], None]) -> None:
        import ray.train

        with tempfile.TemporaryDirectory(prefix="genimg-ckpt-") as folder:
            write(Path(folder))
            if self.rank == 0 and self.job.samples:
                self.job.events.push.remote({"type": "samples", "step": step, "png": sample_png(self.model)})
            if self.validator is not None:
                validation_metrics = self.validator(self.model)
                metrics = {**metrics, **validation_metrics}
                self.job.events.push.remote(
                    {"type": "validation", "step": step, "metrics": validation_metrics, "time": time.time()}
                )
            reported = {**metrics, "resumed_from_step": float(self.resumed_from)}
            ray.train.report(reported, checkpoint=ray.train.Checkpoint.from_directory(folder))


def train_worker(config: dict[str, Any]) -> None:
    """The function every Ray Train worker runs (`train_loop_config={"job": WorkerJob}`)."""
    import ray.train
    import torch.distributed as dist

    job: WorkerJob = config["job"]
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    job.events.push.remote(
        {"type": "worker", "rank": rank, "world": world, "node": ray.get_runtime_context().get_node_id()}
    )
    train_config = config_from_dict(TrainConfig, job.train, where="train")
    spec = model_spec(job.model_name)
    seed_everything(train_config.seed)  # identical initial weights on every rank
    model = spec.model_cls(config_from_dict(spec.config_cls, job.model, where="model"))
    device = worker_device(job)
    scratch = Path(tempfile.mkdtemp(prefix="genimg-restore-"))
    checkpoint = ray.train.get_checkpoint()
    restore_dir = Path(checkpoint.to_directory(str(scratch / "checkpoint"))) if checkpoint is not None else None
    resumed_from = checkpoint_step(restore_dir) if restore_dir is not None else 0
    if rank == 0:
        job.events.push.remote({"type": "attempt", "resumed_from_step": resumed_from, "time": time.time()})
    distributed = world > 1 and dist.is_initialized()
    try:
        # Records are read once the attempt is announced: an attempt that fails on its data
        # (genimg.distributed.failures: not restarted) still shows as one.
        records, labels = training_records(job, model, train_config, rank, world)
        reports = WorkerReports(job, model, rank, world, resumed_from)
        result = train_model(
            model,
            records,
            train_config,
            device=device,
            restore_from=restore_dir,
            on_log=reports.on_log,
            on_checkpoint=reports.on_checkpoint,
            gradient_sync=OverlappedAllReduce() if distributed else no_sync,
            rank=rank,
            finite_everywhere=all_ranks_finite(device) if distributed else (lambda finite: finite),
            labels=labels,
        )
    except TrainingDiverged as exc:
        # Every rank stops at the same step (all_ranks_finite). Reported instead of raised:
        # Ray would restart the group from the last checkpoint, only to diverge again.
        if rank == 0:
            job.events.push.remote({"type": "diverged", "reason": str(exc)})
        return
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if rank == 0:
        job.events.push.remote({"type": "throughput", "images_per_second": result.images_per_second * world})
