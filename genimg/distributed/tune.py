"""`genimg tune`: a Ray Tune search whose trials are genimg training runs on Ray Train.

Each trial is a function trainable holding a sliver of CPU (Tune refuses 0) that launches a
`TorchTrainer` (Train V2) through the same `fit` as `genimg train`, with Tune's
`TuneReportCallback` forwarding every checkpoint report — and with it the validation metric — to
Tune, where ASHA stops the trials that fall behind. Trials are MLflow child runs of one parent
run per search (tag `mlflow.parentRunId`); the parent records the best trial.

Resources: a trial needs workers × CPUs per worker; at most as many trials run at once as the
cluster holds (the rest queue), since a trial started without room for its workers would wait on
Ray Train's worker-group timeout instead of training. Tune's experiment state lives in the store
(`runs/<search>/`), so `--resume` continues an interrupted search without rerunning finished
trials; a trial cut off midway restarts its Train run, which resumes from its last checkpoint.

Trust: Tune keeps that state as pickles (`tuner.pkl`, its trial records) and unpickles them on
`--resume` and on the retrain flow's automatic resume, so whoever can write `runs/<search>/` in
the store can run code in the resuming process. The store must be as trusted as the code: only
people and services allowed to deploy code may write to it (README, "Trust boundaries").
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from genimg.data.dataset import Dataset
from genimg.data.handle import DataMode, DatasetHandle, resolve_dataset
from genimg.distributed.cluster import cluster_cpus, ray_session
from genimg.distributed.search_space import (
    SearchSpace,
    check_space,
    compact_probe,
    fixed_sections,
    trial_run_config,
)
from genimg.distributed.storage import checkpoint_uri, run_storage
from genimg.distributed.trainer import FitPlan, TrainingData, fit, training_data
from genimg.errors import GenimgError
from genimg.evaluation.config import EvalConfig
from genimg.evaluation.features import dataset_extractor
from genimg.evaluation.validation import feature_network_payload
from genimg.models.base import model_spec
from genimg.settings import genimg_home
from genimg.store import ObjectStore, open_store
from genimg.tracking import searches, tags

TRIAL_ID_IN_PATH = re.compile(r"_([0-9a-f]{5}_\d{5})_")  # Tune names trial folders <trainable>_<id>_…
TRIAL_CPU = 0.01  # the trial's own actor only waits on its Train run; Ray refuses 0


@dataclass(frozen=True)
class TrialContext:
    """What every trial of a search shares (sent once to Ray's object store by Tune)."""

    model_name: str
    sections: Mapping[str, Mapping[str, Any]]  # the fixed config; each trial merges its overrides in
    shape_probe: Dataset  # to fit each trial's model config to the data
    data: TrainingData
    store_uri: str
    workers: int  # Ray Train workers per trial
    use_gpu: bool
    cpus: int  # per worker
    max_failures: int
    parent_run_id: str
    search: str
    env: Mapping[str, str]  # the trial logs to the same MLflow and store as the driver


@dataclass
class TrialOutcome:
    trial_id: str
    run_id: str | None
    config: dict[str, Any]
    status: str  # completed | early-stopped | failed
    metric: float | None
    step: int
    seconds: float
    checkpoint: str | None
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "trial_id": self.trial_id,
            "run_id": self.run_id,
            "config": self.config,
            "status": self.status,
            "metric": self.metric,
            "step": self.step,
            "seconds": round(self.seconds, 2),
            "checkpoint": self.checkpoint,
            **({"error": self.error} if self.error else {}),
        }


