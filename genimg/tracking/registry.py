"""The MLflow model registry: register a trained run as a pyfunc generator with lineage tags,
and move `@champion` only when a challenger beats it on the same evaluation.

Registered model names: `genimg-<dataset>-<model>` (DESIGN.md §3). A version's tags carry its
lineage (dataset name@version and manifest hash, code version, config hash, training run, the
evaluation's metrics, sample count and feature extractor, the Prefect flow run when a flow
registered it), every promotion decision it took part in (`genimg.promotion.<decision id>`), the
reason it became champion (`genimg.promoted.*`) and, for a champion compared on another
evaluation than its own, that re-evaluation (`genimg.reevaluation.<evaluation id>`).

Promotions of one model are serialised by a lock object in the store, taken and renewed by
conditional writes (see PromotionLock), so two racing promotions compare one after the other
and the alias never lands on a version that lost the comparison it ran.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
import math
import os
import re
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict

import numpy as np

from genimg.data.handle import RAW_LINEAGE, resolve_dataset
from genimg.data.sources import is_store_ref, pinned_version
from genimg.errors import GenimgError
from genimg.evaluation.config import EvalConfig
from genimg.evaluation.evaluate import evaluate_model
from genimg.evaluation.reliability import SPREADS, below_floor
from genimg.feedback import phase
from genimg.locks import StoreLock
from genimg.models.base import MODEL_REGISTRY, GenerativeModel, model_spec, save_model
from genimg.names import check_run_name
from genimg.store import ObjectStore, open_store
from genimg.tracking import tags as tag_names
from genimg.tracking.descriptions import version_description, with_decision
from genimg.tracking.evaluations import expand_reliability, run_checkpoint
from genimg.tracking.models import WEIGHTS_TAG, load_model_at, load_registered_model
from genimg.tracking.runs import client, fluent_tracking, tracking_uri
from genimg.version import __version__

CHAMPION = "champion"
PYFUNC_FILE = Path(__file__).with_name("pyfunc_model.py")
PACKAGE_DIR = Path(__file__).resolve().parents[1]
EVAL_PREFIX = tag_names.EVAL_PREFIX
# Logged beside the signature: MLflow checks that the model loads and serves it (two samples).
INPUT_EXAMPLE = {"num_samples": 2, "seed": 0}


NOISE_SIGMAS = 2.0  # a challenger must win by more than this many spreads of the difference
# What promotion compares, in order of preference: the family's primary metric, then one that
# stays reliable on fewer images (KID for GANs, see genimg.evaluation.reliability).
FALLBACK_METRICS: dict[str, list[tuple[str, str]]] = {"gan": [("kid_mean", "min")]}


def primary_metric(model_name: str) -> tuple[str, str]:
    """(metric, mode) promotion compares for a model: its family's (FID for every GAN)."""
    spec = MODEL_REGISTRY.get(model_name)
    return spec.primary_metric if spec else ("fid", "min")


def candidate_metrics(model_name: str) -> list[tuple[str, str]]:
    spec = MODEL_REGISTRY.get(model_name)
    return [primary_metric(model_name), *FALLBACK_METRICS.get(spec.family if spec else "gan", [])]


def reliability_of(version: Any) -> dict[str, dict[str, Any]]:
    """The reliability verdicts of a version's evaluation ({} for one registered before they
    were recorded: those are taken as they are)."""
    return expand_reliability(version.tags.get(EVAL_PREFIX + "reliability"))


def comparable_metric(name: str, challenger: Any, metric: str | None, mode: str | None) -> tuple[str, str] | str:
    """The metric (and mode) to compare on: the one asked for, else the first candidate that is
    reliable at the evaluation's n; or, when none is, why promotion cannot decide."""
    verdicts = reliability_of(challenger)
    candidates = [(metric, mode or "min")] if metric else candidate_metrics(challenger.tags.get(tag_names.MODEL, ""))
    for candidate, candidate_mode in candidates:
        if verdicts.get(candidate, {}).get("reliable", True):
            return candidate, candidate_mode
    reasons = "; ".join(below_floor(candidate, verdicts[candidate]) for candidate, _ in candidates)
    return (
        f"refused: version {challenger.version} of {name} cannot be compared on an unreliable evaluation: "
        f"{reasons}. Evaluate on a larger split (more real records) and more samples, or --force"
    )


