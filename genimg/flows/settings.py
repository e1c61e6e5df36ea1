"""The retrain flow's YAML (default: the packaged `retrain.yaml`): datasets, families, workers,
GPU, tuning, evaluation, promotion and Ray Jobs, checked key by key before Prefect starts."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from genimg.config import config_from_dict, read_yaml_mapping
from genimg.configs import locate_config, packaged_config
from genimg.data.normalize import ResizeMode, ResizePolicy
from genimg.distributed.jobs import RayJobsTarget
from genimg.errors import ConfigError, GenimgError
from genimg.evaluation.config import EvalConfig


@dataclass(frozen=True)
class TunePlan:
    trials: int = 4
    steps: int | None = None  # per trial; default: the family's steps
    max_concurrent: int | None = None
    space: str | None = None  # search space YAML; default configs/tune-<model>.yaml


@dataclass(frozen=True)
class DatasetPlan:
    """A dataset of the flow: its source and, optionally, the square size every image gets at
    ingest (`genimg ingest --resolution N --resize MODE`)."""

    source: str
    resolution: int | None = None
    resize: str = "center-crop"


@dataclass(frozen=True)
class FamilyPlan:
    model: str
    dataset: str  # a key of RetrainConfig.datasets
    config: str | None = None
    steps: int | None = None
    overrides: tuple[str, ...] = ()  # --set style "section.key=value"
    tune: TunePlan = TunePlan()


@dataclass(frozen=True)
class RetrainConfig:
    datasets: dict[str, DatasetPlan]
    families: tuple[FamilyPlan, ...]
    workers: int = 1
    gpu: bool = False  # one GPU per Ray Train worker (CUDA; bf16 autocast for conv models from 64 px)
    tune: bool = False  # on: each family is searched (its tune: budget), the best trial goes on
    evaluation: dict[str, Any] = field(default_factory=lambda: dict(EVALUATION_DEFAULTS))  # EvalConfig keys
    min_delta: float = 0.0
    ray_jobs: RayJobsTarget | None = None  # set: training runs as Ray Jobs on that cluster
    source: str = ""


EVALUATION_DEFAULTS: dict[str, int] = {"samples": 500, "seed": 0}
FAMILY_KEYS = {"model", "dataset", "config", "steps", "set", "tune"}
TUNE_KEYS = {"trials", "steps", "max_concurrent", "space"}
RAY_JOBS_KEYS = {"address", "entrypoint", "runtime_env", "forward_env", "poll_seconds"}


def config_file(value: str | None) -> str | None:
    """A preset or space file named in the retrain YAML: a path, or a packaged file's name."""
    return str(locate_config(value)) if value else None


