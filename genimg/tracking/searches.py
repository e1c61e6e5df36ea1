"""The MLflow side of a Ray Tune search (`genimg tune`): one parent run per search (tags
`genimg.kind=search`, `genimg.search=<name>`), and one child run per trial (`mlflow.parentRunId`,
`genimg.trial=<Tune's trial id>`), which training itself opens and closes.

Here: finding and opening (or, on --resume, reopening) the parent run, the trial runs of a
parent, the status of each trial once the search is over (ASHA stops a trial's process, so its
run is closed here, KILLED), the run of a trial whose config failed before it trained, and the
best trial with the trial counts on the parent.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from genimg.tracking import tags
from genimg.tracking.runs import TrainingRun, client, experiment_id, experiment_name, tracking_uri

SEARCH_KIND = "search"
TRIAL_STATUSES = ("completed", "early-stopped", "failed")


@dataclass(frozen=True)
class TrialRun:
    """A trial's MLflow run as the search's result names it."""

    run_id: str
    checkpoint: str | None  # the run's last checkpoint, when training recorded one


class ScoredTrial(Protocol):
    """A trial as the search's result has it (genimg.distributed.tune.TrialOutcome)."""

    run_id: str | None
    trial_id: str
    config: dict[str, Any]
    checkpoint: str | None
    metric: float | None


def find_parent_run(search: str) -> str | None:
    """The parent run of the search of this name, if there is one."""
    mlflow = client(f"looking up search {search!r}")
    runs = mlflow.search_runs(
        [experiment_id(mlflow)],
        filter_string=f"tags.`{tags.SEARCH}` = '{search}' and tags.`{tags.KIND}` = '{SEARCH_KIND}'",
    )
    return runs[0].info.run_id if runs else None


def open_search_run(
    search: str, *, model_name: str, dataset: str, params: Mapping[str, Any], resume: bool
) -> TrainingRun:
    """On resume, the search's parent run set RUNNING again; else (or if it has none) a new one."""
    parent_run_id = find_parent_run(search) if resume else None
    if parent_run_id:
        parent = TrainingRun.existing(parent_run_id)
        parent.client.update_run(parent_run_id, status="RUNNING")
        return parent
    parent = TrainingRun(
        search, tags={tags.KIND: SEARCH_KIND, tags.SEARCH: search, tags.MODEL: model_name, tags.DATASET: dataset}
    )
    parent.log_params({"search": dict(params)})
    return parent


def tracking_env() -> dict[str, str]:
    """Where a trial's process logs (the driver's MLflow and experiment), and what launched the
    search (lineage tags of the trial runs, see runs.lineage_tags)."""
    return {
        "MLFLOW_TRACKING_URI": tracking_uri(),
        "MLFLOW_EXPERIMENT_NAME": experiment_name(),
        **{k: os.environ[k] for k in ("GENIMG_FLOW_RUN_ID", "GENIMG_RAY_JOB") if os.environ.get(k)},
    }


def trial_tags(parent_run_id: str, search: str, trial_id: str) -> dict[str, str]:
    """What nests a trial's run under its search."""
    return {tags.PARENT_RUN: parent_run_id, tags.SEARCH: search, tags.TRIAL: trial_id}


def record_failed_trial(
    run_name: str, run_tags: Mapping[str, str], overrides: Mapping[str, Any], error: BaseException
) -> None:
    """A trial that never trained (its config was refused): a FAILED child run all the same."""
    failed = TrainingRun(run_name, tags={**run_tags, tags.TRIAL_ERROR: str(error)[:5000]})
    failed.log_params({"overrides": dict(overrides)})
    failed.finish("FAILED", reason=str(error))


def child_runs(parent_run_id: str, mlflow_client: Any = None) -> dict[str, Any]:
    """trial id → MLflow run of the search's trials (a trial's latest run)."""
    mlflow = mlflow_client or client()
    runs = mlflow.search_runs(
        [experiment_id(mlflow)],
        filter_string=f"tags.`{tags.PARENT_RUN}` = '{parent_run_id}'",
        max_results=5000,
        order_by=["attributes.start_time ASC"],
    )
    by_trial: dict[str, Any] = {}
    for run in runs:
        trial = run.data.tags.get(tags.TRIAL)
        if trial is None:
            continue
        earlier = by_trial.get(trial)
        if earlier is not None and earlier.info.status == "RUNNING":
            # A trial restarted by --resume: its run from the interrupted search ended there.
            mlflow.set_terminated(earlier.info.run_id, status="KILLED")
        by_trial[trial] = run
    return by_trial


def settle_trials(parent_run_id: str, statuses: Mapping[str, str]) -> dict[str, TrialRun]:
    """Tag each trial's run with its status (completed | early-stopped | failed); a run still
    RUNNING belongs to a trial whose process ASHA stopped, and is closed KILLED."""
    mlflow = client()
    settled: dict[str, TrialRun] = {}
    for trial, run in child_runs(parent_run_id, mlflow).items():
        if trial not in statuses:
            continue
        mlflow.set_tag(run.info.run_id, tags.TRIAL_STATUS, statuses[trial])
        if run.info.status == "RUNNING":
            mlflow.set_terminated(run.info.run_id, status="KILLED")
        settled[trial] = TrialRun(run.info.run_id, run.data.tags.get(tags.CHECKPOINT) or None)
    return settled


def finish_search(
    parent: TrainingRun, metric: str, step: int, best: ScoredTrial | None, statuses: Sequence[str]
) -> None:
    """The best trial (its last value of `metric`) and how many trials ended in each status on
    the parent run, which ends FINISHED (FAILED when no trial has a value of the metric)."""
    if best is not None and best.metric is not None:
        parent.set_tags(
            {
                tags.BEST_RUN_ID: best.run_id or "",
                tags.BEST_TRIAL: best.trial_id,
                tags.BEST_CONFIG: json.dumps(best.config),
                tags.BEST_CHECKPOINT: best.checkpoint or "",
            }
        )
        parent.add_metrics(step, {f"best_{metric}": float(best.metric)}, int(time.time() * 1000))
    parent.set_tags(
        {f"{tags.TRIALS_PREFIX}{status}": str(sum(s == status for s in statuses)) for status in TRIAL_STATUSES}
    )
    if best is None:
        parent.finish("FAILED", reason=f"no trial reported {metric}")
    else:
        parent.finish("FINISHED")


__all__ = [
    "ScoredTrial",
    "TrialRun",
    "child_runs",
    "find_parent_run",
    "finish_search",
    "open_search_run",
    "record_failed_trial",
    "settle_trials",
    "tracking_env",
    "trial_tags",
]
