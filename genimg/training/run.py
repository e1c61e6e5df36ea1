"""Resolve a run's configuration (preset file, `section.key=value` overrides, dataset shape),
decide whether it starts or resumes, and train it in this process on records in memory."""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from genimg.config import config_from_dict, config_to_dict, read_yaml_mapping, replace_config
from genimg.configs import locate_config
from genimg.data.dataset import Dataset
from genimg.data.sources import PINNED_RAW
from genimg.data.streaming import RecordStream
from genimg.data.versions import SHARD_BYTES
from genimg.errors import ConfigError, DataError, GenimgError
from genimg.feedback import say
from genimg.limits import check_memory, format_bytes
from genimg.models.base import (
    TRAINING_BYTES_PER_WEIGHT,
    GenerativeModel,
    ModelSpec,
    check_model_memory,
    model_spec,
    save_model,
)
from genimg.training.config import TrainConfig
from genimg.training.loop import BatchSchedule, LogCallback, StepCallback, seed_everything, train_model

CONFIG_SECTIONS = ("model", "train", "eval")  # eval: read by genimg.evaluation, not here
# What a batch costs per record value at least: the records as fp32 and the decoder's output.
BATCH_BYTES_PER_VALUE = 8


@dataclass(frozen=True)
class RunConfig:
    model_name: str
    model: Any  # the model family's typed config
    train: TrainConfig

    def as_dict(self) -> dict[str, Any]:
        return {"model_name": self.model_name, "model": config_to_dict(self.model), "train": config_to_dict(self.train)}


def load_config_file(path: str | Path) -> dict[str, dict[str, Any]]:
    """A preset's sections: a YAML path, or a packaged preset by name (`cifar10-gan`,
    `configs/cifar10-gan.yaml`)."""
    path = locate_config(path)
    loaded = read_yaml_mapping(path, "config file")
    for section, values in loaded.items():
        if section not in CONFIG_SECTIONS:
            raise ConfigError(f"{path}: unknown section {section!r} (known: {', '.join(CONFIG_SECTIONS)})")
        if not isinstance(values, dict):
            raise ConfigError(f"{path}: section {section!r} must be a mapping")
    return loaded


