"""The training service. Every way to train — `genimg train`, the retrain flow's task, the Python
API, a Ray Job's entrypoint (which is `genimg train`) — hands a `TrainRequest` to `train`, which
checks it, resolves the dataset once, decides once where the training runs (in this process, on
Ray Train, or as a Ray Job on a remote cluster), evaluates the result on the val split, and
returns a `TrainOutcome`."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, TypedDict

from genimg.config import config_from_dict
from genimg.data.handle import DatasetHandle, resolve_dataset
from genimg.distributed.jobs import RayJobsTarget, run_genimg_job
from genimg.distributed.trainer import train_on_ray
from genimg.errors import GenimgError
from genimg.evaluation.config import END_OF_TRAINING_DEFAULTS, EvalConfig
from genimg.feedback import TrainingProgress, say
from genimg.locks import run_lock
from genimg.models.base import model_spec
from genimg.names import check_run_name
from genimg.services.evaluate import evaluate_after_training
from genimg.services.train_in_process import train_in_process
from genimg.tracking import tags
from genimg.tracking.connection import wait_for_tracking
from genimg.tracking.runs import TrainingRun, client, experiment_id, tracking_uri
from genimg.training.config import TrainConfig, gpu_defaults
from genimg.training.graphs import check_required_graph
from genimg.training.run import merge_sections, resolve_run_config


@dataclass(frozen=True)
class TrainRequest:
    model: str
    dataset: str  # NAME[@VERSION] in the store, or a raw source
    sections: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # model: / train: / eval:
    workers: int | tuple[int, int] = 1  # 0: in this process, without Ray; (min, max): elastic
    gpu: bool = False
    cpus_per_worker: int | None = None  # default: the cluster's CPUs / workers
    run_name: str | None = None  # default: <model>-<time>-<random>
    resume: bool | Literal["auto"] = False  # "auto": continue a run of this name if it has checkpoints
    epochs: float | None = None  # instead of train.steps
    max_failures: int = 3  # worker-group restarts allowed
    export_dir: Path | None = None
    samples: bool = True  # a sample grid per checkpoint (Ray runs)
    evaluate: bool = True  # the val-split evaluation at the end (when eval.at_end_of_training)
    ray_jobs: RayJobsTarget | None = None  # set: submitted as a Ray Job to that cluster


@dataclass(frozen=True)
class TrainOutcome:
    model: str
    dataset: str  # pinned: NAME@VERSION, or SOURCE@VERSION for a raw source
    run_name: str
    run_id: str
    checkpoint: str | None
    metrics: Mapping[str, float]
    restarts: int = 0
    resumed_from_step: int = 0
    workers: Mapping[int, str] = field(default_factory=dict)  # rank → Ray node id (Ray runs)
    records: int = 0
    rejected: tuple[Mapping[str, str], ...] = ()
    seconds: float = 0.0
    images_per_second: float = 0.0
    export: str | None = None
    evaluation: Mapping[str, Any] | None = None  # the val-split evaluation, or {"error": …}
    ray_job: str | None = None  # the Ray Job's submission id, when submitted as one

    def as_dict(self) -> dict[str, Any]:
        """What `genimg train --json` prints."""
        return {
            "model": self.model,
            "dataset": self.dataset,
            "run_name": self.run_name,
            "run_id": self.run_id,
            "checkpoint": self.checkpoint,
            "export": self.export,
            "metrics": dict(self.metrics),
            "restarts": self.restarts,
            "resumed_from_step": self.resumed_from_step,
            "workers": {str(rank): node for rank, node in self.workers.items()},
            "records": self.records,
            "rejected": [dict(r) for r in self.rejected],
            "seconds": round(self.seconds, 3),
            "images_per_second": round(self.images_per_second, 1),
            "evaluation": dict(self.evaluation) if self.evaluation is not None else None,
        }

    @classmethod
    def from_dict(cls, payload: Mapping[str, Any], ray_job: str | None = None) -> TrainOutcome:
        return cls(
            model=payload["model"],
            dataset=payload["dataset"],
            run_name=payload["run_name"],
            run_id=payload["run_id"],
            checkpoint=payload.get("checkpoint"),
            metrics=payload.get("metrics") or {},
            restarts=int(payload.get("restarts", 0)),
            resumed_from_step=int(payload.get("resumed_from_step", 0)),
            workers={int(rank): node for rank, node in (payload.get("workers") or {}).items()},
            records=int(payload.get("records", 0)),
            rejected=tuple(payload.get("rejected") or ()),
            seconds=float(payload.get("seconds", 0.0)),
            images_per_second=float(payload.get("images_per_second", 0.0)),
            export=payload.get("export"),
            evaluation=payload.get("evaluation"),
            ray_job=ray_job,
        )


def default_run_name(model: str) -> str:
    return f"{model}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"


def training_sections(request: TrainRequest, record_shape: tuple[int, ...] | None = None) -> dict[str, dict[str, Any]]:
    """The request's sections with the GPU defaults for its records (`gpu_defaults`), the same
    wherever the request comes from; a config's own settings win. Before the records' shape is
    known (a request checked before its dataset is resolved) no default is added."""
    sections = merge_sections(request.sections)
    if request.gpu and record_shape is not None:
        for key, value in gpu_defaults(model_spec(request.model).convolutional, record_shape).items():
            sections["train"].setdefault(key, value)
    return sections


def end_of_training_eval_config(values: Mapping[str, Any]) -> EvalConfig:
    return config_from_dict(EvalConfig, {**END_OF_TRAINING_DEFAULTS, **values}, where="eval")


def as_set_options(sections: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """The resolved settings as `--set` options, so a Ray Job needs no config file of ours."""
    options = []
    for section, values in sections.items():
        for key, value in values.items():
            if value is not None:
                options += ["--set", f"{section}.{key}={value if isinstance(value, str) else json.dumps(value)}"]
    return options


def train_as_ray_job(request: TrainRequest, sections: Mapping[str, Mapping[str, Any]], run_name: str) -> TrainOutcome:
    """`genimg train --json` as a Ray Job on the target cluster (which also evaluates there)."""
    assert request.ray_jobs is not None
    workers = request.workers if isinstance(request.workers, int) else "-".join(map(str, request.workers))
    args = [
        "train",
        "--model",
        request.model,
        "--dataset",
        request.dataset,
        "--workers",
        str(workers or 1),
        "--run-name",
        run_name,
        *(["--gpu"] if request.gpu else []),
        *as_set_options(sections),
    ]
    job = run_genimg_job(request.ray_jobs, args, run_name, on_log=lambda line: say("%s", line))
    return TrainOutcome.from_dict(job.payload, ray_job=job.submission_id)


def check_workers(workers: Any) -> None:
    """`workers`: 0 (this process), N ≥ 1, or (min, max) with 1 ≤ min ≤ max; anything else is
    refused before a run or a Ray exists."""

    def whole(value: Any) -> bool:
        return isinstance(value, int) and not isinstance(value, bool)

    if whole(workers) and workers >= 0:
        return
    if (
        isinstance(workers, tuple)
        and len(workers) == 2
        and all(whole(n) for n in workers)
        and 1 <= workers[0] <= workers[1]
    ):
        return
    raise GenimgError(
        f"workers must be 0 (train in this process), a count N ≥ 1 or (min, max) with 1 ≤ min ≤ max, got {workers!r}"
    )


def train(request: TrainRequest, *, handle: DatasetHandle | None = None) -> TrainOutcome:
    """Check the request (before any data is read or any run exists), then train where it says.
    `handle`: the dataset already resolved by the caller (it is not read again)."""
    check_workers(request.workers)
    spec = model_spec(request.model)
    sections = training_sections(request)
    run_config = resolve_run_config(request.model, sections)  # bad keys and values fail before anything starts
    one_process = request.workers in (0, 1) or request.workers == (1, 1)
    check_required_graph(run_config.train, "cuda" if request.gpu else "cpu", one_process)
    eval_config = end_of_training_eval_config(sections["eval"])
    run_name = check_run_name(request.run_name or default_run_name(request.model), "--run-name")
    if request.epochs is not None and request.epochs <= 0:
        raise GenimgError(f"--epochs must be > 0, got {request.epochs}")
    if request.cpus_per_worker is not None and (
        not isinstance(request.cpus_per_worker, int)
        or isinstance(request.cpus_per_worker, bool)
        or request.cpus_per_worker < 1
    ):
        raise GenimgError(f"--cpus-per-worker must be a whole number ≥ 1, got {request.cpus_per_worker!r}")
    if request.ray_jobs is not None:
        return train_as_ray_job(request, sections, run_name)  # the job's `genimg train` locks the run
    # A tracking server that does not answer stops the run here, before a local Ray starts.
    wait_for_tracking(tracking_uri(), f"starting training run {run_name!r}")
    # Held from before the run's checkpoints are looked at until its evaluation is logged, by
    # this process (a Ray run's driver): a second run of the name is refused, naming this one.
    with run_lock(run_name, identify=lambda holder: running_mlflow_run(run_name, holder)) as lock:
        handle = handle or resolve_dataset(request.dataset, spec.data_kind)
        sections = training_sections(request, handle.record_shape)
        steps = None if request.epochs is not None else int(sections["train"].get("steps", TrainConfig.steps))
        progress = TrainingProgress(steps)
        try:
            outcome = train_here(request, sections, run_name, handle, progress)
        finally:
            progress.close()
        if lock.lost is not None:
            raise GenimgError(
                f"run {run_name} lost its lock {lock.uri} ({lock.lost}): its checkpoints may "
                "be mixed with another run's; check them, or train again under another --run-name"
            )
        if sections["eval"]:  # what `register` evaluates the run's model with, unless told otherwise
            TrainingRun.existing(outcome.run_id).log_params({"eval": dict(sections["eval"])})
        if request.evaluate and eval_config.at_end_of_training:
            run_steps = int(outcome.metrics.get("step", 0)) if outcome.metrics else 0
            outcome = replace(
                outcome,
                evaluation=evaluate_after_training(
                    outcome.run_id, outcome.run_name, outcome.checkpoint, handle, eval_config, run_steps
                ),
            )
    return outcome


def running_mlflow_run(run_name: str, holder: Mapping[str, Any]) -> dict[str, str]:
    """{"mlflow_run_id": …} of the run that holds the lock of `run_name`: the latest MLflow run of
    that name still RUNNING and started since the lock was taken; {} if none is (yet), or if
    MLflow cannot say (the refusal does not depend on it)."""
    started = holder.get("started")
    try:
        mlflow_client = client(f"looking up the run that holds {run_name}")
        found = mlflow_client.search_runs(
            [experiment_id(mlflow_client)],
            max_results=1,
            order_by=["attributes.start_time DESC"],
            filter_string=f"tags.`{tags.RUN_NAME}` = '{run_name}' and attributes.status = 'RUNNING'",
        )
    except Exception:  # noqa: BLE001 - best effort: the lock's own record already names the holder
        return {}
    if not found or (isinstance(started, (int, float)) and found[0].info.start_time < (started - 1) * 1000):
        return {}
    return {"mlflow_run_id": str(found[0].info.run_id)}


class OutcomeCommon(TypedDict):
    """The TrainOutcome fields that do not depend on where the run trained."""

    model: str
    dataset: str
    run_name: str
    rejected: tuple[Mapping[str, str], ...]


def train_here(
    request: TrainRequest,
    sections: dict[str, dict[str, Any]],
    run_name: str,
    handle: DatasetHandle,
    on_progress: TrainingProgress,
) -> TrainOutcome:
    """In this process (workers 0) or on the Ray cluster this process reaches."""
    common: OutcomeCommon = {
        "model": request.model,
        "dataset": handle.ref,
        "run_name": run_name,
        "rejected": tuple(r.as_dict() for r in handle.rejected),
    }
    if request.workers == 0:
        local, run_id, records = train_in_process(
            request.model,
            handle,
            sections,
            run_name=run_name,
            resume=request.resume,
            epochs=request.epochs,
            export_dir=request.export_dir,
            gpu=request.gpu,
            on_progress=on_progress.update,
            on_step=on_progress.tick,
        )
        return TrainOutcome(
            **common,
            run_id=run_id,
            checkpoint=local.checkpoint.as_uri() if local.checkpoint else None,
            metrics=local.metrics,
            resumed_from_step=local.resumed_from_step,
            records=records,
            seconds=local.seconds,
            images_per_second=local.images_per_second,
            export=str(local.export) if local.export else None,
        )
    fitted = train_on_ray(
        request.model,
        handle,
        sections,
        run_name=run_name,
        workers=request.workers,
        use_gpu=request.gpu,
        cpus_per_worker=request.cpus_per_worker,
        resume=request.resume,
        epochs=request.epochs,
        max_failures=request.max_failures,
        export_dir=request.export_dir,
        samples=request.samples,
        on_progress=on_progress.update,
    )
    return TrainOutcome(
        **common,
        run_id=fitted.run_id,
        checkpoint=fitted.checkpoint,
        metrics=fitted.metrics,
        restarts=fitted.restarts,
        resumed_from_step=fitted.resumed_from_step,
        workers=fitted.workers,
        records=handle.count(),
        seconds=fitted.seconds,
        images_per_second=fitted.images_per_second,
        export=fitted.export,
    )