def dataset_slug(dataset: str) -> str:
    """'digits@291043e66cae' → 'digits'; 'builtin:moving-digits' → 'moving-digits'; a path → its name."""
    name = dataset.split("@")[0]
    name = name.split(":", 1)[1] if name.startswith("builtin:") else name
    name = name.rstrip("/").rsplit("/", 1)[-1]
    slug = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")
    return slug or "data"


def registered_name(dataset: str, model: str) -> str:
    return f"genimg-{dataset_slug(dataset)}-{model}"


def code_version() -> str:
    try:
        commit = subprocess.run(
            ["git", "-C", str(PACKAGE_DIR), "rev-parse", "--short=12", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
        )
        if commit.returncode == 0 and commit.stdout.strip():
            return f"{__version__}+g{commit.stdout.strip()}"
    except (OSError, subprocess.SubprocessError):
        pass
    return __version__


@contextmanager
def quiet_logger(name: str) -> Iterator[None]:
    """MLflow's INFO lines of one logger off for the block (log_model says, at INFO, that it
    validates the input example: genimg's own output says what was registered)."""
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        logger.setLevel(level)


def model_code(folder: Path) -> Path:
    """The parts of genimg a generator needs (models, config, errors), as a package folder."""
    package = folder / "genimg"
    (package / "models").mkdir(parents=True)
    for name in ("__init__.py", "config.py", "errors.py", "version.py"):
        shutil.copy2(PACKAGE_DIR / name, package / name)
    for source in (PACKAGE_DIR / "models").glob("*.py"):
        shutil.copy2(source, package / "models" / source.name)
    return package


def signature_for(model: GenerativeModel) -> Any:
    from mlflow.models import ModelSignature
    from mlflow.types.schema import ColSpec, Schema, TensorSpec

    columns: list[ColSpec | TensorSpec] = [ColSpec("long", "num_samples"), ColSpec("long", "seed", required=False)]
    shape = tuple(int(s) for s in model.config.image_shape)
    if model_spec(model.registry_name).data_kind == "sequences":
        columns += [ColSpec("long", "num_frames", required=False), ColSpec("binary", "context", required=False)]
        output = TensorSpec(np.dtype(np.uint8), (-1, -1, *shape))
    else:
        if model.num_classes:
            columns.append(ColSpec("string", "class_labels", required=False))
        output = TensorSpec(np.dtype(np.uint8), (-1, *shape))
    return ModelSignature(inputs=Schema(columns), outputs=Schema([output]))


def evaluation_tags(run: Any, split: str = "test") -> dict[str, str]:
    """`genimg.eval.*` version tags from a run's evaluation on `split` (its tags and metrics)."""
    prefix = f"genimg.eval.{split}."
    tags = {EVAL_PREFIX + key[len(prefix) :]: value for key, value in run.data.tags.items() if key.startswith(prefix)}
    tags |= {
        f"{EVAL_PREFIX}metric.{key[len(split) + 1 :]}": repr(float(value))
        for key, value in run.data.metrics.items()
        if key.startswith(f"{split}/")
    }
    return tags


def dataset_lineage(dataset: str) -> dict[str, str]:
    """name@version and the manifest's sha256 for a store dataset (a raw source has none)."""
    if not is_store_ref(dataset):
        return {tag_names.DATASET: dataset, tag_names.DATASET_MANIFEST_SHA256: RAW_LINEAGE}
    handle = resolve_dataset(dataset)
    return {tag_names.DATASET: handle.ref, tag_names.DATASET_MANIFEST_SHA256: handle.lineage()}


def config_hash(run: Any) -> str:
    params = {k: v for k, v in run.data.params.items() if k.split(".")[0] in ("model_name", "model", "train")}
    return hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:16]


def training_run(run_id: str) -> Any:
    """The MLflow run of a finished genimg training run (refused otherwise)."""
    from mlflow.exceptions import MlflowException

    try:
        run = client(f"reading MLflow run {run_id}").get_run(run_id)
    except MlflowException as exc:
        raise GenimgError(f"no MLflow run {run_id} at {tracking_uri()}") from exc
    if run.info.status != "FINISHED":
        raise GenimgError(
            f"run {run_id} is {run.info.status}, not FINISHED: only finished training runs are registered"
        )
    run_checkpoint(run)
    return run