@dataclass
class SearchResult:
    name: str
    parent_run_id: str
    metric: str
    mode: str
    trials: list[TrialOutcome]
    best: TrialOutcome | None
    seconds: float  # the whole command: Ray start, data, feature network, the search
    search_seconds: float  # Tuner.fit alone
    max_concurrent: int
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        best = None
        if self.best is not None:
            best = {
                "run_id": self.best.run_id,
                "trial_id": self.best.trial_id,
                "config": self.best.config,
                "metric": self.metric,
                "value": self.best.metric,
                "checkpoint": self.best.checkpoint,
            }
        trial_seconds = sum(t.seconds for t in self.trials)
        return {
            "search": self.name,
            "parent_run_id": self.parent_run_id,
            "metric": self.metric,
            "mode": self.mode,
            "best": best,
            "trials": [t.as_dict() for t in self.trials],
            "seconds": round(self.seconds, 2),
            "search_seconds": round(self.search_seconds, 2),
            "trial_seconds": round(trial_seconds, 2),
            "max_concurrent": self.max_concurrent,
            "notes": self.notes,
        }


def run_trial(config: dict[str, Any], context: TrialContext) -> None:
    """One trial (in a Tune actor): resolve its config, then train it like `genimg train`."""
    from ray import tune
    from ray.tune.integration.ray_train import TuneReportCallback

    os.environ.update(context.env)
    trial_id = tune.get_context().get_trial_id()
    run_name = f"{context.search}-{trial_id}"
    run_tags = searches.trial_tags(context.parent_run_id, context.search, trial_id)
    try:
        run = trial_run_config(context.model_name, context.sections, config["overrides"], context.shape_probe)
    except GenimgError as exc:
        searches.record_failed_trial(run_name, {**run_tags, tags.MODEL: context.model_name}, config["overrides"], exc)
        raise
    plan = FitPlan(
        run,
        run_name,
        context.data,
        context.workers,
        context.use_gpu,
        context.cpus,
        context.max_failures,
        samples=False,
        tags=run_tags,
    )
    fit(plan, open_store(context.store_uri), callbacks=[TuneReportCallback()])


def search_dataset(source: str | DatasetHandle, model_name: str, metric: str, store: ObjectStore) -> DatasetHandle:
    """The dataset, resolved once (unless given as a handle), with a val split to validate on."""
    handle = (
        source
        if isinstance(source, DatasetHandle)
        else resolve_dataset(source, model_spec(model_name).data_kind, store=store)
    )
    if handle.count(("val",)) < 2:
        raise GenimgError(f"{handle.given}: its val split has under 2 records, so there is no {metric} to search on")
    return handle


def resume_or_start(store: ObjectStore, search: str, resume: bool | Literal["auto"]) -> bool:
    """Whether Tune's state of this search is restored; "auto": if there is one."""
    from ray import tune

    storage_path, filesystem = run_storage(store)
    restoring = tune.Tuner.can_restore(f"{storage_path}/{search}", storage_filesystem=filesystem)
    where = store.uri_for(f"runs/{search}")
    if restoring and resume is False:
        raise GenimgError(
            f"search {search} already exists in {where}; pass --resume to continue it or pick another --name"
        )
    if resume is True and not restoring:
        raise GenimgError(f"no search {search} to resume in {where}")
    return restoring


def search_data(handle: DatasetHandle, metric: str, store: ObjectStore, data_mode: DataMode) -> TrainingData:
    """The workers' data and the val split, with the dataset's feature network for val_fid."""
    features = None
    if metric == "val_fid":
        features = feature_network_payload(dataset_extractor(handle, EvalConfig(), store))
    return training_data(handle, features, data_mode)


