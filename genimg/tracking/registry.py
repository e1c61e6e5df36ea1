"""The MLflow model registry: register a trained run as a pyfunc generator with lineage tags,
and move `@champion` only when a challenger beats it on the same evaluation.

Registered model names: `genimg-<dataset>-<model>` (DESIGN.md §3). A version's tags carry its
lineage (dataset name@version and manifest hash, code version, config hash, training run, the
evaluation's metrics, sample count and feature extractor, the Prefect flow run when a flow
registered it) and, after `promote`, the decision and its reason.

Promotions of one model are serialised by a lock object in the store (created only if absent,
an atomic operation on both file:// and s3://), so two racing promotions compare one after the
other and the alias never lands on a version that lost the comparison it ran.
"""

from __future__ import annotations

import hashlib
import json
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
from typing import Any

from genimg import __version__
from genimg.errors import GenimgError
from genimg.models.base import GenerativeModel, load_model
from genimg.names import check_run_name
from genimg.tracking.runs import client, tracking_uri

CHAMPION = "champion"
PYFUNC_FILE = Path(__file__).with_name("pyfunc_model.py")
PACKAGE_DIR = Path(__file__).resolve().parents[1]
EVAL_PREFIX = "genimg.eval."
LOCK_STALE_SECONDS = 600.0
# Primary metric per family: (metric, mode). Promotion compares this on the test split.
PRIMARY_METRIC = {"gan": ("fid", "min"), "vae": ("nll", "min"), "rvae": ("ssim", "max")}


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
        commit = subprocess.run(["git", "-C", str(PACKAGE_DIR), "rev-parse", "--short=12", "HEAD"],
                                capture_output=True, text=True, timeout=5)
        if commit.returncode == 0 and commit.stdout.strip():
            return f"{__version__}+g{commit.stdout.strip()}"
    except (OSError, subprocess.SubprocessError):
        pass
    return __version__


@contextmanager
def fluent_tracking() -> Iterator[None]:
    """MLflow's fluent API (log_model needs it) pointed at genimg's tracking URI for the block
    only: mlflow.set_tracking_uri also exports MLFLOW_TRACKING_URI, which is put back."""
    import mlflow

    saved_env = os.environ.get("MLFLOW_TRACKING_URI")
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(tracking_uri())
    try:
        yield
    finally:
        mlflow.set_tracking_uri(previous)
        if saved_env is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = saved_env


def model_code(folder: Path) -> Path:
    """The parts of genimg a generator needs (models, config, errors), as a package folder."""
    package = folder / "genimg"
    (package / "models").mkdir(parents=True)
    for name in ("__init__.py", "config.py", "errors.py"):
        shutil.copy2(PACKAGE_DIR / name, package / name)
    for source in (PACKAGE_DIR / "models").glob("*.py"):
        shutil.copy2(source, package / "models" / source.name)
    return package


def signature_for(model: GenerativeModel) -> Any:
    import numpy as np
    from mlflow.models import ModelSignature
    from mlflow.types.schema import ColSpec, Schema, TensorSpec

    from genimg.models.base import model_spec

    columns = [ColSpec("long", "num_samples"), ColSpec("long", "seed", required=False)]
    shape = tuple(int(s) for s in model.config.image_shape)  # type: ignore[attr-defined]
    if model_spec(model.registry_name).data_kind == "sequences":
        columns += [ColSpec("long", "num_frames", required=False), ColSpec("binary", "context", required=False)]
        output = TensorSpec(np.dtype(np.uint8), (-1, -1, *shape))
    else:
        output = TensorSpec(np.dtype(np.uint8), (-1, *shape))
    return ModelSignature(inputs=Schema(columns), outputs=Schema([output]))


def evaluation_tags(run: Any, split: str = "test") -> dict[str, str]:
    """`genimg.eval.*` version tags from a run's evaluation on `split` (its tags and metrics)."""
    prefix = f"genimg.eval.{split}."
    tags = {EVAL_PREFIX + key[len(prefix):]: value for key, value in run.data.tags.items() if key.startswith(prefix)}
    tags |= {f"{EVAL_PREFIX}metric.{key[len(split) + 1:]}": repr(float(value))
             for key, value in run.data.metrics.items() if key.startswith(f"{split}/")}
    return tags