def test_report(run: Any) -> str:
    """Where the run's test evaluation report is (runs:/ID/… as MLflow resolves it)."""
    dataset = run.data.tags.get(tag_names.eval_tag("test", "dataset"), "")
    version = pinned_version(dataset) or dataset
    return f"runs:/{run.info.run_id}/evaluation/test-{version}/report.html"


def has_test_evaluation(run: Any) -> bool:
    return any(key.startswith(tag_names.eval_tag("test", "")) for key in run.data.tags)


def register_run(run_id: str, name: str | None = None, *, flow_run_id: str | None = None) -> dict[str, Any]:
    """Register a finished training run's final model, evaluated on its test split (see
    `genimg.services.register`), as a new version of `name` (default genimg-<dataset>-<model>)."""
    import mlflow
    from mlflow.exceptions import MlflowException

    mlflow_client = client(f"registering run {run_id}")
    run = training_run(run_id)
    if not has_test_evaluation(run):
        raise GenimgError(f"run {run_id} has no test evaluation to register with (genimg evaluate {run_id} first)")
    checkpoint, dataset = run_checkpoint(run)
    model_name = run.data.tags.get(tag_names.MODEL, "")
    name = name or registered_name(dataset or "data", model_name)
    check_run_name(name, "model name")
    model = load_model_at(checkpoint)
    tags = {
        **dataset_lineage(run.data.tags.get("genimg.eval.test.dataset", dataset or "")),
        tag_names.MODEL: model.registry_name,
        tag_names.CODE_VERSION: code_version(),
        tag_names.CONFIG_SHA256: config_hash(run),
        tag_names.RUN_ID: run_id,
        tag_names.CHECKPOINT: checkpoint,
        **evaluation_tags(run),
    }
    flow_run_id = flow_run_id or os.environ.get("GENIMG_FLOW_RUN_ID")
    if flow_run_id:
        tags[tag_names.FLOW_RUN_ID] = flow_run_id
    with tempfile.TemporaryDirectory(prefix="genimg-register-") as scratch:
        weights = save_model(model, Path(scratch) / "weights")
        tags[WEIGHTS_TAG] = json.loads((weights / "model.json").read_text())["weights_sha256"]
        code = model_code(Path(scratch) / "code")
        with (
            phase(f"logging the {model.registry_name} generator to MLflow as a pyfunc model"),
            fluent_tracking(),
            quiet_logger("mlflow.pyfunc"),
            mlflow.start_run(run_id=run_id),
        ):
            info = mlflow.pyfunc.log_model(
                name="generator",
                python_model=str(PYFUNC_FILE),
                artifacts={"weights": str(weights)},
                code_paths=[str(code)],
                signature=signature_for(model),
                input_example=INPUT_EXAMPLE,
                pip_requirements=["torch>=2.4", "numpy>=1.24", "safetensors>=0.4"],
            )
    # Leaving mlflow.start_run ends the reopened run now: put back when it ended, or the training
    # run's MLflow duration would grow by however long it waited to be registered.
    mlflow_client.set_terminated(run_id, status=run.info.status, end_time=run.info.end_time)
    try:
        mlflow_client.create_registered_model(
            name, tags={tag_names.MODEL: model.registry_name}, description=f"genimg {model.registry_name} generators"
        )
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    with fluent_tracking():  # the registry resolves the logged model's URI through the fluent API
        version = mlflow_client.create_model_version(
            name,
            info.model_uri,
            run_id=run_id,
            tags=tags,
            model_id=info.model_id,
            description=version_description(name, tags, test_report(run)),
        )
    return {
        "name": name,
        "version": int(version.version),
        "model_uri": f"models:/{name}/{version.version}",
        "source": info.model_uri,
        "run_id": run_id,
        "tags": tags,
    }


# --- promotion -------------------------------------------------------------------------------

