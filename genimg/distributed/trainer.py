"""Training on Ray Train (Train V2): a TorchTrainer whose workers run the plain-PyTorch loop of
`genimg.training` on their share of the data (`genimg.distributed.worker`).

`train.batch_size` is per worker; the global batch is batch_size × workers. Each rank seeds its
own noise and batch order (`rank_seed`); the weights start identical.

Checkpoints: every `train.checkpoint_every` steps and at the end, rank 0 reports the full state
(model, EMA, optimisers, grad scaler, step, RNG) and every other rank its RNG state, merged by
Ray into one checkpoint under `RunConfig(storage_path=<store>/runs, name=<run name>)`; the last
`train.keep_checkpoints` are kept. A rerun with the same name (`--resume`), and every restart
after a worker or node failure (`FailureConfig(max_failures)`), continues from the latest one.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from genimg.config import config_to_dict
from genimg.data.handle import DataMode, DatasetHandle, StoreShards
from genimg.distributed.cluster import cluster_cpus, largest_node_cpus, ray_session
from genimg.distributed.data import SharedInput, share
from genimg.distributed.failures import stop_on_data_error, training_error
from genimg.distributed.monitor import ProgressCallback, RunMonitor
from genimg.distributed.storage import (
    checkpoint_uri,
    export_model,
    latest_checkpoint_uri,
    recorded_dataset,
    run_has_checkpoints,
    run_storage,
    write_run_record,
)
from genimg.distributed.worker import ValidationInput, WorkerJob, train_worker
from genimg.errors import GenimgError, TrainingDiverged, TrainingInterrupted
from genimg.feedback import say
from genimg.store import ObjectStore, open_store
from genimg.tracking import tags
from genimg.tracking.runs import TrainingRun
from genimg.training.run import RunConfig, check_resume_dataset, decide_resume, resolve_run_config, with_epochs


@dataclass(frozen=True)
class TrainingData:
    """A Ray run's data as its workers see it, with what the driver records about it."""

    ref: str  # pinned: NAME@VERSION, or SOURCE@VERSION for a raw source
    location: str
    records: int
    worker_input: SharedInput
    validation: ValidationInput | None


@dataclass(frozen=True)
class FitPlan:
    run: RunConfig
    run_name: str
    data: TrainingData
    workers: int | tuple[int, int]  # a count, or (min, max) for elastic training
    use_gpu: bool
    cpus: int  # per worker
    max_failures: int
    samples: bool  # a sample grid per checkpoint
    tags: Mapping[str, str] = field(default_factory=dict)
    export_dir: Path | None = None


@dataclass(frozen=True)
class FitResult:
    run_id: str
    checkpoint: str | None
    metrics: dict[str, float]
    restarts: int
    resumed_from_step: int
    workers: dict[int, str]  # rank → node id, last attempt
    seconds: float
    images_per_second: float
    export: str | None


def parse_workers(text: str | int) -> int | tuple[int, int]:
    """'2' → 2; '1-3' → (1, 3) for elastic scaling."""
    value = str(text).strip()
    low, dash, high = value.partition("-")
    try:
        if dash:
            bounds = (int(low), int(high))
            if not 1 <= bounds[0] <= bounds[1]:
                raise ValueError
            return bounds
        count = int(value)
        if count < 1:
            raise ValueError
        return count
    except ValueError:
        raise GenimgError(f"invalid --workers {text!r}: a count ≥ 1 or a range MIN-MAX") from None


def validation_input(
    handle: DatasetHandle, features: dict[str, Any] | None = None, data_mode: DataMode = "memory"
) -> ValidationInput | None:
    """The val split for rank 0 to validate on at each checkpoint; None when it has under 2 records.
    Streamed like the train split: rank 0 then reads only the shards its validator needs."""
    if handle.count(("val",)) < 2:
        return None
    return ValidationInput(
        share(handle.worker_input(("val",), "stream" if handle.streams(data_mode) else "memory")), features
    )