def trial_concurrency(
    space: SearchSpace, trials: int, max_concurrent: int | None, needed: int
) -> tuple[int, list[str]]:
    """Trials at once: as many as the cluster holds (a trial needs `needed` CPUs), or fewer."""
    if cluster_cpus(exact=True) < needed + TRIAL_CPU:
        raise GenimgError(
            f"a trial needs {needed} CPU(s) for its workers and {TRIAL_CPU} for its Tune actor; "
            f"the cluster has {cluster_cpus(exact=True):g}: lower --workers-per-trial or --cpus-per-worker"
        )
    fits = max(1, cluster_cpus() // needed)
    notes = []
    if max_concurrent and max_concurrent > fits:
        notes.append(
            f"max_concurrent lowered from {max_concurrent} to {fits}: a trial needs {needed} CPU(s) "
            f"and the cluster has {cluster_cpus()}; the other trials queue"
        )
    return min(max_concurrent or fits, fits, trials * space.grid_size), notes


def build_tuner(
    context: TrialContext,
    space: SearchSpace,
    store: ObjectStore,
    *,
    resume: bool,
    trials: int,
    steps: int,
    report_every: int,
    concurrent: int,
    seed: int,
) -> Any:
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search import BasicVariantGenerator

    # Tune saves its experiment state at most this often; a killed driver loses at most this
    # much bookkeeping (Tune's own default waits ≥ 10 s).
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "2")
    storage_path, filesystem = run_storage(store)
    trainable = tune.with_resources(tune.with_parameters(run_trial, context=context), {"CPU": TRIAL_CPU})
    if resume:
        return tune.Tuner.restore(
            f"{storage_path}/{context.search}",
            trainable,
            storage_filesystem=filesystem,
            resume_unfinished=True,
            resume_errored=False,
        )
    # max_t past the last step: ASHA stops any trial that reaches max_t, which would kill a
    # finished trial before its run is closed in MLflow.
    scheduler = ASHAScheduler(time_attr="step", max_t=steps + 1, grace_period=report_every, reduction_factor=2)
    return tune.Tuner(
        trainable,
        param_space={"overrides": space.to_tune()},
        tune_config=tune.TuneConfig(
            metric=space.metric,
            mode=space.mode,
            scheduler=scheduler,
            num_samples=trials,
            max_concurrent_trials=concurrent,
            search_alg=BasicVariantGenerator(random_state=seed, max_concurrent=concurrent),
        ),
        run_config=tune.RunConfig(
            name=context.search,
            storage_path=storage_path,
            storage_filesystem=filesystem,
            failure_config=tune.FailureConfig(max_failures=0),
            verbose=0,
        ),
    )


def tune_search(
    model_name: str,
    source: str | DatasetHandle,
    sections: dict[str, dict[str, Any]],
    *,
    space: SearchSpace,
    trials: int,
    steps: int,
    search: str,
    max_concurrent: int | None = None,
    workers_per_trial: int = 1,
    cpus_per_worker: int = 1,
    use_gpu: bool = False,
    resume: bool | Literal["auto"] = False,
    seed: int = 0,
) -> SearchResult:
    """Search `space` for `model_name` on `source` (NAME[@VERSION], a raw source, or a resolved
    handle); resume="auto" continues the search of this name if there is one, else starts it."""
    if trials < 1 or steps < 1 or workers_per_trial < 1 or cpus_per_worker < 1:
        raise GenimgError(
            f"--trials, --steps, --workers-per-trial and --cpus-per-worker must each be ≥ 1, got "
            f"{trials}, {steps}, {workers_per_trial} and {cpus_per_worker}"
        )
    check_space(model_name, space)
    base, fixed = fixed_sections(model_name, sections, steps)
    store = open_store()
    started = time.perf_counter()
    handle = search_dataset(source, model_name, space.metric, store)
    probe = compact_probe(handle.shape_probe())
    with ray_session():
        restoring = resume_or_start(store, search, resume)
        data = search_data(handle, space.metric, store, fixed.train.data_mode)
        concurrent, notes = trial_concurrency(space, trials, max_concurrent, workers_per_trial * cpus_per_worker)
        parent = searches.open_search_run(
            search,
            model_name=model_name,
            dataset=handle.ref,
            resume=restoring,
            params={
                "trials": trials,
                "steps": steps,
                "metric": space.metric,
                "mode": space.mode,
                "max_concurrent": concurrent,
                "workers_per_trial": workers_per_trial,
                "space": json.dumps(space.space),
                "base": base,
            },
        )
        context = TrialContext(
            model_name,
            base,
            probe,
            data,
            store.uri,
            workers_per_trial,
            use_gpu,
            cpus_per_worker,
            1,
            parent.run_id,
            search,
            {**searches.tracking_env(), "GENIMG_STORE": store.uri, "GENIMG_HOME": str(genimg_home())},
        )
        with parent.failed_on_error():
            tuner = build_tuner(
                context,
                space,
                store,
                resume=restoring,
                trials=trials,
                steps=steps,
                report_every=fixed.train.checkpoint_every,
                concurrent=concurrent,
                seed=seed,
            )
            fit_started = time.perf_counter()
            grid = tuner.fit()
            fit_seconds = time.perf_counter() - fit_started
        outcomes = collect_outcomes(grid, parent.run_id, space.metric, steps, store)
    best = pick_best(outcomes, space.mode)
    searches.finish_search(parent, space.metric, steps, best, [o.status for o in outcomes])
    return SearchResult(
        search,
        parent.run_id,
        space.metric,
        space.mode,
        outcomes,
        best,
        time.perf_counter() - started,
        fit_seconds,
        concurrent,
        notes,
    )