def merge_sections(*layers: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    merged: dict[str, dict[str, Any]] = {section: {} for section in CONFIG_SECTIONS}
    for layer in layers:
        for section, values in layer.items():
            if section not in CONFIG_SECTIONS:
                raise ConfigError(f"unknown config section {section!r} (known: {', '.join(CONFIG_SECTIONS)})")
            merged[section].update(values)
    return merged


def resolve_run_config(
    model_name: str,
    sections: Mapping[str, Mapping[str, Any]],
    dataset: Dataset | None = None,
) -> RunConfig:
    """Typed configs from merged sections; with a dataset, image shape (and sequence length)
    come from the data. Without one, this only validates keys and values (fail fast)."""
    spec = model_spec(model_name)
    model_values = dict(sections.get("model", {}))
    train = config_from_dict(TrainConfig, sections.get("train", {}), where="train")
    model_config: object = config_from_dict(spec.config_cls, model_values, where="model")
    if dataset is not None:
        model_config = fit_model_to_data(spec, model_config, model_values, dataset)
    run = RunConfig(model_name, model_config, train)
    check_run_memory(run, dataset.record_shape if dataset is not None else record_shape_of(spec, model_config))
    return run


def record_shape_of(spec: ModelSpec, config: Any) -> tuple[int, ...]:
    """One training record's shape as the model config says (before the data is known)."""
    image_shape = tuple(int(side) for side in config.image_shape)
    return (int(config.num_frames), *image_shape) if spec.data_kind == "sequences" else image_shape


def check_run_memory(run: RunConfig, record_shape: tuple[int, ...]) -> None:
    """Refuse sizes this machine cannot hold (genimg.limits) while the run is still a config:
    before any data is read, module built or MLflow run created."""
    # A conditional model's classes come from the data: before it is read the model cannot be sized.
    if not (getattr(run.model, "conditional", False) and run.model.num_classes < 2):
        check_model_memory(
            run.model_name,
            run.model,
            TRAINING_BYTES_PER_WEIGHT,
            "make the model smaller (its width, latent or hidden sizes)",
        )
    train, record_bytes = run.train, math.prod(record_shape)
    check_memory(
        f"train.batch_size={train.batch_size}",
        train.batch_size * record_bytes * BATCH_BYTES_PER_VALUE,
        f"lower it (a record holds {record_bytes:,} values)",
    )
    # A streaming worker holds shuffle_buffer + batch_size records, and prefetch_shards shards read ahead.
    check_memory(
        f"train.shuffle_buffer={train.shuffle_buffer}",
        (train.shuffle_buffer + train.batch_size) * record_bytes,
        f"lower it (the records a streaming worker shuffles among, {format_bytes(record_bytes)} each)",
    )
    shard_bytes = max(1, SHARD_BYTES // record_bytes) * record_bytes
    check_memory(
        f"train.prefetch_shards={train.prefetch_shards}",
        train.prefetch_shards * shard_bytes,
        f"lower it (the shards a streaming worker reads ahead, up to {format_bytes(shard_bytes)} each)",
    )


def fit_model_to_data(spec: ModelSpec, config: Any, explicit: Mapping[str, Any], dataset: Dataset) -> Any:
    if dataset.kind != spec.data_kind:
        example = "builtin:moving-digits" if spec.data_kind == "sequences" else "builtin:digits"
        raise DataError(
            f"model {spec.name} trains on {spec.data_kind} but {dataset.source} holds "
            f"{dataset.kind} (e.g. --dataset {example})"
        )
    shape = dataset.image_shape
    if "image_shape" in explicit and tuple(config.image_shape) != shape:
        raise ConfigError(f"model.image_shape={list(config.image_shape)} does not match the dataset's {list(shape)}")
    updates: dict[str, Any] = {"image_shape": list(shape)}
    if spec.data_kind == "sequences" and "num_frames" not in explicit:
        updates["num_frames"] = dataset.num_frames
    if getattr(config, "conditional", False):
        classes, names = class_layout(dataset)
        if explicit.get("num_classes") not in (None, classes):
            raise ConfigError(
                f"model.num_classes={explicit['num_classes']} does not match the dataset's {classes} classes"
            )
        updates |= {"num_classes": classes, "class_names": list(names)}
    return replace_config(config, updates, where="model")


def class_layout(dataset: Dataset) -> tuple[int, tuple[str, ...]]:
    """(classes, names) a conditional model of `dataset` generates: its class folders' names,
    or labels 0…max when it has labels but no names."""
    known = dataset.labels[dataset.labels >= 0] if dataset.labels is not None else None
    if known is None or len(known) == 0:
        raise DataError(
            f"model.conditional=true needs a labelled dataset, and {dataset.source} has no labels "
            "(labels come from class subfolders, an IDX labels file or an .npz `labels` array)"
        )
    names = tuple(dataset.class_names or ())
    classes = len(names) if names else int(known.max()) + 1
    if classes < 2:
        raise DataError(f"model.conditional=true needs at least 2 classes; {dataset.source} has {classes}")
    return classes, names


def labelled_only(dataset: Dataset) -> Dataset:
    """The records that carry a label (what a conditional model trains on)."""
    assert dataset.labels is not None
    keep = dataset.labels >= 0
    if keep.all():
        return dataset
    return Dataset(
        kind=dataset.kind,
        data=dataset.data[keep],
        source=dataset.source,
        labels=dataset.labels[keep],
        class_names=dataset.class_names,
        rejected=dataset.rejected,
    )


def check_resume_dataset(run_name: str, recorded: str | None, pinned: str, given: str) -> None:
    """A run resumes only on the dataset version it trained on: a name that now resolves to a
    newer version (or another version given) is refused, naming both."""
    # Runs from before datasets were pinned recorded a bare name: nothing to compare.
    if not recorded or recorded == pinned or not PINNED_RAW.fullmatch(recorded):
        return
    shown = pinned if given == pinned else f"{given} (now {pinned})"
    raise GenimgError(
        f"cannot resume run {run_name} on {shown}: it trained on {recorded}; "
        f"resume with --dataset {recorded}, or start another --run-name"
    )


def decide_resume(has_checkpoints: bool, resume: bool | Literal["auto"], run_name: str, where: str) -> bool:
    """Whether a run continues its latest checkpoint. A run that has checkpoints is continued
    only when asked (`--resume`); "auto" (the retrain flow) continues whatever a retried task
    started, silently."""
    if has_checkpoints and not resume:
        raise GenimgError(
            f"run {run_name} already has checkpoints in {where}; "
            "pass --resume to continue it or pick another --run-name"
        )
    if resume == "auto":
        return has_checkpoints
    if resume and not has_checkpoints:
        say("run %s has no checkpoints in %s: starting it fresh", run_name, where)
    return bool(resume)


def with_epochs(run: RunConfig, records_per_worker: int, epochs: float | None) -> RunConfig:
    """`--epochs`: the steps that many passes over a worker's records take."""
    if epochs is None:
        return run
    steps = BatchSchedule(records_per_worker, run.train.batch_size, run.train.seed).steps_for_epochs(epochs)
    return dataclasses.replace(run, train=replace_config(run.train, {"steps": steps}, where="train"))


def check_device(device: str) -> None:
    if device == "cuda" and not torch.cuda.is_available():
        raise GenimgError("--gpu: no CUDA device is visible to torch")


@dataclass(frozen=True)
class LocalRun:
    model: GenerativeModel
    checkpoint: Path | None
    export: Path | None
    metrics: dict[str, float]
    resumed_from_step: int
    seconds: float
    images_per_second: float


def train_locally(
    run: RunConfig,
    records: Dataset | RecordStream,
    *,
    run_dir: Path,
    resume: bool = False,
    export_dir: Path | None = None,
    device: str = "cpu",
    on_log: LogCallback | None = None,
    on_step: StepCallback | None = None,
    on_samples: Callable[[int, GenerativeModel], None] | None = None,
) -> LocalRun:
    """Train `run` on `records` (in memory or streamed; the config already fitted to them; a
    conditional model's records already labelled_only) in this process, checkpoints in
    `run_dir`/checkpoints."""
    check_device(device)
    seed_everything(run.train.seed)
    model = model_spec(run.model_name).model_cls(run.model)
    started = time.perf_counter()

    def logged(step: int, metrics: dict[str, float]) -> None:
        if on_log is not None:
            on_log(step, metrics)
        if on_samples is not None and (step % run.train.checkpoint_every == 0 or step == run.train.steps):
            on_samples(step, model)  # at each checkpoint, as Ray runs log theirs

    result = train_model(
        model,
        records if isinstance(records, RecordStream) else torch.from_numpy(records.data),
        run.train,
        labels=torch.from_numpy(records.labels) if model.num_classes and isinstance(records, Dataset) else None,
        device=device,
        checkpoint_dir=run_dir / "checkpoints",
        resume=resume,
        on_log=logged,
        on_step=on_step,
    )
    export = save_model(model, export_dir) if export_dir is not None else None
    return LocalRun(
        model=model,
        checkpoint=result.checkpoint,
        export=export,
        metrics=result.metrics,
        resumed_from_step=result.resumed_from_step,
        seconds=time.perf_counter() - started,
        images_per_second=result.images_per_second,
    )
