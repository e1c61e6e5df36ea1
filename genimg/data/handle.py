"""One dataset, resolved once per command: `resolve_dataset("NAME[@VERSION]" | SOURCE)`.

The handle knows what the data is (pinned reference, kind, record shape, counts per split,
lineage) and hands out what each floor needs: records of a split in memory, a shape probe to
fit a model's config to, and the input of training workers (a store version's shards, read by
each worker, or a raw source's records, read here once). A raw source is read once, here; a
store version's records are read only when asked for.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from genimg.data.dataset import DataKind, Dataset, Rejection
from genimg.data.readers import read_source
from genimg.data.sources import check_pinned, is_store_ref, split_pinned
from genimg.data.versions import (
    MANIFEST_FILE,
    SPLIT_FRACTIONS,
    DatasetVersion,
    SplitPlan,
    plan_splits,
    resolve_version,
    version_prefix,
)
from genimg.errors import DataError
from genimg.store import ObjectStore, sha256_hex

RAW_LINEAGE = "none (raw source)"
# train.data_mode=auto streams a store dataset whose train split holds this many bytes or more
# (uint8 records, as decoded): below it every worker's share fits in memory several times over.
STREAM_THRESHOLD_BYTES = 2 * 1024**3
DataMode = Literal["auto", "memory", "stream"]  # TrainConfig.data_mode


@dataclass(frozen=True)
class StoreShards:
    """Worker input: the Parquet shards of `splits` of a store version; each worker reads its own,
    all before the first step, or (`streaming`) as its steps need them."""

    store_uri: str
    manifest: Mapping[str, Any]
    splits: tuple[str, ...]
    streaming: bool = False


@dataclass(frozen=True)
class InMemoryRecords:
    """Worker input: records already read (a raw source's split), shared with the workers."""

    data: np.ndarray
    labels: np.ndarray | None


WorkerInput = StoreShards | InMemoryRecords


@dataclass(frozen=True)
class DatasetHandle:
    given: str  # as the user wrote it
    ref: str  # pinned: NAME@VERSION, or SOURCE@VERSION for a raw source
    version: str
    kind: DataKind
    record_shape: tuple[int, ...]
    counts: Mapping[str, int]  # records per split
    location: str  # the version's folder in the store, or the raw source
    class_names: tuple[str, ...] | None = None
    rejected: tuple[Rejection, ...] = ()
    stored: DatasetVersion | None = field(default=None, repr=False)
    raw: Dataset | None = field(default=None, repr=False)
    plan: SplitPlan | None = field(default=None, repr=False)

    @property
    def in_store(self) -> bool:
        return self.stored is not None

    def count(self, splits: tuple[str, ...] = ("train",)) -> int:
        return sum(int(self.counts.get(split, 0)) for split in splits)

    def lineage(self) -> str:
        """The sha256 of the version's manifest: what exactly was trained or measured on."""
        if self.stored is None:
            return RAW_LINEAGE
        key = version_prefix(self.stored.name, self.stored.version) + MANIFEST_FILE
        return sha256_hex(self.stored.store.get_bytes(key))

    def load(self, split: str) -> Dataset:
        """The records of one split (a store version's shards are read now)."""
        if self.stored is not None:
            return self.stored.load((split,))
        assert self.raw is not None and self.plan is not None
        return self.plan.split(self.raw, split)

    def load_splits(self, splits: tuple[str, ...] = ("train",)) -> Dataset:
        """The records of `splits` together, labelled with the pinned reference."""
        self.check_not_empty(splits)
        if self.stored is not None:
            return self.stored.load(splits)
        parts = [self.load(split) for split in splits]
        records = np.concatenate([part.data for part in parts])
        labels = [part.labels for part in parts if part.labels is not None]
        return Dataset(
            kind=self.kind,
            data=records,
            source=self.ref,
            labels=np.concatenate(labels) if len(labels) == len(parts) else None,  # every part labelled
            class_names=list(self.class_names) if self.class_names else None,
            rejected=list(self.rejected),
        )

    def check_not_empty(self, splits: tuple[str, ...]) -> None:
        """Refuse, naming the dataset and the splits, when `splits` hold no records."""
        if self.count(splits) == 0:
            shares = ", ".join(f"{k} {v:.0%}" for k, v in SPLIT_FRACTIONS.items())
            raise DataError(
                f"{self.given}: its {sum(self.counts.values())} record(s) leave none in the "
                f"{'+'.join(splits)} split (records are split {shares} by content hash)"
            )

    def shape_probe(self) -> Dataset:
        """A Dataset with the training records' shape and labels (no records read from the store),
        to fit a model's config to the data; refused when the train split is empty."""
        self.check_not_empty(("train",))
        if self.stored is None:
            return self.load_splits(("train",))
        # The labels alone (one Parquet column) when there are any: a conditional model's class count.
        labels = self.stored.load_labels() if self.stored.labelled else None
        rows = 1 if labels is None else len(labels)
        zeros = np.broadcast_to(np.zeros((1, *self.record_shape), np.uint8), (rows, *self.record_shape))
        return Dataset(
            kind=self.kind,
            data=zeros,
            source=self.ref,
            labels=labels,
            class_names=list(self.class_names) if self.class_names else None,
        )

    def split_bytes(self, splits: tuple[str, ...] = ("train",)) -> int:
        """The bytes the records of `splits` take in memory."""
        return self.count(splits) * int(np.prod(self.record_shape))

    def streams(self, data_mode: DataMode) -> bool:
        """Whether training workers stream this dataset (train.data_mode): only a store version's
        shards can be streamed; "auto" streams from STREAM_THRESHOLD_BYTES of train records on."""
        if data_mode == "stream" and self.stored is None:
            raise DataError(
                f"{self.given}: train.data_mode=stream reads a store dataset's shards; ingest the "
                "source first (genimg ingest SOURCE --name NAME) or use train.data_mode=memory"
            )
        if data_mode == "auto":
            return self.stored is not None and self.split_bytes() >= STREAM_THRESHOLD_BYTES
        return data_mode == "stream"

    def worker_input(self, splits: tuple[str, ...] = ("train",), data_mode: DataMode = "memory") -> WorkerInput:
        streaming = self.streams(data_mode)  # refuses to stream a raw source
        if self.stored is not None:
            return StoreShards(self.stored.store.uri, self.stored.manifest, splits, streaming)
        records = self.load_splits(splits)
        return InMemoryRecords(records.data, records.labels)


def resolve_dataset(source: str, kind: DataKind | None = None, *, store: ObjectStore | None = None) -> DatasetHandle:
    """A store dataset (NAME or NAME@VERSION: its manifest is read) or a raw source (read once
    and split in memory by the record-hash rule of `genimg ingest`, so it gets the same version)."""
    if is_store_ref(source):
        version = resolve_version(source, store)
        if kind is not None and version.kind != kind:
            raise DataError(f"{version.ref} holds {version.kind}, not {kind}")
        return DatasetHandle(
            given=source,
            ref=version.ref,
            version=version.version,
            kind=version.kind,
            record_shape=version.record_shape,
            counts=version.counts,
            location=version.uri,
            class_names=version.class_names,
            stored=version,
        )
    base, pinned = split_pinned(source)
    handle = handle_of(read_source(base, kind), base, given=source)
    check_pinned(base, pinned, handle.version)
    return handle


def handle_of(dataset: Dataset, source: str, *, given: str | None = None) -> DatasetHandle:
    """Records already in memory as a handle, split by the record-hash rule of `genimg ingest`
    (so they get the version ingesting them would give); `source` names them (SOURCE@VERSION)."""
    plan = plan_splits(dataset)
    return DatasetHandle(
        given=given or source,
        ref=f"{source}@{plan.version}",
        version=plan.version,
        kind=dataset.kind,
        record_shape=dataset.record_shape,
        counts={split: len(rows) for split, rows in plan.by_split.items()},
        location=source,
        class_names=tuple(dataset.class_names) if dataset.class_names else None,
        rejected=tuple(dataset.rejected),
        raw=dataset,
        plan=plan,
    )


__all__ = [
    "STREAM_THRESHOLD_BYTES",
    "DataMode",
    "DatasetHandle",
    "InMemoryRecords",
    "StoreShards",
    "WorkerInput",
    "handle_of",
    "resolve_dataset",
]