def dataset_lineage(dataset: str) -> dict[str, str]:
    """name@version and the manifest's sha256 for a store dataset (a raw source has none)."""
    from genimg.data.sources import is_store_ref
    from genimg.data.versions import MANIFEST_FILE, resolve_version, version_prefix
    from genimg.store import sha256_hex

    if not is_store_ref(dataset):
        return {"genimg.dataset": dataset, "genimg.dataset.manifest_sha256": "none (raw source)"}
    version = resolve_version(dataset)
    manifest = version.store.get_bytes(version_prefix(version.name, version.version) + MANIFEST_FILE)
    return {"genimg.dataset": version.ref, "genimg.dataset.manifest_sha256": sha256_hex(manifest)}


def config_hash(run: Any) -> str:
    params = {k: v for k, v in run.data.params.items() if k.split(".")[0] in ("model_name", "model", "train")}
    return hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:16]


def register_run(run_id: str, name: str | None = None, *, flow_run_id: str | None = None) -> dict[str, Any]:
    """Register a finished training run's final model as a new version (evaluating it on its
    dataset's test split first if it has no test evaluation)."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from genimg.evaluation.config import EvalConfig
    from genimg.tracking.evaluations import evaluate_target, load_model_at, run_checkpoint

    mlflow_client = client()
    try:
        run = mlflow_client.get_run(run_id)
    except MlflowException as exc:
        raise GenimgError(f"no MLflow run {run_id} at {tracking_uri()}") from exc
    if run.info.status != "FINISHED":
        raise GenimgError(f"run {run_id} is {run.info.status}, not FINISHED: only finished training runs are registered")
    checkpoint, dataset = run_checkpoint(run)
    model_name = run.data.tags.get("genimg.model", "")
    name = name or registered_name(dataset or "data", model_name)
    check_run_name(name, "model name")
    if not any(key.startswith("genimg.eval.test.") for key in run.data.tags):
        evaluate_target(run_id, None, EvalConfig(), split="test")
        run = mlflow_client.get_run(run_id)
    model = load_model_at(checkpoint)
    tags = {
        **dataset_lineage(run.data.tags.get("genimg.eval.test.dataset", dataset or "")),
        "genimg.model": model.registry_name, "genimg.code_version": code_version(),
        "genimg.config_sha256": config_hash(run), "genimg.run_id": run_id, "genimg.checkpoint": checkpoint,
        **evaluation_tags(run),
    }
    flow_run_id = flow_run_id or os.environ.get("GENIMG_FLOW_RUN_ID")
    if flow_run_id:
        tags["genimg.flow_run_id"] = flow_run_id
    with tempfile.TemporaryDirectory(prefix="genimg-register-") as scratch:
        from genimg.models.base import save_model

        weights = save_model(model, Path(scratch) / "weights")
        code = model_code(Path(scratch) / "code")
        with fluent_tracking(), mlflow.start_run(run_id=run_id):
            info = mlflow.pyfunc.log_model(
                name="generator", python_model=str(PYFUNC_FILE), artifacts={"weights": str(weights)},
                code_paths=[str(code)], signature=signature_for(model),
                pip_requirements=["torch>=2.4", "numpy>=1.24", "safetensors>=0.4"],
            )
    try:
        mlflow_client.create_registered_model(name, tags={"genimg.model": model.registry_name},
                                              description=f"genimg {model.registry_name} generators")
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    with fluent_tracking():  # the registry resolves the logged model's URI through the fluent API
        version = mlflow_client.create_model_version(name, info.model_uri, run_id=run_id, tags=tags,
                                                     model_id=info.model_id)
    return {"name": name, "version": int(version.version), "model_uri": f"models:/{name}/{version.version}",
            "source": info.model_uri, "run_id": run_id, "tags": tags}


def load_registered_model(uri: str) -> GenerativeModel:
    """The generator of `models:/NAME/VERSION` or `models:/NAME@ALIAS` (its safetensors + JSON)."""
    import mlflow.artifacts
    from mlflow.exceptions import MlflowException

    with tempfile.TemporaryDirectory(prefix="genimg-model-") as scratch:
        try:
            with fluent_tracking():
                local = mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=scratch)
        except MlflowException as exc:
            raise GenimgError(f"{uri}: not found in the registry at {tracking_uri()} ({exc.message})") from exc
        weights = Path(local) / "artifacts" / "weights"
        if not weights.is_dir():
            raise GenimgError(f"{uri} is not a genimg generator (no artifacts/weights)")
        return load_model(weights)


# --- promotion -------------------------------------------------------------------------------


@dataclass
class Decision:
    promoted: bool
    reason: str
    challenger: int
    champion: int | None
    metric: str | None = None
    challenger_value: float | None = None
    champion_value: float | None = None
    reevaluated: bool = False

    def as_dict(self, name: str) -> dict[str, Any]:
        return {"model": name, "promoted": self.promoted, "reason": self.reason, "challenger": self.challenger,
                "champion_before": self.champion, "champion": self.challenger if self.promoted else self.champion,
                "metric": self.metric, "challenger_value": self.challenger_value,
                "champion_value": self.champion_value, "champion_reevaluated": self.reevaluated}


@contextmanager
def promotion_lock(name: str) -> Iterator[None]:
    from genimg.store import open_store

    store = open_store()
    key = f"locks/promote-{re.sub(r'[^A-Za-z0-9._-]', '_', name)}.json"
    token = uuid.uuid4().hex
    deadline = time.monotonic() + LOCK_STALE_SECONDS + 60
    while not store.publish(key, json.dumps({"token": token, "since": time.time()}).encode()):
        try:
            held = json.loads(store.get_bytes(key))
        except GenimgError:
            continue  # released between the two calls
        if time.time() - float(held.get("since", 0)) > LOCK_STALE_SECONDS:
            store.delete(key)  # its holder died; promotions are short
            continue
        if time.monotonic() > deadline:
            raise GenimgError(f"another promotion of {name} holds {store.uri_for(key)}")
        time.sleep(0.2)
    try:
        yield
    finally:
        try:
            if json.loads(store.get_bytes(key)).get("token") == token:
                store.delete(key)
        except GenimgError:
            pass


def evaluation_of(version: Any) -> dict[str, str]:
    """What a version was scored on: dataset, extractor, sample count, seed, settings."""
    return {key: version.tags.get(EVAL_PREFIX + key, "") for key in
            ("dataset", "features_sha256", "num_samples", "seed", "settings")}


def reevaluate(name: str, version: Any, like: Any) -> Any:
    """Score `version` as `like` was scored (same dataset version, extractor, samples, seed)."""
    from genimg.data.sources import is_store_ref, open_splits
    from genimg.evaluation.config import EvalConfig
    from genimg.evaluation.evaluate import evaluate_model
    from genimg.models.base import model_spec

    mlflow_client = client()
    target = evaluation_of(like)
    if not target["dataset"]:
        raise GenimgError(f"{name} version {like.version} has no evaluation to compare on")
    settings = dict(item.split("=", 1) for item in target["settings"].split(",") if "=" in item)
    config = EvalConfig(samples=int(target["num_samples"]), seed=int(target["seed"]),
                        nll_k=int(settings.get("nll_k", EvalConfig.nll_k)),
                        best_of=int(settings.get("best_of", EvalConfig.best_of)))
    model = load_registered_model(f"models:/{name}/{version.version}")
    dataset = target["dataset"]
    if not is_store_ref(dataset):  # a raw source evaluated as SOURCE@VERSION
        dataset = dataset.rsplit("@", 1)[0]
    source = open_splits(dataset, kind=model_spec(model.registry_name).data_kind)
    evaluation = evaluate_model(model, source, "test", config)
    if evaluation.features["weights_sha256"] != target["features_sha256"]:
        raise GenimgError(f"cannot re-evaluate {name} version {version.version} with the challenger's feature extractor")
    tags = {EVAL_PREFIX + "dataset": evaluation.dataset, EVAL_PREFIX + "features": evaluation.features["name"],
            EVAL_PREFIX + "features_sha256": evaluation.features["weights_sha256"],
            EVAL_PREFIX + "num_samples": str(evaluation.num_samples), EVAL_PREFIX + "seed": str(evaluation.seed),
            EVAL_PREFIX + "settings": ",".join(f"{k}={v}" for k, v in sorted(evaluation.settings.items())),
            EVAL_PREFIX + "reevaluated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    tags |= {f"{EVAL_PREFIX}metric.{k}": repr(float(v)) for k, v in evaluation.metrics.items()}
    for key, value in tags.items():
        mlflow_client.set_model_version_tag(name, version.version, key, value)
    return mlflow_client.get_model_version(name, version.version)


def promote(name: str, version: int | None = None, *, force: bool = False, min_delta: float = 0.0,
            metric: str | None = None, mode: str | None = None) -> dict[str, Any]:
    from mlflow.exceptions import MlflowException

    mlflow_client = client()
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
    with promotion_lock(name):
        challenger = mlflow_client.get_model_version(name, str(number))
        try:
            champion = mlflow_client.get_model_version_by_alias(name, CHAMPION)
        except MlflowException:
            champion = None
        decision = decide(name, challenger, champion, force=force, min_delta=min_delta, metric=metric, mode=mode)
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        record = {"genimg.promotion.decision": "promoted" if decision.promoted else "kept",
                  "genimg.promotion.reason": decision.reason, "genimg.promotion.time": stamp,
                  "genimg.promotion.challenger": str(decision.challenger),
                  "genimg.promotion.champion": str(decision.champion or "")}
        for key, value in record.items():
            mlflow_client.set_model_version_tag(name, str(decision.challenger), key, value)
            if decision.champion is not None and decision.champion != decision.challenger:
                mlflow_client.set_model_version_tag(name, str(decision.champion), key, value)
        if decision.promoted:
            mlflow_client.set_registered_model_alias(name, CHAMPION, str(decision.challenger))
    return decision.as_dict(name)


def decide(name: str, challenger: Any, champion: Any, *, force: bool, min_delta: float,
           metric: str | None, mode: str | None) -> Decision:
    number = int(challenger.version)
    if champion is None:
        return Decision(True, f"first champion of {name}: version {number}", number, None)
    if int(champion.version) == number:
        return Decision(False, f"version {number} is already the champion", number, number)
    family = {"gan-mlp": "gan"}.get(challenger.tags.get("genimg.model", ""), challenger.tags.get("genimg.model", ""))
    metric, mode = (metric, mode or "min") if metric else PRIMARY_METRIC.get(family, ("fid", "min"))
    if force:
        return Decision(True, f"forced: version {number} replaces version {champion.version} without comparison "
                        f"(--force)", number, int(champion.version), metric)
    reevaluated = False
    if evaluation_of(champion) != evaluation_of(challenger):
        champion = reevaluate(name, champion, challenger)
        reevaluated = True
    key = f"{EVAL_PREFIX}metric.{metric}"
    if key not in challenger.tags or key not in champion.tags:
        raise GenimgError(f"{name}: {metric} missing from the evaluation of version "
                          f"{number if key not in challenger.tags else champion.version}")
    new, old = float(challenger.tags[key]), float(champion.tags[key])
    gain = old - new if mode == "min" else new - old
    where = (f"on {challenger.tags.get(EVAL_PREFIX + 'dataset')} test split, "
             f"{challenger.tags.get(EVAL_PREFIX + 'num_samples')} samples, "
             f"{challenger.tags.get(EVAL_PREFIX + 'features')} features"
             + (", champion re-evaluated" if reevaluated else ""))
    if gain > min_delta:
        reason = (f"version {number} {metric}={new:.5g} beats champion version {champion.version} "
                  f"{metric}={old:.5g} ({'lower' if mode == 'min' else 'higher'} is better, by {gain:.4g} > "
                  f"min_delta {min_delta:g}) {where}")
        return Decision(True, reason, number, int(champion.version), metric, new, old, reevaluated)
    reason = (f"version {number} {metric}={new:.5g} does not beat champion version {champion.version} "
              f"{metric}={old:.5g} by more than min_delta {min_delta:g} "
              f"({'lower' if mode == 'min' else 'higher'} is better) {where}")
    return Decision(False, reason, number, int(champion.version), metric, new, old, reevaluated)


__all__ = ["load_registered_model", "promote", "register_run", "registered_name"]
