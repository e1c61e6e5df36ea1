"""Registering a training run: its test evaluation first (unless one is recorded), then a new
model version with lineage (`genimg.tracking.registry`).

The evaluation follows the run's own `eval:` section (logged with the run), overridden by what
the caller asks (`genimg register --samples/--extractor-steps/--features`); a recorded test
evaluation with the same key is reused, and with no override any recorded test evaluation is."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from genimg.config import config_from_dict
from genimg.evaluation.config import EvalConfig
from genimg.feedback import phase, say
from genimg.services.evaluate import evaluate_target
from genimg.tracking.evaluations import run_checkpoint
from genimg.tracking.registry import has_test_evaluation, register_run, training_run

NOT_FOR_REGISTER = ("at_end_of_training",)  # eval: keys about the end of training only


def run_eval_section(run: Any) -> dict[str, Any]:
    """The `eval:` section the run was trained with (its `eval.*` params), as typed values."""
    import yaml

    return {
        key[len("eval.") :]: None if value == "None" else yaml.safe_load(value)
        for key, value in run.data.params.items()
        if key.startswith("eval.") and key[len("eval.") :] not in NOT_FOR_REGISTER
    }


def register(
    run_id: str, name: str | None = None, *, flow_run_id: str | None = None, evaluation: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """What `genimg register --json` prints: name, version, model_uri, source, run_id, tags.
    `evaluation`: eval settings that override the run's own for its test evaluation."""
    run = training_run(run_id)
    asked = {key: value for key, value in (evaluation or {}).items() if value is not None}
    if asked or not has_test_evaluation(run):
        config = config_from_dict(EvalConfig, run_eval_section(run) | asked, where="eval")
        _, dataset = run_checkpoint(run)
        with phase(
            f"test evaluation of run {run_id} on {dataset} for its registration ({config.samples} "
            f"samples; recorded once per settings, reused after)"
        ):
            evaluated = evaluate_target(run_id, None, config, split="test")
        if evaluated.get("reused"):
            say("its test evaluation with these settings was already recorded: reused, not recomputed")
    return register_run(run_id, name, flow_run_id=flow_run_id)