LOCK_TTL_SECONDS = 60.0  # a lock whose version stays the same this long is taken over
LOCK_WAIT_SECONDS = 600.0  # how long a promotion waits for another one of the same model
LOCK_POLL_SECONDS = 0.2
DECISION_PREFIX = tag_names.DECISION_PREFIX  # + decision id: one record (JSON) per decision
DECISION_ID = re.compile(r"\d{8}T\d{12}Z-[0-9a-f]{8}")
PROMOTED_PREFIX = tag_names.PROMOTED_PREFIX  # decision, reason, time: why the version became champion
REEVALUATION_PREFIX = tag_names.REEVALUATION_PREFIX  # + evaluation id: a champion scored another way


class PromotionLock(StoreLock):
    """One promotion's hold on the lock object `locks/promote-<model>.json` in the store (see
    StoreLock: taken by conditional writes, renewed from a thread, released by a conditional
    delete); `confirm` before acting."""

    def __init__(self, store: ObjectStore, key: str, model: str) -> None:
        super().__init__(
            store,
            key,
            model,
            ttl=LOCK_TTL_SECONDS,
            poll=LOCK_POLL_SECONDS,
            rival="another promotion",
            details={"model": model},
        )
        self.model = model

    def confirm(self) -> None:
        """Raise unless the lock is still ours and renewed within half the TTL: then no waiter
        can take it over for at least the other half, time enough to move an alias."""
        problem = self.problem()
        if problem is not None:
            raise GenimgError(f"{self.model}: lost the promotion lock {self.uri} ({problem}); nothing was promoted")


@contextmanager
def promotion_lock(name: str) -> Iterator[PromotionLock]:
    """Hold the promotion lock of model `name` for the block (see PromotionLock)."""

    store = open_store()
    lock = PromotionLock(store, f"locks/promote-{re.sub(r'[^A-Za-z0-9._-]', '_', name)}.json", name)
    if not lock.acquire(LOCK_WAIT_SECONDS):
        raise GenimgError(
            f"another promotion of {name} holds {lock.uri} (still renewed after {LOCK_WAIT_SECONDS:g} s of waiting)"
        )
    try:
        yield lock
    finally:
        lock.release()


class Comparison(TypedDict):
    """The fields of a Decision that compared two versions' metrics."""

    metric: str
    mode: str
    min_delta: float
    challenger_value: float
    champion_value: float
    champion_evaluation: str
    evaluation: dict[str, str]
    noise: float


@dataclass
class Decision:
    promoted: bool
    reason: str
    challenger: int
    champion: int | None
    metric: str | None = None
    mode: str | None = None
    min_delta: float = 0.0
    challenger_value: float | None = None
    champion_value: float | None = None
    champion_evaluation: str | None = None  # own | reevaluated | reused (see champion_metrics)
    evaluation: dict[str, str] | None = None  # what both were scored on, when compared
    forced: bool = False
    noise: float | None = None  # the margin the spreads ask for (see comparison_noise)

    @property
    def reevaluated(self) -> bool:
        """The champion's value comes from a re-evaluation (done now or reused)."""
        return self.champion_evaluation in ("reevaluated", "reused")

    @property
    def champion_after(self) -> int | None:
        return self.challenger if self.promoted else self.champion

    def as_dict(self, name: str, decision_id: str) -> dict[str, Any]:
        return {
            "model": name,
            "decision_id": decision_id,
            "promoted": self.promoted,
            "reason": self.reason,
            "challenger": self.challenger,
            "champion_before": self.champion,
            "champion": self.champion_after,
            "metric": self.metric,
            "challenger_value": self.challenger_value,
            "champion_value": self.champion_value,
            "champion_reevaluated": self.reevaluated,
            "champion_evaluation": self.champion_evaluation,
            "noise": self.noise,
        }

    def record(self, decision_id: str, stamp: str) -> str:
        """The decision as kept on both versions: compact JSON, one tag per decision."""
        evaluation = {"id": evaluation_id(self.evaluation), **self.evaluation} if self.evaluation else None
        return json.dumps(
            {
                "id": decision_id,
                "time": stamp,
                "decision": "promoted" if self.promoted else "kept",
                "reason": self.reason,
                "forced": self.forced,
                "challenger": self.challenger,
                "champion_before": self.champion,
                "champion": self.champion_after,
                "metric": self.metric,
                "mode": self.mode,
                "min_delta": self.min_delta,
                "challenger_value": self.challenger_value,
                "champion_value": self.champion_value,
                "champion_evaluation": self.champion_evaluation,
                "noise": self.noise,
                "evaluation": evaluation,
            },
            separators=(",", ":"),
        )


