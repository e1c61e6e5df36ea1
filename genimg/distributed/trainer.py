"""`genimg train` on Ray Train (Train V2): a TorchTrainer whose workers run the plain-PyTorch
loop of `genimg.training` on their share of the data.

Data parallelism: every worker holds a full replica; after each backward pass the gradients are
averaged across workers with one all-reduce over the process group that Ray Train sets up (gloo
on CPU, NCCL on GPU) — what DDP does, without wrapping the model (a GAN has two networks and
two optimisers). `train.batch_size` is per worker; the global batch is batch_size × workers.
Each rank seeds its own noise and batch order (`rank_seed`); the weights start identical.

Checkpoints: every `train.checkpoint_every` steps and at the end, rank 0 reports the full state
(model, EMA, optimisers, grad scaler, step, RNG) and every other rank its RNG state, merged by
Ray into one checkpoint under `RunConfig(storage_path=<store>/runs, name=<run name>)`; the last
`train.keep_checkpoints` are kept. A rerun with the same name (`--resume`), and every restart
after a worker or node failure (`FailureConfig(max_failures)`), continues from the latest one.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

import numpy as np
import torch

from genimg.config import config_from_dict, config_to_dict
from genimg.data.sources import dataset_location, is_store_ref, open_dataset
from genimg.data.versions import resolve_version
from genimg.errors import GenimgError, TrainingDiverged
from genimg.models.base import model_spec, save_model
from genimg.store import ObjectStore, open_store
from genimg.training.checkpoint import checkpoint_step
from genimg.training.config import TrainConfig
from genimg.training.loop import THROUGHPUT_METRIC, BatchSchedule, seed_everything, train_model
from genimg.feedback import say
from genimg.training.run import RunConfig, check_resume_dataset, resolve_run_config

ProgressCallback = Callable[[int, dict[str, float]], None]
# The resource by which a Ray head node is known (every head node carries one unit of it).
HEAD_NODE_RESOURCE = "node:__internal_head__"


@dataclass
class DistributedResult:
    run_name: str
    run_id: str
    checkpoint: str | None
    metrics: dict[str, float]
    restarts: int
    resumed_from_step: int
    workers: dict[int, str] = field(default_factory=dict)  # rank → node id, last attempt
    seconds: float = 0.0
    images_per_second: float = 0.0
    records: int = 0
    rejected: list[dict[str, str]] = field(default_factory=list)
    export: str | None = None
    dataset: str = ""  # pinned: NAME@VERSION, or SOURCE@VERSION for a raw source


# --- storage ---------------------------------------------------------------------------------


def run_storage(store: ObjectStore) -> tuple[str, Any]:
    """(storage_path, storage_filesystem) for RunConfig: checkpoints live in the store."""
    parsed = urlparse(store.uri)
    if parsed.scheme == "file":
        return str(Path(parsed.path) / "runs"), None
    import pyarrow.fs

    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    path = f"{parsed.netloc}{parsed.path.rstrip('/')}/runs"
    if endpoint:
        # pyarrow does not read AWS_ENDPOINT_URL_S3; credentials still come from the usual chain.
        return path, pyarrow.fs.S3FileSystem(endpoint_override=endpoint)
    return f"s3://{path}", None


def run_record_key(run_name: str) -> str:
    """genimg's note beside Ray's files of a run: what it trains (read back on --resume)."""
    return f"runs/{run_name}/genimg-run.json"


def recorded_dataset(store: ObjectStore, run_name: str) -> str | None:
    if not store.exists(run_record_key(run_name)):
        return None
    try:
        return json.loads(store.get_bytes(run_record_key(run_name))).get("dataset")
    except ValueError:
        return None


def run_has_checkpoints(store: ObjectStore, run_name: str) -> bool:
    return any("/checkpoint_" in key for key in store.list(f"runs/{run_name}/"))


def checkpoint_uri(store: ObjectStore, path: str) -> str:
    if urlparse(store.uri).scheme == "file":
        return Path(path).as_uri()
    return path if path.startswith("s3://") else f"s3://{path}"


# --- worker side -----------------------------------------------------------------------------


def allreduce_mean(parameters: Any) -> None:
    """Average gradients across ranks with one flat all-reduce per parameter group."""
    import torch.distributed as dist

    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    offset = 0
    for grad in grads:
        count = grad.numel()
        grad.copy_(flat[offset : offset + count].view_as(grad))
        offset += count


def all_ranks_finite(device: torch.device) -> Callable[[bool], bool]:
    """Whether every rank's losses are finite (a MIN all-reduce of a flag), so all ranks stop at
    the same step: one rank stopping alone would leave the others waiting in an all-reduce."""
    import torch.distributed as dist

    def agree(finite: bool) -> bool:
        flag = torch.tensor([1 if finite else 0], dtype=torch.int32, device=device)
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)
        return bool(flag.item())

    return agree


def sample_png(model: Any) -> bytes:
    from genimg.evaluation.grids import image_grid, to_pil, to_uint8

    if model_spec(model.registry_name).data_kind == "sequences":
        sequences = to_uint8(model.sample(8, seed=0))
        grid = image_grid(sequences.reshape(-1, *sequences.shape[2:]), columns=sequences.shape[1])
    else:
        grid = image_grid(model.sample(64, seed=0))
    buffer = io.BytesIO()
    to_pil(grid).save(buffer, format="PNG")
    return buffer.getvalue()


def train_worker(config: dict[str, Any]) -> None:
    """The function every Ray Train worker runs."""
    import ray.train
    import torch.distributed as dist

    from genimg.distributed.data import load_partition

    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    events = config["events"]
    events.push.remote({"type": "worker", "rank": rank, "world": world,
                        "node": ray.get_runtime_context().get_node_id()})
    train_config = config_from_dict(TrainConfig, config["train"], where="train")
    spec = model_spec(config["model_name"])
    seed_everything(train_config.seed)  # identical initial weights on every rank
    model = spec.model_cls(config_from_dict(spec.config_cls, config["model"], where="model"))
    if config["use_gpu"]:
        import ray.train.torch

        device = ray.train.torch.get_device()
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
        torch.set_num_threads(max(1, int(config["threads"])))
    data, data_labels = load_partition(config["data"], rank, world)
    labels = None
    if model.num_classes:  # a conditional model trains on the labelled records, with their labels
        assert data_labels is not None  # fit_model_to_data refused unlabelled data
        keep = data_labels >= 0
        data, labels = data[keep], torch.from_numpy(np.ascontiguousarray(data_labels[keep]))
    records = torch.from_numpy(data)
    validator = None
    if rank == 0 and config.get("validation"):
        from genimg.evaluation.validation import make_validator

        validation = config["validation"]
        validator = make_validator(load_partition(validation["data"], 0, 1)[0], validation.get("features"))

    restore_dir: Path | None = None
    scratch = Path(tempfile.mkdtemp(prefix="genimg-restore-"))
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        restore_dir = Path(checkpoint.to_directory(str(scratch / "checkpoint")))
    resumed_from = checkpoint_step(restore_dir) if restore_dir is not None else 0
    if rank == 0:
        events.push.remote({"type": "attempt", "resumed_from_step": resumed_from, "time": time.time()})

    def on_log(step: int, metrics: dict[str, float]) -> None:
        if rank == 0:
            if THROUGHPUT_METRIC in metrics:  # every rank steps in lockstep: the run's rate
                metrics = {**metrics, THROUGHPUT_METRIC: metrics[THROUGHPUT_METRIC] * world}
            events.push.remote({"type": "metrics", "step": step, "metrics": metrics, "time": time.time()})

    def on_checkpoint(step: int, metrics: dict[str, float], write: Callable[[Path], None]) -> None:
        with tempfile.TemporaryDirectory(prefix="genimg-ckpt-") as folder:
            write(Path(folder))
            if rank == 0 and config["samples"]:
                events.push.remote({"type": "samples", "step": step, "png": sample_png(model)})
            if validator is not None:
                validation_metrics = validator(model)
                metrics = {**metrics, **validation_metrics}
                events.push.remote({"type": "validation", "step": step, "metrics": validation_metrics,
                                    "time": time.time()})
            reported = {**metrics, "resumed_from_step": float(resumed_from)}
            ray.train.report(reported, checkpoint=ray.train.Checkpoint.from_directory(folder))

    distributed = world > 1 and dist.is_initialized()
    try:
        result = train_model(
            model,
            records,
            train_config,
            device=device,
            restore_from=restore_dir,
            on_log=on_log,
            on_checkpoint=on_checkpoint,
            gradient_sync=allreduce_mean if distributed else (lambda _: None),
            rank=rank,
            finite_everywhere=all_ranks_finite(device) if distributed else (lambda finite: finite),
            labels=labels,
        )
    except TrainingDiverged as exc:
        # Every rank stops at the same step (all_ranks_finite). Reported instead of raised:
        # Ray would restart the group from the last checkpoint, only to diverge again.
        if rank == 0:
            events.push.remote({"type": "diverged", "reason": str(exc)})
        return
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if rank == 0:
        events.push.remote({"type": "throughput", "images_per_second": result.images_per_second * world})


# --- driver side -----------------------------------------------------------------------------


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


def read_training_data(source: str, kind: str, store: ObjectStore) -> tuple[Any, Any]:
    """(DatasetVersion, None) for a store dataset — workers read their own shards — or
    (None, Dataset) for a raw source, read here once."""
    if is_store_ref(source):
        version = resolve_version(source, store)
        if version.kind != kind:
            raise GenimgError(f"{version.ref} holds {version.kind}, but this model trains on {kind}")
        return version, None
    return None, open_dataset(source, kind)  # type: ignore[arg-type]


def record_shape(run: RunConfig) -> tuple[int, ...]:
    """The shape of one training record, from the model config fitted to the data."""
    image_shape = tuple(int(s) for s in run.model.image_shape)
    frames = getattr(run.model, "num_frames", None)
    return (int(frames), *image_shape) if frames else image_shape


def shape_probe(version: Any, dataset: Any) -> Any:
    """A Dataset with the training records' shape, to fit the model config to the data."""
    from genimg.data.dataset import Dataset

    if dataset is not None:
        return dataset
    shape = tuple(version.manifest["record_shape"])
    # The labels alone (one Parquet column) when there are any: a conditional model's class count.
    labels = version.load_labels() if version.manifest.get("labels") else None
    rows = 1 if labels is None else len(labels)
    zeros = np.broadcast_to(np.zeros((1, *shape), np.uint8), (rows, *shape))  # a view: no memory per row
    return Dataset(kind=version.kind, data=zeros, source=version.ref, labels=labels,
                   class_names=version.manifest.get("class_names"))


