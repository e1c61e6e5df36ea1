"""The retrain flow: ingest → train → evaluate → register → promote, per model family.

Tasks are thin: each calls one genimg function. Tasks that touch the network (store, MLflow,
Ray) retry with backoff; a family that fails is reported in the result and the others go on.
Ingestion is cached on the source's fingerprint, so an unchanged source is not read again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NONE as NO_CACHE

from genimg.config import read_yaml_mapping
from genimg.distributed.jobs import RayJobsTarget, run_genimg_job
from genimg.errors import ConfigError, GenimgError, redact_credentials
from genimg.feedback import TrainingProgress

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = ROOT / "configs" / "retrain.yaml"
RETRY_DELAYS = [2, 10, 30]


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
    gpu: bool = False  # one GPU per Ray Train worker (CUDA, bf16 autocast)
    tune: bool = False  # on: each family is searched (its tune: budget), the best trial goes on
    evaluation: dict[str, Any] = field(default_factory=lambda: dict(EVALUATION_DEFAULTS))  # EvalConfig keys
    min_delta: float = 0.0
    ray_jobs: RayJobsTarget | None = None  # set: training runs as Ray Jobs on that cluster
    source: str = ""


EVALUATION_DEFAULTS = {"samples": 500, "seed": 0}
FAMILY_KEYS = {"model", "dataset", "config", "steps", "set", "tune"}
TUNE_KEYS = {"trials", "steps", "max_concurrent", "space"}
RAY_JOBS_KEYS = {"address", "entrypoint", "runtime_env", "forward_env", "poll_seconds"}


def repo_path(value: str | None) -> str | None:
    return str(ROOT / value) if value and not Path(value).is_absolute() else value


def load_retrain_config(path: str | Path | None = None) -> RetrainConfig:
    """Read and check a retrain YAML; every error names the file and the bad key."""
    path = Path(path) if path else DEFAULT_CONFIG
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
            raise ConfigError(f"{where} needs model and dataset (and only {sorted(FAMILY_KEYS - {'model', 'dataset'})}), "
                              f"got {sorted(item) if isinstance(item, dict) else item!r}")
        if item["dataset"] not in raw["datasets"]:
            raise ConfigError(f"{where}.dataset {item['dataset']!r} is not in datasets")
        tune_raw = item.get("tune") or {}
        if not isinstance(tune_raw, dict) or set(tune_raw) - TUNE_KEYS:
            raise ConfigError(f"{where}.tune takes only {sorted(TUNE_KEYS)}, got {tune_raw!r}")
        tune_plan = TunePlan(int(tune_raw.get("trials", 4)), tune_raw.get("steps"), tune_raw.get("max_concurrent"),
                             repo_path(tune_raw.get("space")))
        if tune_plan.trials < 1:
            raise ConfigError(f"{where}.tune.trials must be ≥ 1, got {tune_plan.trials}")
        families.append(FamilyPlan(item["model"], item["dataset"], repo_path(item.get("config")),
                                   item.get("steps"), tuple(item.get("set") or ()), tune_plan))
    if not families:
        raise ConfigError(f"{path}: families: is empty")
    evaluation, promotion = {**EVALUATION_DEFAULTS, **(raw.get("evaluation") or {})}, raw.get("promotion") or {}
    from genimg.config import config_from_dict
    from genimg.evaluation.config import EvalConfig

    config_from_dict(EvalConfig, evaluation, where=f"{path}: evaluation")  # a bad key fails here, named
    for switch in ("gpu", "tune"):
        if not isinstance(raw.get(switch, False), bool):
            raise ConfigError(f"{path}: {switch}: must be true or false, got {raw[switch]!r}")
    return RetrainConfig(datasets, tuple(families), int(raw.get("workers", 1)), raw.get("gpu", False),
                         raw.get("tune", False),
                         evaluation,
                         float(promotion.get("min_delta", 0.0)), ray_jobs_target(raw.get("ray_jobs"), path), str(path))


DATASET_KEYS = {"source", "resolution", "resize"}


def dataset_plan(entry: Any, where: str) -> DatasetPlan:
    """`name: SOURCE`, or `name: {source: SOURCE, resolution: N, resize: center-crop|pad|stretch}`."""
    from genimg.data.normalize import ResizePolicy

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
            ResizePolicy(plan.resolution, plan.resize)  # type: ignore[arg-type]
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
        raise ConfigError(f"Ray Jobs address {address!r} (GENIMG_RAY_JOBS or ray_jobs.address) must be the "
                          "dashboard's http(s):// URL, e.g. http://head:8265")
    runtime_env = raw.get("runtime_env") or {}
    if not isinstance(runtime_env, dict):
        raise ConfigError(f"{path}: ray_jobs.runtime_env must be a mapping, got {runtime_env!r}")
    return RayJobsTarget(str(address), str(raw.get("entrypoint", "genimg")), runtime_env,
                         tuple(raw.get("forward_env") or ()), float(raw.get("poll_seconds", 2.0)))


def source_fingerprint(source: str) -> str:
    """Changes when the source's content may have: builtin sources by genimg version, local
    files by path, size and modification time, s3:// by key, size and ETag; a moving-mnist:
    source by its query, genimg version and digits file."""
    from genimg import __version__
    from genimg.data.moving_mnist import MOVING_MNIST_PREFIX

    digest = hashlib.sha256(source.encode())
    if source.startswith(MOVING_MNIST_PREFIX):
        # Generated by genimg's code from a digits file: both can change what it holds (the
        # generator's settings are in the query, already in the digest).
        digest.update(__version__.encode())
        source = source.removeprefix(MOVING_MNIST_PREFIX).partition("?")[0]
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

    plan: DatasetPlan = parameters["plan"]
    store = hashlib.sha256(default_store_uri().encode()).hexdigest()[:8]
    policy = f"-{plan.resolution}-{plan.resize}" if plan.resolution else ""
    return f"ingest-{parameters['name']}-{store}{policy}-{source_fingerprint(plan.source)}"


@task(retries=2, retry_delay_seconds=RETRY_DELAYS, cache_key_fn=ingest_cache_key, persist_result=True)
def ingest(name: str, plan: DatasetPlan, kind: str | None) -> dict[str, Any]:
    from genimg.data.normalize import ResizePolicy
    from genimg.data.readers import read_source
    from genimg.data.versions import ingest_dataset

    policy = ResizePolicy(plan.resolution, plan.resize) if plan.resolution else None  # type: ignore[arg-type]
    result = ingest_dataset(read_source(plan.source, kind, resize=policy), name, resize=policy)  # type: ignore[arg-type]
    return {"name": result.name, "version": result.version, "counts": result.counts,
            "reused": result.reused, "rejected": len(result.rejected)}


def version_in_store(ingested: dict[str, Any]) -> bool:
    from genimg.data.versions import MANIFEST_FILE, version_prefix
    from genimg.store import open_store

    return open_store().exists(version_prefix(ingested["name"], ingested["version"]) + MANIFEST_FILE)


def family_sections(plan: FamilyPlan) -> dict[str, dict[str, Any]]:
    from genimg.config import parse_overrides
    from genimg.training.run import load_config_file, merge_sections

    return merge_sections(load_config_file(plan.config) if plan.config else {}, parse_overrides(list(plan.overrides)),
                          {"train": {"steps": plan.steps}} if plan.steps else {})


def as_set_options(sections: dict[str, dict[str, Any]]) -> list[str]:
    """The resolved settings as `--set` options, so a Ray Job needs no config file of ours."""
    options = []
    for section, values in sections.items():
        for key, value in values.items():
            if value is not None:
                options += ["--set", f"{section}.{key}={value if isinstance(value, str) else json.dumps(value)}"]
    return options


def log_job_line(line: str) -> None:
    from prefect import get_run_logger

    get_run_logger().info("%s", line)


# The run name is fixed per flow run and family: a retried task, or the flow run restarted on
# another Prefect worker, continues the same Ray run (and attaches to its Ray Job) instead of
# training again from scratch.
@task(retries=2, retry_delay_seconds=RETRY_DELAYS, cache_policy=NO_CACHE)
def train(plan: FamilyPlan, dataset_ref: str, workers: int, gpu: bool, run_name: str,
          ray_jobs: RayJobsTarget | None) -> dict[str, Any]:
    sections = family_sections(plan)
    if ray_jobs is not None:
        job = run_genimg_job(ray_jobs, ["train", "--model", plan.model, "--dataset", dataset_ref,
                                        "--workers", str(max(1, workers)), "--run-name", run_name,
                                        *(["--gpu"] if gpu else []), *as_set_options(sections)],
                             run_name, on_log=log_job_line)
        return {"run_id": job.payload["run_id"], "run_name": run_name, "checkpoint": job.payload["checkpoint"],
                "metrics": job.payload["metrics"], "ray_job": job.submission_id}
    if workers == 0:
        from genimg.tracking.local import train_in_process

        payload = train_in_process(plan.model, dataset_ref, sections, run_name, None, "auto", None, gpu,
                                   TrainingProgress(sections["train"].get("steps")).update)
        return {"run_id": payload["run_id"], "run_name": run_name, "checkpoint": payload["checkpoint"],
                "metrics": payload["metrics"], "ray_job": None}
    from genimg.distributed.trainer import train_distributed

    if gpu:
        sections["train"].setdefault("precision", "bf16")
    result = train_distributed(plan.model, dataset_ref, sections, workers=workers, use_gpu=gpu, run_name=run_name,
                               resume="auto", samples=True,
                               on_progress=TrainingProgress(sections["train"].get("steps")).update)
    return {"run_id": result.run_id, "run_name": run_name, "checkpoint": result.checkpoint, "metrics": result.metrics,
            "ray_job": None}


@task(retries=2, retry_delay_seconds=RETRY_DELAYS, cache_policy=NO_CACHE)
def tune(plan: FamilyPlan, dataset_ref: str, workers: int, gpu: bool, search_name: str,
         ray_jobs: RayJobsTarget | None) -> dict[str, Any]:
    """Search the family's hyperparameters; the best trial's run goes on to evaluation."""
    sections = family_sections(plan)
    steps = plan.tune.steps or plan.steps or int(sections["train"].get("steps", 500))
    sections["train"].pop("steps", None)
    if ray_jobs is not None:
        args = ["tune", "--model", plan.model, "--dataset", dataset_ref, "--trials", str(plan.tune.trials),
                "--steps", str(steps), "--workers-per-trial", str(max(1, workers)), "--name", search_name,
                *(["--max-concurrent", str(plan.tune.max_concurrent)] if plan.tune.max_concurrent else []),
                *(["--space", plan.tune.space] if plan.tune.space else []), *(["--gpu"] if gpu else []),
                *as_set_options(sections)]
        job = run_genimg_job(ray_jobs, args, search_name, on_log=log_job_line)
        result, ray_job = job.payload, job.submission_id
    else:
        from genimg.distributed.tune import load_space, tune_search

        result = tune_search(plan.model, dataset_ref, sections, space=load_space(plan.model, plan.tune.space),
                             trials=plan.tune.trials, steps=steps, search=search_name,
                             max_concurrent=plan.tune.max_concurrent, workers_per_trial=max(1, workers),
                             use_gpu=gpu, resume="auto").as_dict()
        ray_job = None
    if not result.get("best"):
        raise GenimgError(f"search {search_name}: every trial failed")
    best = result["best"]
    return {"run_id": best["run_id"], "run_name": search_name, "checkpoint": best["checkpoint"],
            "metrics": {best["metric"]: best["value"]}, "ray_job": ray_job, "search_run_id": result["parent_run_id"]}


@task(retries=2, retry_delay_seconds=RETRY_DELAYS, cache_policy=NO_CACHE)
def evaluate(run_id: str, dataset_ref: str, settings: dict[str, Any]) -> dict[str, Any]:
    from genimg.config import config_from_dict
    from genimg.evaluation.config import EvalConfig
    from genimg.tracking.evaluations import evaluate_target

    return evaluate_target(run_id, dataset_ref, config_from_dict(EvalConfig, settings), split="test")


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
    run_id: str | None = None  # the MLflow run of the trained model (the best trial's when tuned)
    run_name: str | None = None  # the Ray run (checkpoints under runs/<run_name>) or the search
    ray_job: str | None = None  # the Ray Job's submission id when trained through the Jobs API
    search_run_id: str | None = None  # the search's MLflow parent run when tuned
    metrics: dict[str, float] = field(default_factory=dict)
    promoted: bool | None = None
    reason: str | None = None
    error: str | None = None


def family_run_name(plan: FamilyPlan, flow_run_id: str | None, tuned: bool) -> str:
    suffix = flow_run_id.replace("-", "")[:12] if flow_run_id else f"{time.strftime('%Y%m%d-%H%M%S')}-{os.urandom(3).hex()}"
    return f"retrain-{'tune-' if tuned else ''}{plan.model}-{plan.dataset}-{suffix}"


def retrain_family(plan: FamilyPlan, dataset_ref: str, config: RetrainConfig, flow_run_id: str | None) -> FamilyOutcome:
    outcome = FamilyOutcome(plan.model, dataset_ref)
    try:
        run_name = family_run_name(plan, flow_run_id, config.tune)
        if config.tune:
            trained = tune(plan, dataset_ref, config.workers, config.gpu, run_name, config.ray_jobs)
            outcome.search_run_id = trained["search_run_id"]
        else:
            trained = train(plan, dataset_ref, config.workers, config.gpu, run_name, config.ray_jobs)
        outcome.run_id, outcome.run_name, outcome.ray_job = trained["run_id"], trained["run_name"], trained["ray_job"]
        evaluated = evaluate(trained["run_id"], dataset_ref, config.evaluation)
        outcome.metrics = {k: v for k, v in evaluated["metrics"].items() if "_frame_" not in k}
        registered = register(trained["run_id"], flow_run_id)
        outcome.name, outcome.version = registered["name"], registered["version"]
        decision = promote(registered["name"], registered["version"], config.min_delta)
        outcome.promoted, outcome.reason = decision["promoted"], decision["reason"]
    except Exception as exc:  # one family's failure is its outcome; the others go on
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        outcome.error = redact_credentials(f"{type(exc).__name__}: {first_line}")
    return outcome


def summary_markdown(datasets: list[dict[str, Any]], outcomes: list[FamilyOutcome]) -> str:
    """The flow run's artifact: from the flow run to each dataset version, run and model version."""
    lines = ["# Retrain", "", "| dataset | version | reused |", "|---|---|---|"]
    lines += [f"| {d['name']} | {d['version']} | {d['reused']} |" for d in datasets]
    lines += ["", "| model | dataset | MLflow run | Ray run | Ray job | model version | promoted | reason / error |",
              "|---|---|---|---|---|---|---|---|"]
    for o in outcomes:
        version = f"models:/{o.name}/{o.version}" if o.name else "—"
        lines.append(f"| {o.model} | {o.dataset} | {o.run_id or '—'} | {o.run_name or '—'} | {o.ray_job or '—'} | "
                     f"{version} | {o.promoted} | {(o.error or o.reason or '').replace('|', '/')} |")
    return "\n".join(lines)


