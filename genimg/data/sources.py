"""What `--dataset` accepts: a dataset in the store (NAME or NAME@VERSION) or any raw source.

A run records its data pinned: NAME@VERSION for the store, SOURCE@VERSION for a raw source (the
version `genimg ingest` would give its content). Both are accepted back wherever a dataset is;
a pinned raw source whose content has changed since is refused, naming both versions.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from genimg.data.dataset import DataKind, Dataset
from genimg.data.moving_mnist import MOVING_MNIST_PREFIX
from genimg.data.readers import read_source
from genimg.data.versions import (
    SPLIT_FRACTIONS,
    DatasetVersion,
    SplitPlan,
    looks_like_ref,
    plan_splits,
    resolve_version,
)
from genimg.errors import DataError
from genimg.store import ObjectStore


def is_store_ref(source: str) -> bool:
    """builtin:…, moving-mnist:…, URIs and existing local paths are raw sources; NAME[@VERSION]
    names the store."""
    base, _ = split_pinned(source)  # a local folder `faces` pinned as faces@VERSION stays raw
    generated = base.startswith(("builtin:", MOVING_MNIST_PREFIX))
    raw = generated or "://" in base or Path(base).expanduser().exists()
    return not raw and looks_like_ref(source)


PINNED_RAW = re.compile(r"(?P<source>.+)@(?P<version>[0-9a-f]{12})")


def split_pinned(source: str) -> tuple[str, str | None]:
    """A raw source and the version it is pinned to: 'builtin:digits@291043e66cae' →
    ('builtin:digits', '291043e66cae'); anything unpinned (or a path that exists as written) → (source, None)."""
    found = PINNED_RAW.fullmatch(source)
    if found is None or Path(source).expanduser().exists():
        return source, None
    return found["source"], found["version"]


def check_pinned(source: str, pinned: str | None, actual: str) -> None:
    if pinned is not None and pinned != actual:
        raise DataError(f"{source}@{pinned}: the source's content changed since (it is now {source}@{actual})")


def dataset_location(ref: str, store: ObjectStore | None = None) -> str:
    """Where a pinned dataset lives: its version's folder in the store, or the raw source."""
    if is_store_ref(ref):
        from genimg.data.versions import parse_ref, version_prefix
        from genimg.store import open_store

        name, version = parse_ref(ref)
        return (store or open_store()).uri_for(version_prefix(name, version or "latest").rstrip("/"))
    return split_pinned(ref)[0]


def open_dataset(
    source: str,
    kind: DataKind | None = None,
    *,
    splits: tuple[str, ...] = ("train",),
    store: ObjectStore | None = None,
) -> Dataset:
    """`splits` of a dataset version in the store, or of a raw source split in memory by the
    same record-hash rule (so training never sees the records evaluation is measured on)."""
    if not is_store_ref(source):
        source, pinned = split_pinned(source)
        dataset = read_source(source, kind)
        plan = plan_splits(dataset)
        check_pinned(source, pinned, plan.version)
        parts = [plan.split(dataset, split) for split in splits]
        records = np.concatenate([part.data for part in parts])
        if len(records) == 0:
            raise DataError(
                f"{source}: its {len(dataset)} record(s) leave none in the {'+'.join(splits)} split "
                f"(records are split {', '.join(f'{k} {v:.0%}' for k, v in SPLIT_FRACTIONS.items())} by content hash)"
            )
        labels = [part.labels for part in parts]
        return Dataset(
            kind=dataset.kind, data=records, source=f"{source}@{plan.version}",
            labels=np.concatenate(labels) if all(label is not None for label in labels) else None,  # type: ignore[arg-type]
            class_names=dataset.class_names, rejected=dataset.rejected,
        )
    version = resolve_version(source, store)
    check_kind(version, kind)
    return version.load(splits)


def check_kind(version: DatasetVersion, kind: DataKind | None) -> None:
    if kind is not None and version.kind != kind:
        raise DataError(f"{version.ref} holds {version.kind}, not {kind}")


@dataclass
class SplitSource:
    """One dataset version, split as `genimg ingest` splits it: a store version, or a raw
    source split in memory by the same record-hash rule (so it gets the same version id)."""

    ref: str  # NAME@VERSION, or SOURCE@VERSION for a raw source
    version: str
    kind: DataKind
    stored: DatasetVersion | None = None
    raw: Dataset | None = None
    plan: SplitPlan | None = None

    def load(self, split: str) -> Dataset:
        if self.stored is not None:
            return self.stored.load((split,))
        assert self.raw is not None and self.plan is not None
        return self.plan.split(self.raw, split)

    @property
    def record_shape(self) -> tuple[int, ...]:
        if self.stored is not None:
            return tuple(int(s) for s in self.stored.manifest["record_shape"])
        assert self.raw is not None
        return self.raw.record_shape


def open_splits(source: str, kind: DataKind | None = None, *, store: ObjectStore | None = None) -> SplitSource:
    if is_store_ref(source):
        version = resolve_version(source, store)
        check_kind(version, kind)
        return SplitSource(version.ref, version.version, version.kind, stored=version)
    source, pinned = split_pinned(source)
    dataset = read_source(source, kind)
    plan = plan_splits(dataset)
    check_pinned(source, pinned, plan.version)
    return SplitSource(f"{source}@{plan.version}", plan.version, dataset.kind, raw=dataset, plan=plan)
