"""The evaluation runner: `genimg evaluate`, the retrain flow's evaluation, the test evaluation
`register` needs, and the val-split evaluation at the end of every training run. It loads the
model, resolves the dataset (or takes the handle the caller resolved), scores it
(`genimg.evaluation`) and records the result in MLflow (`genimg.tracking.evaluations`).

An evaluation is computed once per (weights, dataset version, split, settings): its key is
recorded with it, and asking again returns the recorded result (`reused: true`)."""

from __future__ import annotations

import hashlib
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from genimg.data.handle import DatasetHandle, resolve_dataset
from genimg.errors import GenimgError
from genimg.evaluation.config import EvalConfig
from genimg.evaluation.evaluate import evaluate_model
from genimg.evaluation.inception import find_inception_weights
from genimg.feedback import phase, say
from genimg.models.base import model_spec
from genimg.tracking import tags
from genimg.tracking.evaluations import evaluation_key, record_evaluation, recorded_evaluation, resolve_target
from genimg.tracking.models import load_model_at


def weights_digest(model: Any) -> str:
    """The model's weights as one digest: a run, its registered version, an alias and an
    exported folder of the same weights are one model to evaluate."""
    digest = hashlib.sha256(model.registry_name.encode())
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def key_settings(config: EvalConfig) -> dict[str, Any]:
    """The settings that change an evaluation's numbers, with `auto` features resolved to the
    network they will be (the field's Inception once its weights are here, else the dataset's)."""
    settings = asdict(config)
    settings.pop("at_end_of_training")
    if config.features == "auto":
        settings["features"] = "inception" if find_inception_weights()[0] is not None else "dataset"
    return settings


def evaluate_target(
    target: str,
    dataset: str | DatasetHandle | None,
    config: EvalConfig,
    *,
    split: str = "test",
    out_dir: Path | None = None,
) -> dict[str, Any]:
    """Evaluate a run / registered model / folder on `split` of `dataset` (default: what the
    target was trained on) and record it, or return the recorded evaluation with the same key;
    returns what `genimg evaluate --json` prints."""
    resolved = resolve_target(target)
    dataset = dataset or resolved.dataset
    if not dataset:
        raise GenimgError(f"{target}: give --dataset (the target does not say what it was trained on)")
    model = load_model_at(resolved.checkpoint)
    handle = (
        dataset
        if isinstance(dataset, DatasetHandle)
        else resolve_dataset(dataset, model_spec(model.registry_name).data_kind)
    )
    key = evaluation_key(weights_digest(model), handle.ref, split, key_settings(config))
    if out_dir is None:  # asked for report files in a folder: those are written anew
        recorded = recorded_evaluation(key, split, resolved.log_run_id)
        if recorded is not None:
            say(
                "reusing the recorded evaluation of %s on %s (%s split, same settings: key %s, run %s)",
                target,
                handle.ref,
                split,
                key,
                recorded["run_id"],
            )
            return recorded
    evaluation = evaluate_model(model, handle, split, config)
    extra = {tags.EVALUATES: target}
    if resolved.model_version:
        extra[tags.MODEL_VERSION] = resolved.model_version
    return record_evaluation(
        evaluation,
        log_run_id=resolved.log_run_id,
        training_run_id=resolved.training_run_id,
        title=f"Evaluation of {target} on {evaluation.dataset} ({split})",
        out_dir=out_dir,
        tags=extra,
        key=key,
    )


def evaluate_after_training(
    run_id: str,
    run_name: str,
    checkpoint: str | None,
    handle: DatasetHandle,
    config: EvalConfig,
    run_steps: int | None = None,
) -> dict[str, Any] | None:
    """The small val-split evaluation every run carries, logged to the run. Proportionate to
    the run: the dataset's feature network is trained here only when its budget is within the
    run's own `run_steps` (or eval.features=classifier asks for it); otherwise FID/KID are left
    out, saying so, until it is cached. The run itself is complete by now, so a failure here
    is reported beside its result instead of raised."""
    if not checkpoint:
        return None
    try:
        with phase(
            f"evaluating the trained model on the val split of {handle.ref} (eval.at_end_of_training=false skips this)"
        ):
            model = load_model_at(checkpoint)
            evaluation = evaluate_model(model, handle, "val", config, extractor_step_limit=run_steps)
        return record_evaluation(
            evaluation,
            log_run_id=run_id,
            training_run_id=run_id,
            title=f"Run {run_name}: {evaluation.model} on {evaluation.dataset} (val)",
            key=evaluation_key(weights_digest(model), handle.ref, "val", key_settings(config)),
        )
    except GenimgError as exc:
        say("warning: evaluation after training failed: %s", exc)
        return {"error": str(exc)}