def worker_data(version: Any, dataset: Any) -> tuple[dict[str, Any], int, list[dict[str, str]], str]:
    """(worker data spec, record count, rejected items, dataset label for tags)."""
    from genimg.distributed.data import object_spec, store_spec

    if version is not None:
        return store_spec(version), version.count(), [], version.ref
    return object_spec(dataset), len(dataset), [r.as_dict() for r in dataset.rejected], dataset.source


def train_distributed(
    model_name: str,
    source: str,
    sections: dict[str, dict[str, Any]],
    *,
    workers: int | tuple[int, int] = 1,
    use_gpu: bool = False,
    cpus_per_worker: int | None = None,
    run_name: str,
    resume: bool | Literal["auto"] = False,
    epochs: float | None = None,
    max_failures: int = 3,
    export_dir: Path | None = None,
    on_progress: ProgressCallback | None = None,
    samples: bool = True,
) -> DistributedResult:
    from genimg.config import replace_config

    spec = model_spec(model_name)
    resolve_run_config(model_name, sections)  # bad keys and values fail before Ray starts
    store = open_store()
    has_checkpoints = run_has_checkpoints(store, run_name)
    if has_checkpoints and not resume:
        raise GenimgError(
            f"run {run_name} already has checkpoints in {store.uri_for('runs/' + run_name)}; "
            "pass --resume to continue it or pick another --run-name"
        )
    if resume == "auto":  # the retrain flow: continue a run a retried task started, silently
        resume = has_checkpoints
    elif resume and not has_checkpoints:
        say("run %s has no checkpoints in %s: starting it fresh", run_name, store.uri_for(f"runs/{run_name}"))
    version, dataset = read_training_data(source, spec.data_kind, store)
    if version is not None and version.count() == 0:
        raise GenimgError(f"{version.ref} has no training records")
    pinned = version.ref if version is not None else dataset.source
    if has_checkpoints:
        check_resume_dataset(run_name, recorded_dataset(store, run_name), pinned, source)
    run = resolve_run_config(model_name, sections, shape_probe(version, dataset))
    store.put_bytes(run_record_key(run_name), json.dumps({"model": model_name, "dataset": pinned}).encode())

    from genimg.distributed.cluster import cluster_cpus, largest_node_cpus, ray_session

    with ray_session():
        data, count, rejected, dataset_label = worker_data(version, dataset)
        max_workers = workers[1] if isinstance(workers, tuple) else workers
        if epochs is not None:
            per_worker = max(1, count // max_workers)
            steps = BatchSchedule(per_worker, run.train.batch_size, 0).steps_for_epochs(epochs)
            run = RunConfig(run.model_name, run.model, replace_config(run.train, {"steps": steps}, where="train"))
        # An even share of the cluster, but never more than one node has: a worker runs on one node.
        cpus = cpus_per_worker or max(1, min(largest_node_cpus(), cluster_cpus() // max_workers))
        return fit(run, data, dataset_label, count, rejected, store, workers=workers, use_gpu=use_gpu,
                   cpus=cpus, run_name=run_name, max_failures=max_failures, export_dir=export_dir,
                   on_progress=on_progress, samples=samples,
                   validation=validation_spec(version, pinned, spec.data_kind))


def validation_spec(version: Any, source: str, kind: str, features: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """What rank 0 validates on at each checkpoint: the val split (store shards, or the raw
    source's val records through Ray's object store); None when it has under 2 records."""
    from genimg.distributed.data import object_spec, store_spec
    from genimg.errors import DataError

    if version is not None:
        if version.count(("val",)) < 2:
            return None
        return {"data": store_spec(version, ("val",)), "features": features}
    try:
        val = open_dataset(source, kind, splits=("val",))  # type: ignore[arg-type]
    except DataError:
        return None
    if len(val) < 2:
        return None
    return {"data": object_spec(val), "features": features}


def fit(
    run: RunConfig,
    data: dict[str, Any],
    dataset_label: str,
    count: int,
    rejected: list[dict[str, str]],
    store: ObjectStore,
    *,
    workers: int | tuple[int, int],
    use_gpu: bool,
    cpus: int,
    run_name: str,
    max_failures: int,
    export_dir: Path | None,
    on_progress: ProgressCallback | None,
    samples: bool,
    validation: dict[str, Any] | None = None,
    tags: dict[str, str] | None = None,
    callbacks: list[Any] | None = None,
) -> DistributedResult:
    import ray
    from ray.train import CheckpointConfig, FailureConfig, RunConfig as RayRunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from genimg.distributed.events import RunEvents
    from genimg.tracking.runs import TrainingRun

    tracking = TrainingRun(run_name, tags={"genimg.model": run.model_name, "genimg.dataset": dataset_label,
                                           **(tags or {})})
    tracking.log_params(run.as_dict() | {"dataset": dataset_label, "workers": str(workers),
                                         "use_gpu": use_gpu, "cpus_per_worker": cpus})
    tracking.log_dataset(dataset_label, dataset_location(dataset_label, store), count, record_shape(run))
    # On the head node, whose loss ends the cluster anyway: a worker node's loss must not take the
    # run's event stream (and with it the restart that follows) along. The driver's own node is not
    # a safe choice: a driver may attach to any raylet on its machine. Node affinity also keeps the
    # actor out of a Tune trial's placement group. Pushes made while the actor is being restarted
    # are retried rather than dropped.
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    head = next((node["NodeID"] for node in ray.nodes() if node["Alive"] and HEAD_NODE_RESOURCE in node["Resources"]),
                ray.get_runtime_context().get_node_id())
    events = RunEvents.options(scheduling_strategy=NodeAffinitySchedulingStrategy(head, soft=True),
                               max_task_retries=-1).remote()
    storage_path, filesystem = run_storage(store)
    train_dict = config_to_dict(run.train)
    trainer = TorchTrainer(
        train_worker,
        train_loop_config={
            "model_name": run.model_name,
            "model": config_to_dict(run.model),
            "train": train_dict,
            "data": data,
            "events": events,
            "use_gpu": use_gpu,
            "threads": cpus,
            "samples": samples,
            "validation": validation,
        },
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=use_gpu,
                                     resources_per_worker={"CPU": cpus}),
        run_config=RayRunConfig(
            name=run_name,
            storage_path=storage_path,
            storage_filesystem=filesystem,
            failure_config=FailureConfig(max_failures=max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=run.train.keep_checkpoints),
            callbacks=callbacks or None,
        ),
    )
    outcome: dict[str, Any] = {}

    def run_fit() -> None:
        try:
            outcome["result"] = trainer.fit()
        except BaseException as exc:  # reported on the driver thread
            outcome["error"] = exc

    attempts: list[dict[str, Any]] = []
    placement: dict[int, str] = {}
    placement_world = [0]
    last_metrics: dict[str, float] = {}
    started = time.perf_counter()
    reported: dict[str, Any] = {}  # the last attempt's steady-state rate; a divergence

    def handle(event: dict[str, Any]) -> None:
        nonlocal last_metrics
        kind = event["type"]
        if kind == "worker":
            # Ranks of a restarted (or resized) group overwrite the earlier ones.
            placement[event["rank"]] = event["node"]
            placement_world[0] = event["world"]
        elif kind == "attempt":
            attempts.append(event)
            resumed = int(event["resumed_from_step"])
            say("%s on %d worker(s)%s", "training" if len(attempts) == 1 else f"restart {len(attempts) - 1}:",
                placement_world[0] or 1, f", from the checkpoint of step {resumed}" if resumed else "")
        elif kind == "metrics":
            last_metrics = event["metrics"]
            tracking.add_metrics(int(event["step"]), event["metrics"], int(event["time"] * 1000))
            if on_progress is not None:
                on_progress(int(event["step"]), event["metrics"])
        elif kind == "validation":
            tracking.add_metrics(int(event["step"]), event["metrics"], int(event["time"] * 1000))
            # Validation comes with each checkpoint report, which is when Tune may stop the run.
            tracking.flush()
        elif kind == "samples":
            tracking.log_bytes(event["png"], f"samples/step-{int(event['step']):08d}.png")
        elif kind in ("throughput", "diverged"):
            reported[kind] = event

    def drain() -> list[dict[str, Any]]:
        try:
            return ray.get(events.drain.remote(), timeout=30)  # type: ignore[no-any-return]
        except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError,
                ray.exceptions.ActorUnavailableError):
            return []  # the events actor is being restarted: progress resumes after it

    thread = threading.Thread(target=run_fit, name="genimg-fit", daemon=True)
    say("starting %s Ray Train worker(s) for run %s (%d CPU(s)%s each) …", workers if isinstance(workers, int)
        else "-".join(map(str, workers)), run_name, cpus, " + 1 GPU" if use_gpu else "")
    thread.start()
    try:
        while thread.is_alive():
            thread.join(timeout=0.5)
            for event in drain():
                handle(event)
        for event in drain():
            handle(event)
    except BaseException:
        tracking.finish("KILLED")
        raise
    if "diverged" in reported:
        tracking.finish("FAILED", reason=reported["diverged"]["reason"])
        raise TrainingDiverged(reported["diverged"]["reason"])
    if "error" in outcome or outcome["result"].error is not None:
        error = outcome.get("error") or outcome["result"].error
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        tracking.finish("FAILED", reason=f"training failed: {first_line}")
        raise GenimgError(f"training failed: {first_line}") from error
    result = outcome["result"]
    metrics = {k: float(v) for k, v in (result.metrics or {}).items() if k != "resumed_from_step"}
    metrics = metrics or last_metrics
    checkpoint = checkpoint_uri(store, result.checkpoint.path) if result.checkpoint else None
    export = None
    if export_dir is not None and result.checkpoint is not None:
        export = str(export_model(result.checkpoint, export_dir))
    resumed = int(attempts[-1]["resumed_from_step"]) if attempts else 0
    tracking.set_tags({"genimg.checkpoint": checkpoint or "", "genimg.restarts": str(max(0, len(attempts) - 1))})
    tracking.add_metrics(int(metrics.get("step", 0)), {f"final_{k}": v for k, v in metrics.items()},
                         int(time.time() * 1000))
    tracking.finish()
    elapsed = time.perf_counter() - started
    rate = float(reported["throughput"]["images_per_second"]) if "throughput" in reported else 0.0
    return DistributedResult(
        run_name=run_name,
        run_id=tracking.run_id,
        checkpoint=checkpoint,
        metrics=metrics,
        restarts=max(0, len(attempts) - 1),
        resumed_from_step=resumed,
        workers={rank: node for rank, node in sorted(placement.items()) if rank < placement_world[0]},
        seconds=elapsed,
        images_per_second=rate,
        records=count,
        rejected=rejected,
        export=export,
        dataset=dataset_label,
    )


def export_model(checkpoint: Any, export_dir: Path) -> Path:
    """Copy the model files (model.json + model.safetensors) of a Ray checkpoint."""
    with tempfile.TemporaryDirectory(prefix="genimg-export-") as tmp:
        local = Path(checkpoint.to_directory(tmp))
        from genimg.models.base import load_model

        model = load_model(local)
        return save_model(model, export_dir)


__all__ = ["DistributedResult", "parse_workers", "train_distributed", "train_worker"]
