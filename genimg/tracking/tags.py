"""The MLflow tag names genimg writes and reads: one place for the vocabulary.

Runs: what they train (model, dataset), where their files are (checkpoint, run name), what
launched them (flow run, Ray job, search), why they failed. Model versions: lineage (dataset
manifest, code, config, run) and the evaluation promotion compares.
"""

from __future__ import annotations

MODEL = "genimg.model"
DATASET = "genimg.dataset"
DATASET_MANIFEST_SHA256 = "genimg.dataset.manifest_sha256"
CHECKPOINT = "genimg.checkpoint"
RESTARTS = "genimg.restarts"
RUN_NAME = "genimg.run_name"
RUN_ID = "genimg.run_id"
KIND = "genimg.kind"  # "search" (a search's parent run) or "evaluation" (an evaluation of its own)
ERROR = "genimg.error"  # why a run FAILED, in one line
FLOW_RUN_ID = "genimg.flow_run_id"
RAY_JOB = "genimg.ray_job"
# MLflow 3's UI opens an experiment on its GenAI traces page unless this tag says what it holds.
EXPERIMENT_KIND = "mlflow.experimentKind"
MODEL_DEVELOPMENT = "custom_model_development"
CODE_VERSION = "genimg.code_version"
CONFIG_SHA256 = "genimg.config_sha256"
MODEL_VERSION = "genimg.model_version"
EVALUATES = "genimg.evaluates"

PARENT_RUN = "mlflow.parentRunId"  # MLflow's own: nests a trial run under its search
SEARCH = "genimg.search"
TRIAL = "genimg.trial"
TRIAL_STATUS = "genimg.trial.status"
TRIAL_ERROR = "genimg.trial.error"
TRIALS_PREFIX = "genimg.trials."  # + completed / early-stopped / failed: counts on the parent
BEST_RUN_ID = "genimg.best.run_id"
BEST_TRIAL = "genimg.best.trial"
BEST_CONFIG = "genimg.best.config"
BEST_CHECKPOINT = "genimg.best.checkpoint"

DECISION_PREFIX = "genimg.promotion."  # + decision id: one record (JSON) per promotion decision
PROMOTED_PREFIX = "genimg.promoted."  # decision, reason, time: why a version became champion
REEVALUATION_PREFIX = "genimg.reevaluation."  # + evaluation id: a champion scored another way

EVAL_PREFIX = "genimg.eval."  # + <split>.<what> on runs; + <what> on model versions


def eval_tag(split: str, what: str) -> str:
    """A run's evaluation tag: genimg.eval.<split>.<what> (dataset, features, seed, …)."""
    return f"{EVAL_PREFIX}{split}.{what}"
