"""Evaluations in MLflow: what a target names, and how a finished evaluation is recorded.

A target is an MLflow run id (its final checkpoint is evaluated and the results are logged to
that run), a registry URI `models:/NAME/VERSION` or `models:/NAME@ALIAS` (the version's own
weights), or a model folder (both logged to a new evaluation run). Metrics are logged as `<split>/<name>`; the report files
go to the artifacts under `evaluation/<split>-<dataset version>/`; tags record what the numbers
were measured on, so later comparisons can check they measured the same thing.
"""

from __future__ import annotations

import hashlib
import json
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from genimg.data.sources import pinned_version
from genimg.errors import GenimgError
from genimg.evaluation.evaluate import Evaluation
from genimg.evaluation.reliability import below_floor
from genimg.evaluation.report import LossHistory, write_report
from genimg.tracking import tags as tag_names
from genimg.tracking.models import MODEL_URI_PATTERN, model_version_at
from genimg.tracking.runs import TrainingRun, client, experiment_id, tracking_uri

RUN_ID_PATTERN = re.compile(r"[0-9a-f]{32}")


@dataclass
class EvalTarget:
    label: str  # as given
    checkpoint: str  # model folder, file:// or s3:// URI of one
    log_run_id: str | None  # the run to log to; None: a new evaluation run
    training_run_id: str | None  # for the loss curves
    dataset: str | None  # what the model was trained on (default for --dataset)
    model_version: str | None = None  # NAME/VERSION for registry targets


def run_checkpoint(run: Any) -> tuple[str, str | None]:
    checkpoint = run.data.tags.get(tag_names.CHECKPOINT)
    if not checkpoint:
        raise GenimgError(
            f"MLflow run {run.info.run_id} has no genimg.checkpoint tag (not a finished genimg training run)"
        )
    return checkpoint, run.data.tags.get(tag_names.DATASET)


def resolve_target(target: str) -> EvalTarget:
    from mlflow.exceptions import MlflowException

    mlflow = client(f"looking up {target}")
    registry = MODEL_URI_PATTERN.fullmatch(target)
    if registry:
        name = registry["name"]
        try:
            version = model_version_at(registry)
        except MlflowException as exc:
            raise GenimgError(f"{target}: not found in the registry at {tracking_uri()} ({exc.message})") from exc
        # Pinned (NAME@VERSION, or SOURCE@VERSION for a raw source whose content must not have changed).
        dataset = version.tags.get(tag_names.DATASET)
        return EvalTarget(
            target,
            f"models:/{name}/{version.version}",
            None,
            version.run_id or None,
            dataset,
            f"{name}/{version.version}",
        )
    if target.startswith("models:/"):
        raise GenimgError(f"invalid model URI {target!r}: expected models:/NAME/VERSION or models:/NAME@ALIAS")
    if Path(target).expanduser().is_dir():
        return EvalTarget(target, str(Path(target).expanduser()), None, None, None)
    run_id = target.removeprefix("runs:/").rstrip("/")  # runs:/ID, as MLflow writes a run's URI
    if target.startswith("runs:/") and not RUN_ID_PATTERN.fullmatch(run_id):
        raise GenimgError(f"invalid run URI {target!r}: expected runs:/RUN_ID (32 hexadecimal digits)")
    if RUN_ID_PATTERN.fullmatch(run_id):
        try:
            run = mlflow.get_run(run_id)
        except MlflowException as exc:
            raise GenimgError(f"no MLflow run {run_id} at {tracking_uri()}") from exc
        checkpoint, dataset = run_checkpoint(run)
        return EvalTarget(target, checkpoint, run_id, run_id, dataset)
    raise GenimgError(f"{target!r} is not an MLflow run id, a models:/ URI or a model folder")


def loss_history(run_id: str) -> LossHistory:
    """The training metrics of a run (not evaluation or final_ summaries), step by step."""
    mlflow = client()
    names = [name for name in mlflow.get_run(run_id).data.metrics if "/" not in name and not name.startswith("final_")]
    return {
        name: sorted((int(m.step), float(m.value)) for m in mlflow.get_metric_history(run_id, name)) for name in names
    }