def training_data(
    handle: DatasetHandle, features: dict[str, Any] | None = None, data_mode: DataMode = "memory"
) -> TrainingData:
    """The handle's train split (and val split) handed to workers, in memory or streamed
    (train.data_mode); inside a Ray session."""
    return TrainingData(
        handle.ref,
        handle.location,
        handle.count(),
        share(handle.worker_input(("train",), data_mode)),
        validation_input(handle, features, data_mode),
    )


def train_on_ray(
    model_name: str,
    handle: DatasetHandle,
    sections: Mapping[str, Mapping[str, Any]],
    *,
    run_name: str,
    workers: int | tuple[int, int] = 1,
    use_gpu: bool = False,
    cpus_per_worker: int | None = None,
    resume: bool | Literal["auto"] = False,
    epochs: float | None = None,
    max_failures: int = 3,
    export_dir: Path | None = None,
    samples: bool = True,
    on_progress: ProgressCallback | None = None,
) -> FitResult:
    """Train on the Ray cluster of RAY_ADDRESS (or a local one), checkpoints in the store."""
    store = open_store()
    has_checkpoints = run_has_checkpoints(store, run_name)
    resume = decide_resume(has_checkpoints, resume, run_name, store.uri_for(f"runs/{run_name}"))
    if handle.count() == 0:
        raise GenimgError(f"{handle.ref} has no training records")
    if has_checkpoints:
        check_resume_dataset(run_name, recorded_dataset(store, run_name), handle.ref, handle.given)
    run = resolve_run_config(model_name, sections, handle.shape_probe())
    write_run_record(store, run_name, model_name, handle.ref)
    with ray_session():
        max_workers = workers[1] if isinstance(workers, tuple) else workers
        run = with_epochs(run, max(1, handle.count() // max_workers), epochs)
        # An even share of the cluster, but never more than one node has: a worker runs on one node.
        cpus = cpus_per_worker or max(1, min(largest_node_cpus(), cluster_cpus() // max_workers))
        data = training_data(handle, data_mode=run.train.data_mode)
        plan = FitPlan(run, run_name, data, workers, use_gpu, cpus, max_failures, samples, export_dir=export_dir)
        return fit(plan, store, on_progress=on_progress)


def record_shape(run: RunConfig) -> tuple[int, ...]:
    """The shape of one training record, from the model config fitted to the data."""
    image_shape = tuple(int(s) for s in run.model.image_shape)
    frames = getattr(run.model, "num_frames", None)
    return (int(frames), *image_shape) if frames else image_shape


def start_tracking(plan: FitPlan) -> TrainingRun:
    tracking = TrainingRun(
        plan.run_name, tags={tags.MODEL: plan.run.model_name, tags.DATASET: plan.data.ref, **plan.tags}
    )
    streamed = isinstance(plan.data.worker_input, StoreShards) and plan.data.worker_input.streaming
    tracking.log_params(
        plan.run.as_dict()
        | {
            "dataset": plan.data.ref,
            "workers": str(plan.workers),
            "use_gpu": plan.use_gpu,
            "cpus_per_worker": plan.cpus,
            "data_streamed": streamed,
        }
    )
    tracking.log_dataset(plan.data.ref, plan.data.location, plan.data.records, record_shape(plan.run))
    return tracking


def build_trainer(plan: FitPlan, events: Any, store: ObjectStore, callbacks: list[Any] | None) -> Any:
    from ray.train import CheckpointConfig, FailureConfig, ScalingConfig
    from ray.train import RunConfig as RayRunConfig
    from ray.train.torch import TorchTrainer

    storage_path, filesystem = run_storage(store)
    # Ray Train's own (UserCallback) beside Tune's: RunConfig takes both kinds.
    run_callbacks: list[Any] = [stop_on_data_error(), *(callbacks or [])]
    job = WorkerJob(
        plan.run.model_name,
        config_to_dict(plan.run.model),
        config_to_dict(plan.run.train),
        plan.data.worker_input,
        events,
        plan.use_gpu,
        plan.cpus,
        plan.samples,
        plan.data.validation,
    )
    return TorchTrainer(
        train_worker,
        train_loop_config={"job": job},
        scaling_config=ScalingConfig(
            # ray.train re-exports Train V2's ScalingConfig (which takes (min, max) workers) only at
            # runtime, under `if is_v2_enabled()`; mypy sees the V1 class it shadows.
            num_workers=plan.workers,  # type: ignore[arg-type]
            use_gpu=plan.use_gpu,
            resources_per_worker={"CPU": plan.cpus},
        ),
        run_config=RayRunConfig(
            name=plan.run_name,
            storage_path=storage_path,
            storage_filesystem=filesystem,
            failure_config=FailureConfig(max_failures=plan.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=plan.run.train.keep_checkpoints),
            callbacks=run_callbacks,
        ),
    )


def run_trainer(trainer: Any, monitor: RunMonitor) -> Any:
    """`trainer.fit()` on a thread while the monitor forwards the workers' events; its Result."""
    outcome: dict[str, Any] = {}

    def run_fit() -> None:
        try:
            outcome["result"] = trainer.fit()
        except BaseException as exc:  # reported on the driver thread
            outcome["error"] = exc

    thread = threading.Thread(target=run_fit, name="genimg-fit", daemon=True)
    thread.start()
    monitor.follow(thread)
    if monitor.diverged is not None:
        raise TrainingDiverged(monitor.diverged)
    error = outcome.get("error") or outcome["result"].error
    if error is not None:
        raise training_error(error) from error
    return outcome["result"]


def fit(
    plan: FitPlan,
    store: ObjectStore,
    *,
    on_progress: ProgressCallback | None = None,
    callbacks: list[Any] | None = None,
) -> FitResult:
    """Run `plan` as one tracked MLflow run; the run ends FAILED (with why) if training does."""
    tracking = start_tracking(plan)
    started = time.perf_counter()
    with tracking.failed_on_error():
        monitor = RunMonitor(tracking, on_progress)
        trainer = build_trainer(plan, monitor.events, store, callbacks)
        say(
            "starting %s Ray Train worker(s) for run %s (%d CPU(s)%s each) …",
            plan.workers if isinstance(plan.workers, int) else "-".join(map(str, plan.workers)),
            plan.run_name,
            plan.cpus,
            " + 1 GPU" if plan.use_gpu else "",
        )
        try:
            result = run_trainer(trainer, monitor)
        except KeyboardInterrupt:
            raise TrainingInterrupted(
                plan.run_name, tracking.run_id, latest_checkpoint_uri(store, plan.run_name)
            ) from None
    metrics = {k: float(v) for k, v in (result.metrics or {}).items() if k != "resumed_from_step"}
    metrics = metrics or monitor.last_metrics
    checkpoint = checkpoint_uri(store, result.checkpoint.path) if result.checkpoint else None
    export = None
    if plan.export_dir is not None and result.checkpoint is not None:
        export = str(export_model(result.checkpoint, plan.export_dir))
    tracking.set_tags({tags.CHECKPOINT: checkpoint or "", tags.RESTARTS: str(monitor.restarts)})
    tracking.add_metrics(
        int(metrics.get("step", 0)), {f"final_{k}": v for k, v in metrics.items()}, int(time.time() * 1000)
    )
    tracking.finish()
    return FitResult(
        tracking.run_id,
        checkpoint,
        metrics,
        monitor.restarts,
        monitor.resumed_from_step,
        monitor.workers,
        time.perf_counter() - started,
        monitor.throughput,
        export,
    )


__all__ = ["FitPlan", "FitResult", "TrainingData", "fit", "parse_workers", "train_on_ray"]
