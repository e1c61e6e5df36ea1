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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from genimg.config import read_yaml_mapping
from genimg.errors import ConfigError, GenimgError
from genimg.models.base import model_spec
from genimg.store import open_store
from genimg.training.run import merge_sections, resolve_run_config

SPACES_DIR = Path(__file__).resolve().parents[2] / "configs"
DISTRIBUTIONS = ("loguniform", "uniform", "randint", "choice", "grid")
REPORTS_PER_TRIAL = 6  # checkpoint reports (and so ASHA decision points) in a trial's budget
TRIAL_ID_IN_PATH = re.compile(r"_([0-9a-f]{5}_\d{5})_")  # Tune names trial folders <trainable>_<id>_…


TRIAL_CPU = 0.01  # the trial's own actor only waits on its Train run; Ray refuses 0


@dataclass(frozen=True)
class SearchSpace:
    metric: str
    mode: str  # min | max
    space: dict[str, dict[str, Any]]  # "section.key" → {distribution: arguments}
    source: str = ""

    @property
    def grid_size(self) -> int:
        """Configurations per sample: every grid value is tried (× --trials), as in Tune."""
        size = 1
        for spec in self.space.values():
            size *= len(spec["grid"]) if "grid" in spec else 1
        return size

    def to_tune(self) -> dict[str, Any]:
        from ray import tune

        makers = {
            "loguniform": lambda a: tune.loguniform(*a), "uniform": lambda a: tune.uniform(*a),
            "randint": lambda a: tune.randint(*a), "choice": tune.choice, "grid": tune.grid_search,
        }
        return {key: makers[name](args) for key, spec in self.space.items() for name, args in spec.items()}


def load_space(model_name: str, path: Path | None = None) -> SearchSpace:
    """A search space file (default: configs/tune-<model>.yaml), checked key by key."""
    path = path or SPACES_DIR / f"tune-{model_name}.yaml"
    loaded = read_yaml_mapping(path, "search space file")
    if not isinstance(loaded.get("space"), dict) or not loaded["space"]:
        raise ConfigError(f"{path}: expected a mapping with metric, mode and a non-empty space")
    mode = loaded.get("mode", "min")
    if mode not in ("min", "max"):
        raise ConfigError(f"{path}: mode must be min or max, got {mode!r}")
    space: dict[str, dict[str, Any]] = {}
    for key, spec in loaded["space"].items():
        where = f"{path}: space.{key}"
        if not isinstance(spec, dict) or len(spec) != 1 or next(iter(spec)) not in DISTRIBUTIONS:
            raise ConfigError(f"{where}: expected one of {', '.join(DISTRIBUTIONS)}, e.g. {{loguniform: [1e-4, 1e-3]}}")
        name, args = next(iter(spec.items()))
        if not isinstance(args, list) or not args or (name in ("loguniform", "uniform", "randint") and len(args) != 2):
            raise ConfigError(f"{where}: {name} takes {'[low, high]' if name in ('loguniform', 'uniform', 'randint') else 'a list of values'}")
        if name == "loguniform" and not 0 < args[0] < args[1]:
            raise ConfigError(f"{where}: loguniform needs 0 < low < high, got {args}")
        space[key] = {name: args}
    return SearchSpace(str(loaded.get("metric", "")), mode, space, str(path))


def check_space_keys(model_name: str, space: SearchSpace) -> None:
    """Every searched key names a real config field (values are checked per trial)."""
    import dataclasses

    from genimg.training.config import TrainConfig

    fields = {"model": {f.name for f in dataclasses.fields(model_spec(model_name).config_cls)},
              "train": {f.name for f in dataclasses.fields(TrainConfig)}}
    for key in space.space:
        section, _, name = key.partition(".")
        if section not in fields or name not in fields[section]:
            known = ", ".join(f"{s}.{n}" for s in fields for n in sorted(fields[s]))
            raise ConfigError(f"{space.source}: unknown search key {key!r} (known: {known})")


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
        return {"trial_id": self.trial_id, "run_id": self.run_id, "config": self.config, "status": self.status,
                "metric": self.metric, "step": self.step, "seconds": round(self.seconds, 2),
                "checkpoint": self.checkpoint, **({"error": self.error} if self.error else {})}


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
            best = {"run_id": self.best.run_id, "trial_id": self.best.trial_id, "config": self.best.config,
                    "metric": self.metric, "value": self.best.metric, "checkpoint": self.best.checkpoint}
        trial_seconds = sum(t.seconds for t in self.trials)
        return {
            "search": self.name, "parent_run_id": self.parent_run_id, "metric": self.metric, "mode": self.mode,
            "best": best, "trials": [t.as_dict() for t in self.trials], "seconds": round(self.seconds, 2),
            "search_seconds": round(self.search_seconds, 2),
            "trial_seconds": round(trial_seconds, 2), "max_concurrent": self.max_concurrent, "notes": self.notes,
        }