def new_decision_id(now: datetime.datetime) -> str:
    """Unique, and sorted by time: `20261126T170449123456Z-1a2b3c4d` (UTC)."""
    return f"{now.strftime('%Y%m%dT%H%M%S%fZ')}-{uuid.uuid4().hex[:8]}"


def decisions_of(version: Any) -> list[dict[str, Any]]:
    """Every promotion decision a version took part in, oldest first."""
    keys = sorted(
        key
        for key in version.tags
        if key.startswith(DECISION_PREFIX) and DECISION_ID.fullmatch(key[len(DECISION_PREFIX) :])
    )
    return [json.loads(version.tags[key]) for key in keys]


def record_decision(mlflow_client: Any, name: str, decision: Decision, decision_id: str, stamp: str) -> None:
    """`genimg.promotion.<id>` on both versions; on the version it promoted also
    `genimg.promoted.*`, the reason it became champion, which later decisions leave alone."""
    record = decision.record(decision_id, stamp)
    for number in sorted({n for n in (decision.challenger, decision.champion) if n is not None}):
        mlflow_client.set_model_version_tag(name, str(number), DECISION_PREFIX + decision_id, record)
    if decision.promoted:
        promoted = {"decision": decision_id, "reason": decision.reason, "time": stamp}
        for key, value in promoted.items():
            mlflow_client.set_model_version_tag(name, str(decision.challenger), PROMOTED_PREFIX + key, value)
    verdict = "Promoted to @champion" if decision.promoted else "Not promoted"
    challenger = mlflow_client.get_model_version(name, str(decision.challenger))
    mlflow_client.update_model_version(
        name,
        str(decision.challenger),
        description=with_decision(
            challenger.description or "", f"{verdict} ({stamp}, decision {decision_id}): {decision.reason}"
        ),
    )


def evaluation_of(version: Any) -> dict[str, str]:
    """What a version was scored on: dataset, extractor, sample count, seed, settings."""
    return {
        key: version.tags.get(EVAL_PREFIX + key, "")
        for key in ("dataset", "features_sha256", "num_samples", "seed", "settings")
    }


def evaluation_id(evaluation: dict[str, str]) -> str:
    """A short name for what a version was scored on (tag keys, decision records)."""
    return hashlib.sha256(json.dumps(evaluation, sort_keys=True).encode()).hexdigest()[:12]


def metrics_of(tags: dict[str, str]) -> dict[str, float]:
    prefix = f"{EVAL_PREFIX}metric."
    return {key[len(prefix) :]: float(value) for key, value in tags.items() if key.startswith(prefix)}


def champion_metrics(name: str, champion: Any, challenger: Any) -> tuple[dict[str, float], str]:
    """The champion's test metrics on the challenger's evaluation, and where they come from:
    `own` (it was scored that way itself), `reused` (a re-evaluation kept from an earlier
    comparison) or `reevaluated` (scored now). The champion's `genimg.eval.*` tags, the
    evaluation it won with, are never changed."""
    target = evaluation_of(challenger)
    if evaluation_of(champion) == target:
        return metrics_of(champion.tags), "own"
    kept = champion.tags.get(REEVALUATION_PREFIX + evaluation_id(target))
    if kept is not None:
        return {key: float(value) for key, value in json.loads(kept)["metrics"].items()}, "reused"
    return reevaluate(name, champion, challenger)["metrics"], "reevaluated"