@contextmanager
def genimg_lines_in_run_logs() -> Iterator[None]:
    """genimg's phase and progress lines (the `genimg` logger) also go to the flow run's logs
    in Prefect, for as long as the flow runs."""
    from prefect.logging.handlers import APILogHandler

    logger = logging.getLogger("genimg")
    handler, level, propagate = APILogHandler(), logger.level, logger.propagate
    # Where genimg already shows its lines (the CLI), Prefect's console handler on the root
    # logger would print each one a second time.
    logger.propagate = not logger.handlers
    logger.addHandler(handler)
    if not logger.isEnabledFor(logging.INFO):
        logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate


@flow(name="retrain", log_prints=True)
def retrain(config_path: str | None = None) -> dict[str, Any]:
    """Ingest each source, then train (or tune), evaluate, register and promote each family."""
    with genimg_lines_in_run_logs():
        return retrain_all(config_path)


def retrain_all(config_path: str | None) -> dict[str, Any]:
    from prefect.artifacts import create_markdown_artifact
    from prefect.runtime import flow_run

    from genimg.models import model_spec

    config = load_retrain_config(config_path)
    flow_run_id = str(flow_run.id) if flow_run.id else None
    kinds: dict[str, set[str]] = {}
    for plan in config.families:
        kinds.setdefault(plan.dataset, set()).add(model_spec(plan.model).data_kind)
    datasets: dict[str, dict[str, Any]] = {}
    failed: dict[str, str] = {}
    for name, plan in config.datasets.items():
        if name not in kinds:
            continue
        # One kind when every family on it agrees; else the reader decides (mismatched
        # families then fail on their own, not the dataset).
        kind = next(iter(kinds[name])) if len(kinds[name]) == 1 else None
        state = ingest(name, plan, kind, return_state=True)
        if state.name == "Cached" and not state.is_failed() and not version_in_store(state.result()):
            # The cache remembers an ingest into a store that has lost that version since (a
            # cleared GENIMG_HOME, a pruned bucket): ingest again.
            state = ingest.with_options(refresh_cache=True)(name, plan, kind, return_state=True)
        if state.is_failed():
            failed[name] = f"ingest of {plan.source} failed: {state.message}"
            continue
        result = dict(state.result())
        result["reused"] = result["reused"] or state.name == "Cached"
        datasets[name] = result
    from genimg.distributed.cluster import ray_session

    outcomes = []
    # Every MLflow run this flow starts (here, in Ray workers, in Ray Jobs) is tagged with it.
    previous = os.environ.get("GENIMG_FLOW_RUN_ID")
    if flow_run_id:
        os.environ["GENIMG_FLOW_RUN_ID"] = flow_run_id
    try:
        with ray_session() if config.workers > 0 and config.ray_jobs is None else nullcontext():
            for plan in config.families:
                if plan.dataset in failed:
                    outcomes.append(FamilyOutcome(plan.model, plan.dataset, error=failed[plan.dataset]))
                    continue
                ref = f"{plan.dataset}@{datasets[plan.dataset]['version']}"
                outcomes.append(retrain_family(plan, ref, config, flow_run_id))
    finally:
        if previous is None:
            os.environ.pop("GENIMG_FLOW_RUN_ID", None)
        else:
            os.environ["GENIMG_FLOW_RUN_ID"] = previous
    dataset_list = list(datasets.values())
    create_markdown_artifact(summary_markdown(dataset_list, outcomes), key="retrain-summary",
                             description="datasets, runs and model versions of this flow run")
    return {
        # `dataset` is the first (for a one-dataset config, the only) one; `datasets` lists all.
        "dataset": dataset_list[0] if dataset_list else None,
        "datasets": dataset_list,
        "models": [vars(outcome) for outcome in outcomes],
        "flow_run_id": flow_run_id,
    }


__all__ = ["load_retrain_config", "retrain", "source_fingerprint"]
