"""Training in this process (`--workers 0`): the plain-PyTorch loop, tracked in MLflow like a Ray
run (same tags, params, metrics and result fields), checkpoints in $GENIMG_HOME/runs/<run name>."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, cast

from genimg.data.dataset import Dataset
from genimg.data.handle import DatasetHandle
from genimg.data.streaming import RecordStream
from genimg.errors import TrainingInterrupted
from genimg.evaluation.grids import sample_png
from genimg.feedback import say
from genimg.settings import local_runs_dir
from genimg.tracking import tags
from genimg.tracking.runs import TrainingRun
from genimg.training.checkpoint import latest_checkpoint
from genimg.training.loop import LogCallback, StepCallback
from genimg.training.run import (
    LocalRun,
    RunConfig,
    check_device,
    check_resume_dataset,
    decide_resume,
    labelled_only,
    resolve_run_config,
    train_locally,
    with_epochs,
)


def recorded_dataset(run_dir: Path) -> str | None:
    """The pinned dataset an earlier attempt of this local run trained on, if it says."""
    try:
        # run.json is the run's config with the pinned dataset's ref beside it (written below).
        return cast("str | None", json.loads((run_dir / "run.json").read_text()).get("dataset"))
    except (OSError, ValueError):
        return None


def start_tracking(run: RunConfig, handle: DatasetHandle, run_name: str, records: int) -> TrainingRun:
    tracking = TrainingRun(run_name, tags={tags.MODEL: run.model_name, tags.DATASET: handle.ref})
    tracking.log_params(run.as_dict() | {"dataset": handle.ref, "workers": "0"})
    tracking.log_dataset(handle.ref, handle.location, records, handle.record_shape)
    return tracking


def training_input(handle: DatasetHandle, run: RunConfig) -> tuple[Dataset | RecordStream, int]:
    """The train split in memory, or streamed from the store (train.data_mode), and its record
    count; a conditional model's labelled records only."""
    conditional = bool(getattr(run.model, "num_classes", None))
    if handle.streams(run.train.data_mode):
        assert handle.stored is not None
        stream = RecordStream(
            handle.stored, ("train",), rank=0, world=1, labelled_only=conditional, **run.train.stream_options()
        )
        return stream, stream.records_per_epoch()
    dataset = handle.load_splits(("train",))
    if conditional:
        dataset = labelled_only(dataset)
    return dataset, len(dataset)


def train_in_process(
    model_name: str,
    handle: DatasetHandle,
    sections: Mapping[str, Mapping[str, Any]],
    *,
    run_name: str,
    resume: bool | Literal["auto"] = False,
    epochs: float | None = None,
    export_dir: Path | None = None,
    gpu: bool = False,
    on_progress: LogCallback | None = None,
    on_step: StepCallback | None = None,
) -> tuple[LocalRun, str, int]:
    """(the local run, its MLflow run id, the records it trained on). The MLflow run is created
    only once the config and the data have been checked, so bad input leaves no run behind."""
    run_dir = local_runs_dir() / run_name
    checkpoints = run_dir / "checkpoints"
    has_checkpoints = checkpoints.is_dir() and any(checkpoints.iterdir())
    resume = decide_resume(has_checkpoints, resume, run_name, str(run_dir))
    run = resolve_run_config(model_name, sections, handle.shape_probe())
    run = with_epochs(run, handle.count(), epochs)
    records, count = training_input(handle, run)
    if has_checkpoints:
        check_resume_dataset(run_name, recorded_dataset(run_dir), handle.ref, handle.given)
    check_device("cuda" if gpu else "cpu")
    tracking = start_tracking(run, handle, run_name, count)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "run.json").write_text(json.dumps(run.as_dict() | {"dataset": handle.ref}, indent=2))

    def on_log(step: int, metrics: dict[str, float]) -> None:
        tracking.add_metrics(step, metrics, int(time.time() * 1000))
        if on_progress is not None:
            on_progress(step, metrics)

    say(
        "training %s on %s in this process: %d steps of %d records (MLflow run %s)",
        run.model_name,
        handle.ref,
        run.train.steps,
        run.train.batch_size,
        tracking.run_id,
    )
    try:
        with tracking.failed_on_error():
            result = train_locally(
                run,
                records,
                run_dir=run_dir,
                resume=resume,
                export_dir=export_dir,
                device="cuda" if gpu else "cpu",
                on_log=on_log,
                on_step=on_step,
                on_samples=lambda step, model: tracking.log_image(sample_png(model), "samples", step),
            )
    except KeyboardInterrupt:
        latest = latest_checkpoint(checkpoints)
        raise TrainingInterrupted(run_name, tracking.run_id, latest.path.as_uri() if latest else None) from None
    tracking.set_tags({tags.CHECKPOINT: result.checkpoint.as_uri() if result.checkpoint else ""})
    tracking.finish()
    return result, tracking.run_id, count