def record_evaluation(
    evaluation: Evaluation,
    *,
    log_run_id: str | None,
    training_run_id: str | None,
    title: str,
    out_dir: Path | None = None,
    tags: dict[str, str] | None = None,
    key: str | None = None,
) -> dict[str, Any]:
    """Write the report, log metrics, tags and report files; returns the JSON payload. `key`:
    what the evaluation measured (`evaluation_key`), recorded so it is not computed twice."""
    run = (
        TrainingRun.existing(log_run_id)
        if log_run_id
        else TrainingRun(
            f"evaluate-{evaluation.model}-{time.strftime('%Y%m%d-%H%M%S')}",
            tags={
                tag_names.MODEL: evaluation.model,
                tag_names.DATASET: evaluation.dataset,
                tag_names.KIND: "evaluation",
                **(tags or {}),
            },
        )
    )
    history = loss_history(training_run_id) if training_run_id else None
    split, version = evaluation.split, pinned_version(evaluation.dataset) or evaluation.dataset
    artifact_path = f"evaluation/{split}-{version}"
    with tempfile.TemporaryDirectory(prefix="genimg-report-") as scratch:
        folder = out_dir or Path(scratch)
        files = write_report(evaluation, folder, title=title, history=history)
        run.add_metrics(
            0, {f"{split}/{name}": value for name, value in evaluation.metrics.items()}, int(time.time() * 1000)
        )
        run.flush()
        run.set_tags(
            {
                tag_names.eval_tag(split, "dataset"): evaluation.dataset,
                tag_names.eval_tag(split, "features"): evaluation.features["name"],
                tag_names.eval_tag(split, "features_sha256"): evaluation.features["weights_sha256"],
                tag_names.eval_tag(split, "num_samples"): str(evaluation.num_samples),
                tag_names.eval_tag(split, "seed"): str(evaluation.seed),
                tag_names.eval_tag(split, "settings"): ",".join(
                    f"{k}={v}" for k, v in sorted(evaluation.settings.items())
                ),
                tag_names.eval_tag(split, "num_real"): str(evaluation.num_real),
                tag_names.eval_tag(split, "reliability"): compact_reliability(evaluation.reliability),
                **({tag_names.eval_tag(split, "key"): key} if key else {}),
            }
        )
        run.log_folder(folder, artifact_path)
        if not log_run_id:
            run.finish()
    artifacts = run.client.get_run(run.run_id).info.artifact_uri.rstrip("/") + "/" + artifact_path
    return evaluation.as_dict() | {
        "run_id": run.run_id,
        "artifacts": artifacts,
        "reused": False,
        "key": key,
        "report": str(out_dir / files[0].name) if out_dir else f"{artifacts}/{files[0].name}",
    }


def evaluation_key(weights: str, dataset: str, split: str, settings: dict[str, Any]) -> str:
    """What makes two evaluations the same: the weights (their digest: a run's final model and
    its registered version are one), the dataset version, the split and every setting that
    changes a number."""
    payload = {"weights": weights, "dataset": dataset, "split": split, "settings": settings}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def compact_reliability(verdicts: dict[str, dict[str, Any]]) -> str:
    """The reliability verdicts as a tag value: {metric: [reliable 0/1, n_real, n_generated,
    floor, spread]} (a tag holds at most a few thousand characters)."""
    return json.dumps(
        {
            name: [int(v["reliable"]), v["n_real"], v["n_generated"], v["floor"], v["spread"]]
            for name, v in verdicts.items()
        },
        separators=(",", ":"),
    )


def expand_reliability(value: str | None) -> dict[str, dict[str, Any]]:
    if not value:
        return {}
    verdicts = {
        name: {
            "reliable": bool(entry[0]),
            "n_real": entry[1],
            "n_generated": entry[2],
            "floor": entry[3],
            "spread": entry[4],
        }
        for name, entry in json.loads(value).items()
    }
    for name, verdict in verdicts.items():
        if not verdict["reliable"]:
            verdict["reason"] = below_floor(name, verdict)
    return verdicts


def recorded_evaluation(key: str, split: str, run_id: str | None = None) -> dict[str, Any] | None:
    """The payload of an evaluation recorded with `key` (on `run_id`, or any run of the
    experiment), as `record_evaluation` returned it, with `reused: true`; None if there is none."""
    mlflow = client()
    tag = tag_names.eval_tag(split, "key")
    if run_id is not None:
        run = mlflow.get_run(run_id)
        if run.data.tags.get(tag) != key:
            return None
    else:
        runs = mlflow.search_runs([experiment_id(mlflow)], filter_string=f"tags.`{tag}` = '{key}'", max_results=1)
        if not runs:
            return None
        run = runs[0]
    run_tags: dict[str, str] = run.data.tags

    def recorded(what: str) -> str:
        return run_tags.get(tag_names.eval_tag(split, what), "")

    dataset = recorded("dataset")
    version = pinned_version(dataset) or dataset
    artifacts = run.info.artifact_uri.rstrip("/") + f"/evaluation/{split}-{version}"
    return {
        "model": run_tags.get(tag_names.MODEL, ""),
        "dataset": dataset,
        "split": split,
        "seed": int(recorded("seed") or 0),
        "num_samples": int(recorded("num_samples") or 0),
        "num_real": int(recorded("num_real") or 0),
        "metrics": {
            name[len(split) + 1 :]: float(value)
            for name, value in run.data.metrics.items()
            if name.startswith(f"{split}/")
        },
        "features": {"name": recorded("features"), "weights_sha256": recorded("features_sha256")},
        "settings": dict(item.split("=", 1) for item in recorded("settings").split(",") if "=" in item),
        "reliability": expand_reliability(recorded("reliability")),
        "seconds": 0.0,
        "run_id": run.info.run_id,
        "artifacts": artifacts,
        "report": f"{artifacts}/report.md",
        "reused": True,
        "key": key,
    }


__all__ = [
    "EvalTarget",
    "evaluation_key",
    "recorded_evaluation",
    "loss_history",
    "record_evaluation",
    "resolve_target",
    "run_checkpoint",
]
