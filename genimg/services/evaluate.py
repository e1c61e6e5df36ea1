"""The evaluation runner: `genimg evaluate`, the retrain flow's evaluation, the test evaluation
`register` needs, and the val-split evaluation at the end of every training run. It loads the
model, resolves the dataset (or takes the handle the caller resolved), scores it
(`genimg.evaluation`) and records the result in MLflow (`genimg.tracking.evaluations`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from genimg.data.handle import DatasetHandle, resolve_dataset
from genimg.errors import GenimgError
from genimg.evaluation.config import EvalConfig
from genimg.evaluation.evaluate import evaluate_model
from genimg.feedback import phase, say
from genimg.models.base import model_spec
from genimg.tracking import tags
from genimg.tracking.evaluations import record_evaluation, resolve_target
from genimg.tracking.models import load_model_at


def evaluate_target(
    target: str,
    dataset: str | DatasetHandle | None,
    config: EvalConfig,
    *,
    split: str = "test",
    out_dir: Path | None = None,
) -> dict[str, Any]:
    """Evaluate a run / registered model / folder on `split` of `dataset` (default: what the
    target was trained on) and record it; returns what `genimg evaluate --json` prints."""
    resolved = resolve_target(target)
    dataset = dataset or resolved.dataset
    if not dataset:
        raise GenimgError(f"{target}: give --dataset (the target does not say what it was trained on)")
    model = load_model_at(resolved.checkpoint)
    handle = dataset if isinstance(dataset, DatasetHandle) else resolve_dataset(
        dataset, model_spec(model.registry_name).data_kind)
    evaluation = evaluate_model(model, handle, split, config)
    extra = {tags.EVALUATES: target}
    if resolved.model_version:
        extra[tags.MODEL_VERSION] = resolved.model_version
    return record_evaluation(
        evaluation, log_run_id=resolved.log_run_id, training_run_id=resolved.training_run_id,
        title=f"Evaluation of {target} on {evaluation.dataset} ({split})", out_dir=out_dir, tags=extra,
    )


def evaluate_after_training(run_id: str, run_name: str, checkpoint: str | None, handle: DatasetHandle,
                            config: EvalConfig) -> dict[str, Any] | None:
    """The small val-split evaluation every run carries, logged to the run. The run itself is
    complete by now, so a failure here is reported beside its result instead of raised."""
    if not checkpoint:
        return None
    try:
        with phase(f"evaluating the trained model on the val split of {handle.ref} "
                   "(eval.at_end_of_training=false skips this)"):
            model = load_model_at(checkpoint)
            evaluation = evaluate_model(model, handle, "val", config)
        return record_evaluation(
            evaluation, log_run_id=run_id, training_run_id=run_id,
            title=f"Run {run_name}: {evaluation.model} on {evaluation.dataset} (val)",
        )
    except GenimgError as exc:
        say("warning: evaluation after training failed: %s", exc)
        return {"error": str(exc)}
