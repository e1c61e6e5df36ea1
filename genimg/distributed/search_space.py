"""What a Ray Tune search tries: its space, from `tune-<model>.yaml` (packaged in
genimg/configs/, or a file given with --space), read and checked before Ray starts, and the
configs of its trials (the fixed sections with each trial's sampled values).

A space file names the metric a search ranks trials by (a val_ metric the model reports at each
checkpoint), its mode (min | max) and, per `section.key` of the model and train configs, one
distribution: `{loguniform: [low, high]}`, `{uniform: …}`, `{randint: …}`, `{choice: [values]}`
or `{grid: [values]}` (every grid value is tried, × --trials, as in Tune).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from genimg.config import read_yaml_mapping
from genimg.configs import available_configs, locate_config, packaged_config
from genimg.data.dataset import Dataset
from genimg.errors import ConfigError
from genimg.models.base import model_spec
from genimg.training.config import TrainConfig
from genimg.training.run import RunConfig, merge_sections, resolve_run_config

DISTRIBUTIONS = ("loguniform", "uniform", "randint", "choice", "grid")
RANGES = ("loguniform", "uniform", "randint")  # the distributions that take [low, high]
REPORTS_PER_TRIAL = 6  # checkpoint reports (and so ASHA decision points) in a trial's budget


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

        # The arguments are the space file's YAML values, checked when the file was read.
        makers: dict[str, Callable[[Sequence[Any]], object]] = {
            "loguniform": lambda a: tune.loguniform(*a),
            "uniform": lambda a: tune.uniform(*a),
            "randint": lambda a: tune.randint(*a),
            "choice": tune.choice,
            "grid": tune.grid_search,
        }
        return {key: makers[name](args) for key, spec in self.space.items() for name, args in spec.items()}


def space_file(model_name: str, path: str | Path | None) -> Path:
    """The packaged `tune-<model>.yaml`, or the given file (a packaged preset's name works too)."""
    if path is None:
        return packaged_config(f"tune-{model_name}.yaml")
    try:
        return locate_config(path)
    except ConfigError:
        spaces = ", ".join(name for name in available_configs() if name.startswith("tune-")) or "none"
        raise ConfigError(f"search space file not found: {path} (packaged spaces: {spaces})") from None


def parse_distribution(where: str, spec: Any) -> dict[str, Any]:
    if not isinstance(spec, dict) or len(spec) != 1 or next(iter(spec)) not in DISTRIBUTIONS:
        raise ConfigError(f"{where}: expected one of {', '.join(DISTRIBUTIONS)}, e.g. {{loguniform: [1e-4, 1e-3]}}")
    name, args = next(iter(spec.items()))
    if not isinstance(args, list) or not args or (name in RANGES and len(args) != 2):
        raise ConfigError(f"{where}: {name} takes {'[low, high]' if name in RANGES else 'a list of values'}")
    if name == "loguniform" and not 0 < args[0] < args[1]:
        raise ConfigError(f"{where}: loguniform needs 0 < low < high, got {args}")
    return {name: args}


def load_space(model_name: str, path: str | Path | None = None) -> SearchSpace:
    """A search space file (default: the packaged tune-<model>.yaml), checked key by key."""
    path = space_file(model_name, path)
    loaded = read_yaml_mapping(path, "search space file")
    if not isinstance(loaded.get("space"), dict) or not loaded["space"]:
        raise ConfigError(f"{path}: expected a mapping with metric, mode and a non-empty space")
    mode = loaded.get("mode", "min")
    if mode not in ("min", "max"):
        raise ConfigError(f"{path}: mode must be min or max, got {mode!r}")
    space = {key: parse_distribution(f"{path}: space.{key}", spec) for key, spec in loaded["space"].items()}
    return SearchSpace(str(loaded.get("metric", "")), mode, space, str(path))


def check_space_keys(model_name: str, space: SearchSpace) -> None:
    """Every searched key names a real config field (values are checked per trial)."""
    fields = {
        "model": {f.name for f in dataclasses.fields(model_spec(model_name).config_cls)},
        "train": {f.name for f in dataclasses.fields(TrainConfig)},
    }
    for key in space.space:
        section, _, name = key.partition(".")
        if section not in fields or name not in fields[section]:
            known = ", ".join(f"{s}.{n}" for s in fields for n in sorted(fields[s]))
            raise ConfigError(f"{space.source}: unknown search key {key!r} (known: {known})")


def check_space_metric(model_name: str, space: SearchSpace) -> None:
    """The metric is one the model reports on its val split at each checkpoint."""
    if not space.metric.startswith("val_"):
        raise ConfigError(
            f"{space.source}: metric must be a validation metric reported in training "
            f"(val_nll_bound for vae/rvae, val_fid for any image model), got {space.metric!r}"
        )
    reported = model_spec(model_name).validation_metrics
    if space.metric in reported:
        return
    reports = " and ".join(reported)
    if space.metric == "val_nll_bound":
        raise ConfigError(f"val_nll_bound needs a likelihood model; {model_name} reports {reports}")
    if space.metric == "val_fid":
        raise ConfigError(f"val_fid is for image models; {model_name} reports {reports}")
    raise ConfigError(f"{space.source}: {model_name} reports {reports} in training, not {space.metric!r}")


def check_space(model_name: str, space: SearchSpace) -> None:
    check_space_metric(model_name, space)
    check_space_keys(model_name, space)


def split_overrides(overrides: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """A trial's sampled values ({"train.lr": 0.1, …}) as config sections."""
    sections: dict[str, dict[str, Any]] = {}
    for key, value in overrides.items():
        section, _, name = key.partition(".")
        sections.setdefault(section, {})[name] = list(value) if isinstance(value, tuple) else value
    return sections


def fixed_sections(
    model_name: str, sections: Mapping[str, Mapping[str, Any]], steps: int
) -> tuple[dict[str, dict[str, Any]], RunConfig]:
    """The fixed part of every trial's config (`steps`, reports spread over them), checked."""
    every = max(1, steps // REPORTS_PER_TRIAL)
    base = merge_sections({"train": {"steps": steps, "checkpoint_every": every, "log_every": every}}, sections)
    base["train"]["steps"] = steps
    return base, resolve_run_config(model_name, base)


def compact_probe(probe: Dataset) -> Dataset:
    """What trials fit their configs to, small enough to send along with every trial: `probe`'s
    record shape and class layout (one zero record per label value), none of its records."""
    labels = None if probe.labels is None else np.unique(probe.labels)
    data = np.zeros((1 if labels is None else len(labels), *probe.record_shape), np.uint8)
    return Dataset(kind=probe.kind, data=data, source=probe.source, labels=labels, class_names=probe.class_names)


def trial_run_config(
    model_name: str, fixed: Mapping[str, Mapping[str, Any]], overrides: Mapping[str, Any], shape_probe: Dataset
) -> RunConfig:
    """One trial's config: the fixed sections with its sampled values, fitted to the data."""
    return resolve_run_config(model_name, merge_sections(fixed, split_overrides(overrides)), shape_probe)


__all__ = [
    "DISTRIBUTIONS",
    "REPORTS_PER_TRIAL",
    "SearchSpace",
    "check_space",
    "check_space_keys",
    "check_space_metric",
    "compact_probe",
    "fixed_sections",
    "load_space",
    "split_overrides",
    "trial_run_config",
]
