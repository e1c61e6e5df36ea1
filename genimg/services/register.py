"""Registering a training run: its test evaluation first (when it has none), then a new model
version with lineage (`genimg.tracking.registry`)."""

from __future__ import annotations

from typing import Any

from genimg.evaluation.config import EvalConfig
from genimg.feedback import phase
from genimg.services.evaluate import evaluate_target
from genimg.tracking.evaluations import run_checkpoint
from genimg.tracking.registry import has_test_evaluation, register_run, training_run


def register(run_id: str, name: str | None = None, *, flow_run_id: str | None = None) -> dict[str, Any]:
    """What `genimg register --json` prints: name, version, model_uri, source, run_id, tags."""
    run = training_run(run_id)
    if not has_test_evaluation(run):
        _, dataset = run_checkpoint(run)
        with phase(f"evaluating run {run_id} on the test split of {dataset} first (it has no test "
                   f"evaluation; {EvalConfig.samples} samples)"):
            evaluate_target(run_id, None, EvalConfig(), split="test")
    return register_run(run_id, name, flow_run_id=flow_run_id)