def trial_id_of(result: Any) -> str:
    found = TRIAL_ID_IN_PATH.search(Path(result.path).name)
    return str((result.metrics or {}).get("trial_id") or (found.group(1) if found else Path(result.path).name))


def trial_status(result: Any, steps: int) -> str:
    if result.error is not None:
        return "failed"
    return "completed" if int((result.metrics or {}).get("step", 0)) >= steps else "early-stopped"


def trial_outcome(
    trial_id: str, result: Any, status: str, run: searches.TrialRun | None, metric: str, store: ObjectStore
) -> TrialOutcome:
    metrics = result.metrics or {}
    error = None
    if result.error is not None:
        text = str(result.error).strip()
        error = next(
            (line for line in reversed(text.splitlines()) if "Error" in line), text.splitlines()[0] if text else ""
        )
    checkpoint = run.checkpoint if run is not None else None
    if not checkpoint and metrics.get("checkpoint_path"):  # a stopped trial's last checkpoint
        checkpoint = checkpoint_uri(store, str(metrics["checkpoint_path"]))
    value = metrics.get(metric)
    return TrialOutcome(
        trial_id=trial_id,
        run_id=run.run_id if run is not None else None,
        config=dict(result.config.get("overrides", {})) if result.config else {},
        status=status,
        metric=float(value) if value is not None else None,
        step=int(metrics.get("step", 0)),
        seconds=float(metrics.get("time_total_s", 0.0)),
        checkpoint=checkpoint,
        error=error,
    )


def collect_outcomes(grid: Any, parent_run_id: str, metric: str, steps: int, store: ObjectStore) -> list[TrialOutcome]:
    """Each trial's status and last metric; early-stopped trials' runs are closed as KILLED."""
    results = {trial_id_of(result): result for result in grid}
    statuses = {trial_id: trial_status(result, steps) for trial_id, result in results.items()}
    runs = searches.settle_trials(parent_run_id, statuses)
    return [
        trial_outcome(trial_id, results[trial_id], statuses[trial_id], runs.get(trial_id), metric, store)
        for trial_id in sorted(results)
    ]


def pick_best(outcomes: list[TrialOutcome], mode: str) -> TrialOutcome | None:
    """The best last value among completed trials (early-stopped ones only if none completed)."""
    for allowed in (("completed",), ("completed", "early-stopped")):
        scored = [o for o in outcomes if o.status in allowed and o.metric is not None]
        if scored:
            return min(scored, key=scored_metric) if mode == "min" else max(scored, key=scored_metric)
    return None


def scored_metric(outcome: TrialOutcome) -> float:
    """The metric `pick_best` ranks an outcome by (it ranks only outcomes that have one)."""
    assert outcome.metric is not None, f"trial {outcome.trial_id} has no metric to rank"
    return outcome.metric


__all__ = ["SearchResult", "SearchSpace", "TrialContext", "TrialOutcome", "run_trial", "tune_search"]
