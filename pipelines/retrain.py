"""The retrain flow: ingest → train → evaluate → register → promote, per model family.

Tasks are thin: each calls one genimg function. Tasks that touch the network (store, MLflow,
Ray) retry with backoff; a family that fails is reported in the result and the others go on.
Ingestion is cached on the source's fingerprint, so an unchanged source is not read again.
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NONE as NO_CACHE

from genimg.config import read_yaml_mapping
from genimg.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = ROOT / "configs" / "retrain.yaml"
RETRY_DELAYS = [2, 10, 30]


@dataclass(frozen=True)
class FamilyPlan:
    model: str
    dataset: str  # a key of RetrainConfig.datasets
    config: str | None = None
    steps: int | None = None
    overrides: tuple[str, ...] = ()  # --set style "section.key=value"


@dataclass(frozen=True)
class RetrainConfig:
    datasets: dict[str, str]
    families: tuple[FamilyPlan, ...]
    workers: int = 1
    eval_samples: int = 500
    eval_seed: int = 0
    min_delta: float = 0.0
    source: str = ""


def load_retrain_config(path: str | Path | None = None) -> RetrainConfig:
    path = Path(path) if path else DEFAULT_CONFIG
    raw = read_yaml_mapping(path, "retrain config")
    if not isinstance(raw.get("datasets"), dict) or not raw["datasets"]:
        raise ConfigError(f"{path}: datasets: must map store names to sources")
    families = []
    for index, item in enumerate(raw.get("families") or []):
        unknown = set(item) - {"model", "dataset", "config", "steps", "set"}
        if unknown or "model" not in item or "dataset" not in item:
            raise ConfigError(f"{path}: families[{index}] needs model and dataset (and only config, steps, set), got {sorted(item)}")
        if item["dataset"] not in raw["datasets"]:
            raise ConfigError(f"{path}: families[{index}].dataset {item['dataset']!r} is not in datasets")
        config = item.get("config")
        families.append(FamilyPlan(item["model"], item["dataset"], str(ROOT / config) if config and not Path(config).is_absolute() else config,
                                   item.get("steps"), tuple(item.get("set") or ())))
    if not families:
        raise ConfigError(f"{path}: families: is empty")
    evaluation, promotion = raw.get("evaluation") or {}, raw.get("promotion") or {}
    return RetrainConfig(dict(raw["datasets"]), tuple(families), int(raw.get("workers", 1)),
                         int(evaluation.get("samples", 500)), int(evaluation.get("seed", 0)),
                         float(promotion.get("min_delta", 0.0)), str(path))


def source_fingerprint(source: str) -> str:
    """Changes when the source's content may have: builtin sources by genimg version, local
    files by path, size and modification time, s3:// by key, size and ETag."""
    from genimg import __version__

    digest = hashlib.sha256(source.encode())
    if source.startswith("builtin:"):
        digest.update(__version__.encode())
    elif source.startswith("s3://"):
        import boto3

        from genimg.store import split_s3_uri

        bucket, prefix = split_s3_uri(source)
        for page in boto3.client("s3").get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                digest.update(f"{item['Key']}|{item['Size']}|{item['ETag']}\n".encode())
    else:
        root = Path(source).expanduser()
        files = sorted(root.rglob("*")) if root.is_dir() else [root]
        for path in files:
            if path.is_file():
                stat = path.stat()
                digest.update(f"{path.relative_to(root) if root.is_dir() else path.name}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def ingest_cache_key(context: Any, parameters: dict[str, Any]) -> str:
    from genimg.store import default_store_uri

    store = hashlib.sha256(default_store_uri().encode()).hexdigest()[:8]
    return f"ingest-{parameters['name']}-{store}-{source_fingerprint(parameters['source'])}"


@task(retries=2, retry_delay_seconds=RETRY_DELAYS, cache_key_fn=ingest_cache_key, persist_result=True)
def ingest(name: str, source: str, kind: str | None) -> dict[str, Any]:
    from genimg.data.readers import read_source
    from genimg.data.versions import ingest_dataset

    result = ingest_dataset(read_source(source, kind), name)  # type: ignore[arg-type]
    return {"name": result.name, "version": result.version, "counts": result.counts,
            "reused": result.reused, "rejected": len(result.rejected)}


@task(retries=2, retry_delay_seconds=RETRY_DELAYS, cache_policy=NO_CACHE)
def train(plan: FamilyPlan, dataset_ref: str, workers: int, run_name: str) -> dict[str, Any]:
    from genimg.config import parse_overrides
    from genimg.training.run import load_config_file, merge_sections

    sections = merge_sections(load_config_file(plan.config) if plan.config else {}, parse_overrides(list(plan.overrides)),
                              {"train": {"steps": plan.steps}} if plan.steps else {})
    if workers == 0:
        from genimg.tracking.local import train_in_process

        payload = train_in_process(plan.model, dataset_ref, sections, run_name, None, False, None, False, lambda s, m: None)
        return {"run_id": payload["run_id"], "checkpoint": payload["checkpoint"], "metrics": payload["metrics"]}
    from genimg.distributed.trainer import train_distributed

    result = train_distributed(plan.model, dataset_ref, sections, workers=workers, run_name=run_name, samples=True)
    return {"run_id": result.run_id, "checkpoint": result.checkpoint, "metrics": result.metrics}


@task(retries=2, retry_delay_seconds=RETRY_DELAYS, cache_policy=NO_CACHE)
def evaluate(run_id: str, dataset_ref: str, samples: int, seed: int) -> dict[str, Any]:
    from genimg.evaluation.config import EvalConfig
    from genimg.tracking.evaluations import evaluate_target

    return evaluate_target(run_id, dataset_ref, EvalConfig(samples=samples, seed=seed), split="test")


@task(retries=2, retry_delay_seconds=RETRY_DELAYS, cache_policy=NO_CACHE)
def register(run_id: str, flow_run_id: str | None) -> dict[str, Any]:
    from genimg.tracking.registry import register_run

    return register_run(run_id, flow_run_id=flow_run_id)


@task(retries=2, retry_delay_seconds=RETRY_DELAYS, cache_policy=NO_CACHE)
def promote(name: str, version: int, min_delta: float) -> dict[str, Any]:
    from genimg.tracking.registry import promote as promote_version

    return promote_version(name, version, min_delta=min_delta)


@dataclass
class FamilyOutcome:
    model: str
    dataset: str
    name: str | None = None
    version: int | None = None
    run_id: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    promoted: bool | None = None
    reason: str | None = None
    error: str | None = None


def retrain_family(plan: FamilyPlan, dataset_ref: str, config: RetrainConfig, flow_run_id: str | None) -> FamilyOutcome:
    outcome = FamilyOutcome(plan.model, dataset_ref)
    try:
        run_name = f"retrain-{plan.model}-{time.strftime('%Y%m%d-%H%M%S')}-{os.urandom(3).hex()}"
        trained = train(plan, dataset_ref, config.workers, run_name)
        outcome.run_id = trained["run_id"]
        evaluated = evaluate(trained["run_id"], dataset_ref, config.eval_samples, config.eval_seed)
        outcome.metrics = {k: v for k, v in evaluated["metrics"].items() if "_frame_" not in k}
        registered = register(trained["run_id"], flow_run_id)
        outcome.name, outcome.version = registered["name"], registered["version"]
        decision = promote(registered["name"], registered["version"], config.min_delta)
        outcome.promoted, outcome.reason = decision["promoted"], decision["reason"]
    except Exception as exc:  # one family's failure is its outcome; the others go on
        outcome.error = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
    return outcome


@flow(name="retrain", log_prints=True)
def retrain(config_path: str | None = None) -> dict[str, Any]:
    """Ingest each source, then train, evaluate, register and promote each family."""
    from prefect.runtime import flow_run

    from genimg.models import model_spec

    config = load_retrain_config(config_path)
    flow_run_id = str(flow_run.id) if flow_run.id else None
    kinds: dict[str, set[str]] = {}
    for plan in config.families:
        kinds.setdefault(plan.dataset, set()).add(model_spec(plan.model).data_kind)
    datasets: dict[str, dict[str, Any]] = {}
    failed: dict[str, str] = {}
    for name, source in config.datasets.items():
        if name not in kinds:
            continue
        # One kind when every family on it agrees; else the reader decides (mismatched
        # families then fail on their own, not the dataset).
        kind = next(iter(kinds[name])) if len(kinds[name]) == 1 else None
        state = ingest(name, source, kind, return_state=True)
        if state.is_failed():
            failed[name] = f"ingest of {source} failed: {state.message}"
            continue
        result = dict(state.result())
        result["reused"] = result["reused"] or state.name == "Cached"
        datasets[name] = result
    from contextlib import nullcontext

    from genimg.distributed.cluster import ray_session

    outcomes = []
    with ray_session() if config.workers > 0 else nullcontext():
        for plan in config.families:
            if plan.dataset in failed:
                outcomes.append(FamilyOutcome(plan.model, plan.dataset, error=failed[plan.dataset]))
                continue
            ref = f"{plan.dataset}@{datasets[plan.dataset]['version']}"
            outcomes.append(retrain_family(plan, ref, config, flow_run_id))
    return {
        "datasets": list(datasets.values()),
        "models": [vars(outcome) for outcome in outcomes],
        "flow_run_id": flow_run_id,
    }


__all__ = ["load_retrain_config", "retrain", "source_fingerprint"]