def split_overrides(overrides: dict[str, Any]) -> dict[str, dict[str, Any]]:
    sections: dict[str, dict[str, Any]] = {}
    for key, value in overrides.items():
        section, _, name = key.partition(".")
        sections.setdefault(section, {})[name] = list(value) if isinstance(value, tuple) else value
    return sections


def run_trial(config: dict[str, Any], shared: dict[str, Any]) -> None:
    """One trial (in a Tune actor): resolve its config, then train it like `genimg train`."""
    from ray import tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from genimg.distributed.trainer import fit
    from genimg.tracking.runs import TrainingRun

    # The trial logs to the same MLflow and store as the driver, wherever its actor runs.
    os.environ.update(shared["env"])
    trial_id = tune.get_context().get_trial_id()
    tags = {"mlflow.parentRunId": shared["parent_run_id"], "genimg.search": shared["search"], "genimg.trial": trial_id}
    run_name = f"{shared['search']}-{trial_id}"
    try:
        sections = merge_sections(shared["sections"], split_overrides(config["overrides"]))
        run = resolve_run_config(shared["model_name"], sections, shared["shape_probe"])
    except GenimgError as exc:
        # The trial never trains: record it as a failed child run all the same.
        failed = TrainingRun(run_name, tags={**tags, "genimg.model": shared["model_name"],
                                             "genimg.trial.error": str(exc)[:5000]})
        failed.log_params({"overrides": config["overrides"]})
        failed.finish("FAILED")
        raise
    fit(run, shared["data"], shared["dataset_label"], shared["count"], [], open_store(shared["store"]),
        workers=shared["workers"], use_gpu=shared["use_gpu"], cpus=shared["cpus"], run_name=run_name,
        max_failures=shared["max_failures"], export_dir=None, on_progress=None, samples=False,
        validation=shared["validation"], tags=tags, callbacks=[TuneReportCallback()])


def find_parent_run(search: str) -> str | None:
    from genimg.tracking.runs import client, experiment_id

    mlflow = client()
    runs = mlflow.search_runs([experiment_id(mlflow)],
                              filter_string=f"tags.`genimg.search` = '{search}' and tags.`genimg.kind` = 'search'")
    return runs[0].info.run_id if runs else None


def child_runs(parent_run_id: str) -> dict[str, Any]:
    """trial id → MLflow run of the search's trials."""
    from genimg.tracking.runs import client, experiment_id

    mlflow = client()
    runs = mlflow.search_runs([experiment_id(mlflow)], filter_string=f"tags.`mlflow.parentRunId` = '{parent_run_id}'",
                              max_results=5000, order_by=["attributes.start_time ASC"])
    by_trial: dict[str, Any] = {}
    for run in runs:
        trial = run.data.tags.get("genimg.trial")
        if trial is None:
            continue
        earlier = by_trial.get(trial)
        if earlier is not None and earlier.info.status == "RUNNING":
            # A trial restarted by --resume: its run from the interrupted search ended there.
            mlflow.set_terminated(earlier.info.run_id, status="KILLED")
        by_trial[trial] = run
    return by_trial