def load_retrain_config(path: str | Path | None = None) -> RetrainConfig:
    """Read and check a retrain YAML; every error names the file and the bad key."""
    path = locate_config(path) if path else packaged_config("retrain.yaml")
    raw = read_yaml_mapping(path, "retrain config")
    unknown = set(raw) - {"datasets", "families", "workers", "gpu", "tune", "evaluation", "promotion", "ray_jobs"}
    if unknown:
        raise ConfigError(f"{path}: unknown top-level key(s) {sorted(unknown)}")
    if not isinstance(raw.get("datasets"), dict) or not raw["datasets"]:
        raise ConfigError(f"{path}: datasets: must map store names to sources")
    datasets = {name: dataset_plan(entry, f"{path}: datasets.{name}") for name, entry in raw["datasets"].items()}
    families = []
    for index, item in enumerate(raw.get("families") or []):
        where = f"{path}: families[{index}]"
        if not isinstance(item, dict) or set(item) - FAMILY_KEYS or "model" not in item or "dataset" not in item:
            raise ConfigError(
                f"{where} needs model and dataset (and only {sorted(FAMILY_KEYS - {'model', 'dataset'})}), "
                f"got {sorted(item) if isinstance(item, dict) else item!r}"
            )
        if item["dataset"] not in raw["datasets"]:
            raise ConfigError(f"{where}.dataset {item['dataset']!r} is not in datasets")
        tune_raw = item.get("tune") or {}
        if not isinstance(tune_raw, dict) or set(tune_raw) - TUNE_KEYS:
            raise ConfigError(f"{where}.tune takes only {sorted(TUNE_KEYS)}, got {tune_raw!r}")
        tune_plan = TunePlan(
            int(tune_raw.get("trials", 4)),
            tune_raw.get("steps"),
            tune_raw.get("max_concurrent"),
            config_file(tune_raw.get("space")),
        )
        if tune_plan.trials < 1:
            raise ConfigError(f"{where}.tune.trials must be ≥ 1, got {tune_plan.trials}")
        families.append(
            FamilyPlan(
                item["model"],
                item["dataset"],
                config_file(item.get("config")),
                item.get("steps"),
                tuple(item.get("set") or ()),
                tune_plan,
            )
        )
    if not families:
        raise ConfigError(f"{path}: families: is empty")
    evaluation, promotion = {**EVALUATION_DEFAULTS, **(raw.get("evaluation") or {})}, raw.get("promotion") or {}
    config_from_dict(EvalConfig, evaluation, where=f"{path}: evaluation")  # a bad key fails here, named
    for switch in ("gpu", "tune"):
        if not isinstance(raw.get(switch, False), bool):
            raise ConfigError(f"{path}: {switch}: must be true or false, got {raw[switch]!r}")
    return RetrainConfig(
        datasets,
        tuple(families),
        int(raw.get("workers", 1)),
        raw.get("gpu", False),
        raw.get("tune", False),
        evaluation,
        float(promotion.get("min_delta", 0.0)),
        ray_jobs_target(raw.get("ray_jobs"), path),
        str(path),
    )


DATASET_KEYS = {"source", "resolution", "resize"}


def dataset_plan(entry: Any, where: str) -> DatasetPlan:
    """`name: SOURCE`, or `name: {source: SOURCE, resolution: N, resize: center-crop|pad|stretch}`."""

    if isinstance(entry, str) and entry:
        return DatasetPlan(entry)
    if not isinstance(entry, dict) or "source" not in entry or set(entry) - DATASET_KEYS:
        raise ConfigError(f"{where}: a source, or a mapping of {sorted(DATASET_KEYS)} with a source, got {entry!r}")
    if "resize" in entry and "resolution" not in entry:
        raise ConfigError(f"{where}: resize needs resolution")
    plan = DatasetPlan(str(entry["source"]), entry.get("resolution"), str(entry.get("resize", "center-crop")))
    if plan.resolution is not None:
        if not isinstance(plan.resolution, int) or isinstance(plan.resolution, bool):
            raise ConfigError(f"{where}.resolution must be an integer, got {plan.resolution!r}")
        try:
            ResizePolicy(plan.resolution, cast(ResizeMode, plan.resize))  # ResizePolicy checks the mode
        except GenimgError as exc:
            raise ConfigError(f"{where}: {exc}") from None
    return plan


def ray_jobs_target(raw: Any, path: Path) -> RayJobsTarget | None:
    """`GENIMG_RAY_JOBS=http://head:8265` (or `ray_jobs.address`) sends training to that
    cluster's Jobs API; the rest of `ray_jobs:` says how."""
    raw = raw or {}
    if not isinstance(raw, dict) or set(raw) - RAY_JOBS_KEYS:
        raise ConfigError(f"{path}: ray_jobs takes only {sorted(RAY_JOBS_KEYS)}, got {raw!r}")
    address = os.environ.get("GENIMG_RAY_JOBS") or raw.get("address")
    if not address:
        return None
    if not str(address).startswith(("http://", "https://")):
        raise ConfigError(
            f"Ray Jobs address {address!r} (GENIMG_RAY_JOBS or ray_jobs.address) must be the "
            "dashboard's http(s):// URL, e.g. http://head:8265"
        )
    runtime_env = raw.get("runtime_env") or {}
    if not isinstance(runtime_env, dict):
        raise ConfigError(f"{path}: ray_jobs.runtime_env must be a mapping, got {runtime_env!r}")
    return RayJobsTarget(
        str(address),
        str(raw.get("entrypoint", "genimg")),
        runtime_env,
        tuple(raw.get("forward_env") or ()),
        float(raw.get("poll_seconds", 2.0)),
    )