def reevaluate(name: str, version: Any, like: Any) -> dict[str, Any]:
    """Score `version` as `like` was scored (same dataset version, extractor, samples, seed) and
    keep the result on it as `genimg.reevaluation.<evaluation id>` (JSON), so that the next
    comparison on that evaluation reuses it."""
    target = evaluation_of(like)
    if not target["dataset"]:
        raise GenimgError(f"{name} version {like.version} has no evaluation to compare on")
    settings = dict(item.split("=", 1) for item in target["settings"].split(",") if "=" in item)
    config = EvalConfig(
        samples=int(target["num_samples"]),
        seed=int(target["seed"]),
        nll_k=int(settings.get("nll_k", EvalConfig.nll_k)),
        best_of=int(settings.get("best_of", EvalConfig.best_of)),
    )
    model = load_registered_model(f"models:/{name}/{version.version}")
    # NAME@VERSION, or SOURCE@VERSION for a raw source (refused if its content has changed since).
    source = resolve_dataset(target["dataset"], model_spec(model.registry_name).data_kind)
    with phase(
        f"re-evaluating champion version {version.version} of {name} as the challenger was "
        f"evaluated ({target['num_samples']} samples on {target['dataset']}; kept for reuse)"
    ):
        evaluation = evaluate_model(model, source, "test", config)
    if evaluation.features["weights_sha256"] != target["features_sha256"]:
        raise GenimgError(
            f"cannot re-evaluate {name} version {version.version} with the challenger's feature extractor"
        )
    record = {
        "dataset": evaluation.dataset,
        "features": evaluation.features["name"],
        "features_sha256": evaluation.features["weights_sha256"],
        "num_samples": str(evaluation.num_samples),
        "seed": str(evaluation.seed),
        "settings": ",".join(f"{k}={v}" for k, v in sorted(evaluation.settings.items())),
        "metrics": {k: float(v) for k, v in evaluation.metrics.items()},
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    client().set_model_version_tag(
        name,
        str(version.version),
        REEVALUATION_PREFIX + evaluation_id(target),
        json.dumps(record, sort_keys=True, separators=(",", ":")),
    )
    return record


def promote(
    name: str,
    version: int | None = None,
    *,
    force: bool = False,
    min_delta: float = 0.0,
    metric: str | None = None,
    mode: str | None = None,
) -> dict[str, Any]:
    from mlflow.exceptions import MlflowException

    check_promotion_options(min_delta, metric, mode)
    mlflow_client = client(f"promoting {name}")
    try:
        versions = mlflow_client.search_model_versions(f"name = '{name}'")
    except MlflowException as exc:
        raise GenimgError(f"model {name}: {exc.message}") from exc
    if not versions:
        raise GenimgError(f"no registered model {name} at {tracking_uri()} (genimg register RUN_ID first)")
    by_number = {int(v.version): v for v in versions}
    number = version if version is not None else max(by_number)
    if number not in by_number:
        raise GenimgError(f"model {name} has no version {number} (versions: {', '.join(map(str, sorted(by_number)))})")
    with promotion_lock(name) as lock:
        challenger = mlflow_client.get_model_version(name, str(number))
        try:
            champion = mlflow_client.get_model_version_by_alias(name, CHAMPION)
        except MlflowException:
            champion = None
        decision = decide(name, challenger, champion, force=force, min_delta=min_delta, metric=metric, mode=mode)
        now = datetime.datetime.now(datetime.UTC)
        decision_id = new_decision_id(now)
        # The alias moves right after the lock is confirmed ours, so no other promotion has moved
        # it since the champion was read; the records follow, so none claims what did not happen.
        lock.confirm()
        if decision.promoted:
            mlflow_client.set_registered_model_alias(name, CHAMPION, str(decision.challenger))
        record_decision(mlflow_client, name, decision, decision_id, now.strftime("%Y-%m-%dT%H:%M:%SZ"))
    return decision.as_dict(name, decision_id)


def check_promotion_options(min_delta: Any, metric: Any, mode: Any) -> None:
    """What every caller (CLI, flow, Python API) may ask of a promotion, checked before it reads
    anything: a worse version must never win through a bad option."""
    if mode is not None and mode not in ("min", "max"):
        raise GenimgError(f"mode must be min or max, got {mode!r}")
    if (
        isinstance(min_delta, bool)
        or not isinstance(min_delta, (int, float))
        or not math.isfinite(min_delta)
        or min_delta < 0
    ):
        raise GenimgError(f"min_delta must be a finite number ≥ 0, got {min_delta!r}")
    if metric is not None and (not isinstance(metric, str) or not metric):
        raise GenimgError(f"metric must be a metric name such as fid, got {metric!r}")


def decide(
    name: str, challenger: Any, champion: Any, *, force: bool, min_delta: float, metric: str | None, mode: str | None
) -> Decision:
    number = int(challenger.version)
    if champion is None:
        unreliable = [metric for metric, verdict in reliability_of(challenger).items() if not verdict["reliable"]]
        caveat = f" (nothing compared; its {', '.join(unreliable)} are unreliable at this n)" if unreliable else ""
        return Decision(True, f"first champion of {name}: version {number}{caveat}", number, None, min_delta=min_delta)
    if int(champion.version) == number:
        return Decision(False, f"version {number} is already the champion", number, number, min_delta=min_delta)
    if force:
        metric, mode = (metric, mode or "min") if metric else primary_metric(challenger.tags.get(tag_names.MODEL, ""))
        return Decision(
            True,
            f"forced: version {number} replaces version {champion.version} without comparison (--force)",
            number,
            int(champion.version),
            metric,
            mode,
            min_delta,
            forced=True,
        )
    chosen = comparable_metric(name, challenger, metric, mode)
    if isinstance(chosen, str):
        return Decision(
            False, chosen, number, int(champion.version), metric, mode, min_delta, evaluation=evaluation_of(challenger)
        )
    metric, mode = chosen
    champion_scores, source = champion_metrics(name, champion, challenger)
    key = f"{EVAL_PREFIX}metric.{metric}"
    if key not in challenger.tags or metric not in champion_scores:
        raise GenimgError(
            f"{name}: {metric} missing from the evaluation of version "
            f"{number if key not in challenger.tags else champion.version}"
        )
    new, old = float(challenger.tags[key]), champion_scores[metric]
    gain = old - new if mode == "min" else new - old
    noise = comparison_noise(metric, metrics_of(challenger.tags), champion_scores)
    needed = max(min_delta, noise)
    where = (
        f"on {challenger.tags.get(EVAL_PREFIX + 'dataset')} test split, "
        f"{challenger.tags.get(EVAL_PREFIX + 'num_samples')} samples, "
        f"{challenger.tags.get(EVAL_PREFIX + 'features')} features"
        + {"own": "", "reevaluated": ", champion re-evaluated", "reused": ", champion's earlier re-evaluation reused"}[
            source
        ]
    )
    compared: Comparison = {
        "metric": metric,
        "mode": mode,
        "min_delta": min_delta,
        "challenger_value": new,
        "champion_value": old,
        "champion_evaluation": source,
        "evaluation": evaluation_of(challenger),
        "noise": noise,
    }
    margin = (
        f"min_delta {min_delta:g}"
        if needed == min_delta
        else f"the noise {noise:.4g} ({NOISE_SIGMAS:g} spreads of the difference)"
    )
    if gain > needed:
        reason = (
            f"version {number} {metric}={new:.5g} beats champion version {champion.version} "
            f"{metric}={old:.5g} ({'lower' if mode == 'min' else 'higher'} is better, by {gain:.4g} > "
            f"{margin}) {where}"
        )
        return Decision(True, reason, number, int(champion.version), **compared)
    reason = (
        f"version {number} {metric}={new:.5g} does not beat champion version {champion.version} "
        f"{metric}={old:.5g} by more than {margin} "
        f"({'lower' if mode == 'min' else 'higher'} is better) {where}"
    )
    return Decision(False, reason, number, int(champion.version), **compared)


def comparison_noise(metric: str, challenger: dict[str, float], champion: dict[str, float]) -> float:
    """NOISE_SIGMAS × the spread of the difference of two independent evaluations, from each
    one's spread of `metric` (0 where a metric has no recorded spread)."""
    spread = SPREADS.get(metric)
    if spread is None:
        return 0.0
    # Annotated: to typeshed a float ** float is Any (a negative base gives a complex); this base is ≥ 0.
    difference_spread: float = (challenger.get(spread, 0.0) ** 2 + champion.get(spread, 0.0) ** 2) ** 0.5
    return NOISE_SIGMAS * difference_spread


__all__ = ["decisions_of", "load_registered_model", "promote", "register_run", "registered_name"]