def tune_search(
    model_name: str,
    source: str,
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
    """resume="auto" continues the search of this name if there is one, else starts it."""
    from genimg.distributed.cluster import cluster_cpus, ray_session
    from genimg.distributed.trainer import read_training_data, run_storage, shape_probe, validation_spec, worker_data
    from genimg.settings import genimg_home
    from genimg.tracking.runs import TrainingRun, experiment_name, tracking_uri

    if trials < 1 or steps < 1 or workers_per_trial < 1:
        raise GenimgError("--trials, --steps and --workers-per-trial must each be ≥ 1")
    if not space.metric.startswith("val_"):
        raise ConfigError(f"{space.source}: metric must be a validation metric reported in training "
                          f"(val_nll_bound for vae/rvae, val_fid for any image model), got {space.metric!r}")
    spec = model_spec(model_name)
    if space.metric == "val_nll_bound" and spec.family not in ("vae", "rvae"):
        raise ConfigError(f"val_nll_bound needs a likelihood model; {model_name} reports val_fid")
    if space.metric == "val_fid" and spec.data_kind != "images":
        raise ConfigError(f"val_fid is for image models; {model_name} reports val_nll_bound")
    train_defaults = {"steps": steps, "checkpoint_every": max(1, steps // REPORTS_PER_TRIAL), "log_every": max(1, steps // REPORTS_PER_TRIAL)}
    base = merge_sections({"train": train_defaults}, sections)
    base["train"]["steps"] = steps
    check_space_keys(model_name, space)
    fixed = resolve_run_config(model_name, base)  # the fixed part of every trial's config is valid
    store = open_store()
    storage_path, filesystem = run_storage(store)
    experiment_uri = store.uri_for(f"runs/{search}")
    started = time.perf_counter()
    notes: list[str] = []
    version, dataset = read_training_data(source, spec.data_kind, store)
    probe = shape_probe(version, dataset)
    with ray_session():
        from ray import tune
        from ray.tune.schedulers import ASHAScheduler
        from ray.tune.search import BasicVariantGenerator

        restoring = tune.Tuner.can_restore(f"{storage_path}/{search}", storage_filesystem=filesystem)
        if resume == "auto":
            resume = restoring
        if restoring and not resume:
            raise GenimgError(f"search {search} already exists in {experiment_uri}; pass --resume to continue it or pick another --name")
        if resume and not restoring:
            raise GenimgError(f"no search {search} to resume in {experiment_uri}")
        data, count, _, dataset_label = worker_data(version, dataset)
        features = None
        if space.metric == "val_fid":
            from genimg.data.sources import open_splits
            from genimg.evaluation.config import EvalConfig
            from genimg.evaluation.features import dataset_extractor
            from genimg.evaluation.validation import feature_network_payload

            extractor = dataset_extractor(open_splits(source, spec.data_kind, store=store), EvalConfig(), store)
            features = feature_network_payload(extractor)
        validation = validation_spec(version, source, spec.data_kind, features)
        if validation is None:
            raise GenimgError(f"{source}: its val split has under 2 records, so there is no {space.metric} to search on")
        needed = workers_per_trial * cpus_per_worker
        if cluster_cpus(exact=True) < needed + TRIAL_CPU:
            raise GenimgError(f"a trial needs {needed} CPU(s) for its workers and {TRIAL_CPU} for its Tune actor; "
                              f"the cluster has {cluster_cpus(exact=True):g}: lower --workers-per-trial or --cpus-per-worker")
        fits = max(1, cluster_cpus() // needed)
        concurrent = min(max_concurrent or fits, fits, trials * space.grid_size)
        if max_concurrent and max_concurrent > fits:
            notes.append(f"max_concurrent lowered from {max_concurrent} to {fits}: a trial needs {needed} CPU(s) "
                         f"and the cluster has {cluster_cpus()}; the other trials queue")
        parent_run_id = find_parent_run(search) if resume else None
        parent = TrainingRun.existing(parent_run_id) if parent_run_id else TrainingRun(
            search, tags={"genimg.kind": "search", "genimg.search": search, "genimg.model": model_name,
                          "genimg.dataset": dataset_label})
        if not parent_run_id:
            parent.log_params({"search": {"trials": trials, "steps": steps, "metric": space.metric, "mode": space.mode,
                                          "max_concurrent": concurrent, "workers_per_trial": workers_per_trial,
                                          "space": json.dumps(space.space), "base": base}})
        else:
            parent.client.update_run(parent.run_id, status="RUNNING")
        shared = {
            "model_name": model_name, "sections": base, "shape_probe": probe, "data": data,
            "dataset_label": dataset_label, "count": count, "store": store.uri, "workers": workers_per_trial,
            "use_gpu": use_gpu, "cpus": cpus_per_worker, "max_failures": 1, "validation": validation,
            "parent_run_id": parent.run_id, "search": search,
            "env": {"MLFLOW_TRACKING_URI": tracking_uri(), "MLFLOW_EXPERIMENT_NAME": experiment_name(),
                    "GENIMG_STORE": store.uri,
                    "GENIMG_HOME": str(genimg_home()),
                    # lineage tags of the trial runs (see tracking.runs.lineage_tags)
                    **{k: os.environ[k] for k in ("GENIMG_FLOW_RUN_ID", "GENIMG_RAY_JOB") if os.environ.get(k)}},
        }
        # Tune saves its experiment state at most this often; a killed driver loses at most
        # this much bookkeeping (Tune's own default waits ≥ 10 s).
        os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "2")
        resources = {"CPU": TRIAL_CPU}
        trainable = tune.with_resources(tune.with_parameters(run_trial, shared=shared), resources)
        report_every = fixed.train.checkpoint_every
        # max_t past the last step: ASHA stops any trial that reaches max_t, which would kill a
        # finished trial before its run is closed in MLflow.
        scheduler = ASHAScheduler(time_attr="step", max_t=steps + 1, grace_period=report_every, reduction_factor=2)
        try:
            if resume:
                tuner = tune.Tuner.restore(f"{storage_path}/{search}", trainable, storage_filesystem=filesystem,
                                           resume_unfinished=True, resume_errored=False)
            else:
                tuner = tune.Tuner(
                    trainable,
                    param_space={"overrides": space.to_tune()},
                    tune_config=tune.TuneConfig(
                        metric=space.metric, mode=space.mode, scheduler=scheduler, num_samples=trials,
                        max_concurrent_trials=concurrent,
                        search_alg=BasicVariantGenerator(random_state=seed, max_concurrent=concurrent),
                    ),
                    run_config=tune.RunConfig(name=search, storage_path=storage_path, storage_filesystem=filesystem,
                                              failure_config=tune.FailureConfig(max_failures=0), verbose=0),
                )
            fit_started = time.perf_counter()
            grid = tuner.fit()
            fit_seconds = time.perf_counter() - fit_started
        except BaseException:
            parent.finish("KILLED")
            raise
        outcomes = collect_outcomes(grid, parent.run_id, space, steps, store)
    best = pick_best(outcomes, space.mode)
    if best is not None:
        parent.set_tags({"genimg.best.run_id": best.run_id or "", "genimg.best.trial": best.trial_id,
                         "genimg.best.config": json.dumps(best.config), "genimg.best.checkpoint": best.checkpoint or ""})
        parent.add_metrics(steps, {f"best_{space.metric}": float(best.metric)}, int(time.time() * 1000))  # type: ignore[arg-type]
    counts = {status: sum(o.status == status for o in outcomes) for status in ("completed", "early-stopped", "failed")}
    parent.set_tags({f"genimg.trials.{status}": str(n) for status, n in counts.items()})
    parent.finish("FINISHED" if best is not None else "FAILED")
    return SearchResult(search, parent.run_id, space.metric, space.mode, outcomes, best,
                        time.perf_counter() - started, fit_seconds, concurrent, notes)


def collect_outcomes(grid: Any, parent_run_id: str, space: SearchSpace, steps: int, store: Any) -> list[TrialOutcome]:
    """Each trial's status and last metric; early-stopped trials' runs are closed as KILLED."""
    from genimg.distributed.trainer import checkpoint_uri
    from genimg.tracking.runs import client

    mlflow = client()
    runs = child_runs(parent_run_id)
    outcomes = []
    for result in grid:
        metrics = result.metrics or {}
        found = TRIAL_ID_IN_PATH.search(Path(result.path).name)
        trial_id = str(metrics.get("trial_id") or (found.group(1) if found else Path(result.path).name))
        step = int(metrics.get("step", 0))
        run = runs.get(trial_id)
        if result.error is not None:
            status = "failed"
        elif step >= steps:
            status = "completed"
        else:
            status = "early-stopped"
        if run is not None:
            mlflow.set_tag(run.info.run_id, "genimg.trial.status", status)
            if run.info.status == "RUNNING":  # the trial's process was stopped by ASHA
                mlflow.set_terminated(run.info.run_id, status="KILLED")
        error = None
        if result.error is not None:
            text = str(result.error).strip()
            error = next((line for line in reversed(text.splitlines()) if "Error" in line), text.splitlines()[0] if text else "")
        value = metrics.get(space.metric)
        checkpoint = run.data.tags.get("genimg.checkpoint") if run is not None else None
        if not checkpoint and metrics.get("checkpoint_path"):  # a stopped trial's last checkpoint
            checkpoint = checkpoint_uri(store, str(metrics["checkpoint_path"]))
        outcomes.append(TrialOutcome(
            trial_id=trial_id, run_id=run.info.run_id if run is not None else None,
            config=dict(result.config.get("overrides", {})) if result.config else {}, status=status,
            metric=float(value) if value is not None else None, step=step,
            seconds=float(metrics.get("time_total_s", 0.0)), checkpoint=checkpoint, error=error,
        ))
    return sorted(outcomes, key=lambda o: o.trial_id)


def pick_best(outcomes: list[TrialOutcome], mode: str) -> TrialOutcome | None:
    """The best last value among completed trials (early-stopped ones only if none completed)."""
    for allowed in (("completed",), ("completed", "early-stopped")):
        scored = [o for o in outcomes if o.status in allowed and o.metric is not None]
        if scored:
            return (min if mode == "min" else max)(scored, key=lambda o: o.metric)  # type: ignore[arg-type,return-value]
    return None


__all__ = ["SearchResult", "SearchSpace", "TrialOutcome", "load_space", "run_trial", "tune_search"]
