"""genimg from Python (a notebook, your own orchestrator): the services the CLI and the retrain
flow call, with the same defaults and checks, returning what the CLI prints as JSON.

    import genimg

    data = genimg.ingest("builtin:digits", name="digits")
    run = genimg.train("vae", f"digits@{data.version}", steps=200, workers=0)
    version = genimg.register(run.run_id)
    decision = genimg.promote(version["name"])
    genimg.sample(f"models:/{version['name']}@champion", "digits.png", n=16)
    images = genimg.sample(run.run_id, n=4)  # uint8 (4, 1, 16, 16), no file
    model = genimg.load_model("models:/genimg-digits-vae@champion")  # an nn.Module
    genimg.datasets()  # the dataset versions in the store

Training takes the train split only (validation and test records are held out by content hash,
as for `genimg train`); `workers=0` trains in this process, N on Ray Train (a local Ray, or the
cluster at RAY_ADDRESS).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, overload

import numpy as np

from genimg.config import config_from_dict
from genimg.data.dataset import DataKind
from genimg.data.versions import DatasetVersion, IngestResult, list_versions
from genimg.errors import ConfigError
from genimg.evaluation.config import EvalConfig
from genimg.feedback import show_on_stderr, stop_showing
from genimg.models.base import GenerativeModel
from genimg.services.evaluate import evaluate_target
from genimg.services.ingest import ingest as ingest_source
from genimg.services.register import register as register_run
from genimg.services.sample import SampleOutcome, model_location, sample_array
from genimg.services.sample import sample as draw_samples
from genimg.services.train import TrainOutcome, TrainRequest
from genimg.services.train import train as train_request
from genimg.store import open_store
from genimg.tracking.models import load_model_at
from genimg.tracking.registry import promote as promote_version
from genimg.training.run import load_config_file, merge_sections


class Progress:
    shown = True  # genimg.show_progress(False) turns it off for this process


def show_progress(enabled: bool = True) -> None:
    """What each call is doing, on stderr (a bar on a terminal, a line every 10 s elsewhere, a
    notebook included): on by default; `genimg.show_progress(False)` silences it."""
    Progress.shown = enabled
    if not enabled:
        stop_showing()


def announce() -> None:
    if Progress.shown:
        show_on_stderr()


def ingest(
    source: str | Path,
    name: str,
    *,
    kind: DataKind | None = None,
    resolution: int | None = None,
    resize: str | None = None,
) -> IngestResult:
    """Validate `source` and publish it as a version of dataset `name` in the object store."""
    announce()
    return ingest_source(str(source), name, kind=kind, resolution=resolution, resize=resize)


def train(
    model: str,
    dataset: str | Path,
    *,
    steps: int | None = None,
    epochs: float | None = None,
    workers: int | tuple[int, int] = 1,
    batch_size: int | None = None,
    seed: int | None = None,
    gpu: bool = False,
    config: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    run_name: str | None = None,
    resume: bool = False,
    export_dir: str | Path | None = None,
) -> TrainOutcome:
    """Train `model` (gan-mlp, gan, gan-resnet, vae, rvae) on the train split of `dataset`
    (NAME[@VERSION] in the store, or a raw source). `config`: a YAML file or a packaged preset's
    name; `overrides`: {"model.latent_dim": 8, "train.lr": 1e-3}, as `--set` takes them;
    `steps`, `batch_size` (per worker) and `seed` as `--steps`, `--batch-size` and `--seed`."""
    announce()
    if steps is not None and epochs is not None:
        raise ValueError("give steps or epochs, not both")
    flags = {"steps": steps, "batch_size": batch_size, "seed": seed}
    sections = merge_sections(
        load_config_file(config) if config else {},
        override_sections(overrides or {}),
        {"train": {key: value for key, value in flags.items() if value is not None}},
    )
    request = TrainRequest(
        model,
        str(dataset),
        sections,
        workers=workers,
        gpu=gpu,
        run_name=run_name,
        resume=resume,
        epochs=epochs,
        export_dir=Path(export_dir) if export_dir else None,
    )
    return train_request(request)


def override_sections(overrides: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """{"model.latent_dim": 8} → {"model": {"latent_dim": 8}} (values keep their types)."""
    sections: dict[str, dict[str, Any]] = {}
    for key, value in overrides.items():
        section, dot, name = key.partition(".")
        if not dot or not section or not name:
            raise ConfigError(f"invalid override {key!r}: expected SECTION.KEY, e.g. model.latent_dim")
        sections.setdefault(section, {})[name] = value
    return sections


def evaluate(
    target: str | Path, dataset: str | Path | None = None, *, split: str = "test", **settings: Any
) -> dict[str, Any]:
    """Score a run id / models:/ URI / model folder on `split`; `settings`: EvalConfig's keys
    (samples, seed, nll_k, best_of, context_frames, features, extractor_steps)."""
    announce()
    return evaluate_target(
        str(target),
        str(dataset) if dataset is not None else None,
        config_from_dict(EvalConfig, settings, where="eval"),
        split=split,
    )


def register(run_id: str, name: str | None = None, **evaluation: Any) -> dict[str, Any]:
    """A finished training run's model as a new registered version, evaluated on test first
    unless that is recorded; `evaluation` overrides the run's eval settings (samples, seed,
    nll_k, best_of, features, extractor_steps)."""
    announce()
    return register_run(run_id, name, evaluation=evaluation)


def promote(
    name: str,
    version: int | None = None,
    *,
    min_delta: float = 0.0,
    force: bool = False,
    metric: str | None = None,
    mode: str | None = None,
) -> dict[str, Any]:
    """Move @champion to `version` (default: the latest) only if it beats the champion."""
    announce()
    return promote_version(name, version, force=force, min_delta=min_delta, metric=metric, mode=mode)


@overload
def sample(
    model_uri: str | Path,
    output: None = None,
    n: int = 64,
    *,
    seed: int = 0,
    frames: int | None = None,
    classes: str | list[str] | None = None,
) -> np.ndarray: ...


@overload
def sample(
    model_uri: str | Path,
    output: str | Path,
    n: int = 64,
    *,
    seed: int = 0,
    frames: int | None = None,
    classes: str | list[str] | None = None,
) -> SampleOutcome: ...


def sample(
    model_uri: str | Path,
    output: str | Path | None = None,
    n: int = 64,
    *,
    seed: int = 0,
    frames: int | None = None,
    classes: str | list[str] | None = None,
) -> SampleOutcome | np.ndarray:
    """Draw `n` samples from a run id / runs:/ID / models:/ URI / model folder: into `output` (.png
    grid, or .gif for sequence models), or, with no output, as a uint8 array (N, C, H, W) or
    (N, T, C, H, W). `classes`: one class (name or index) or a list of them."""
    announce()
    chosen = [classes] if isinstance(classes, (str, int)) else classes
    names = [str(c) for c in chosen] if chosen is not None else None
    if output is None:
        return sample_array(str(model_uri), n, seed=seed, frames=frames, classes=names)
    return draw_samples(str(model_uri), Path(output), n, seed=seed, frames=frames, classes=names)


def load_model(model_uri: str | Path) -> GenerativeModel:
    """The model (a torch nn.Module, in eval mode) at a run id / runs:/ID / models:/ URI / folder;
    registered weights are checked against their recorded sha256."""
    announce()
    model = load_model_at(model_location(str(model_uri)))
    model.eval()
    return model


def datasets(name: str | None = None) -> list[DatasetVersion]:
    """The dataset versions in the object store (GENIMG_STORE), oldest first; `name`: one dataset's."""
    announce()
    return list_versions(open_store(), name)


__all__ = ["datasets", "evaluate", "ingest", "load_model", "promote", "register", "sample", "show_progress", "train"]
