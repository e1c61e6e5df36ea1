"""Each worker's share of the training records, read without loading what it does not need.

Store datasets: with at least as many Parquet shards as workers, worker r reads shards
r, r + W, …; with fewer shards (a small dataset), each worker reads them and keeps records
r, r + W, …. Streamed store datasets (train.data_mode) are read the same way, but shard by shard
as the steps need them, in an order drawn per epoch (genimg.data.streaming). Raw sources are read
once by the driver (the dataset handle) and shared through Ray's object store."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from genimg.data.handle import InMemoryRecords, StoreShards, WorkerInput
from genimg.data.streaming import RecordStream
from genimg.data.versions import DatasetVersion
from genimg.store import open_store


@dataclass(frozen=True)
class SharedRecords:
    """Records in Ray's object store: {"data": array, "labels": array | None}."""

    ref: Any


SharedInput = StoreShards | SharedRecords


def share(worker_input: WorkerInput) -> SharedInput:
    """What workers are handed: store shards as they are, records put once in Ray's object store."""
    if isinstance(worker_input, InMemoryRecords):
        import ray

        return SharedRecords(ray.put({"data": worker_input.data, "labels": worker_input.labels}))
    return worker_input


def version_of(shards: StoreShards) -> DatasetVersion:
    return DatasetVersion(dict(shards.manifest), open_store(shards.store_uri))


def stream_partition(
    shared: StoreShards, rank: int, world: int, *, labelled_only: bool, options: dict[str, int]
) -> RecordStream:
    """Worker `rank` of `world`'s records of a streamed store dataset (`options`:
    TrainConfig.stream_options())."""
    return RecordStream(
        version_of(shared), shared.splits, rank=rank, world=world, labelled_only=labelled_only, **options
    )


def first_records(shared: SharedInput, limit: int) -> np.ndarray:
    """Up to `limit` records, in order: a streamed dataset reads only the shards that hold them."""
    if not (isinstance(shared, StoreShards) and shared.streaming):
        return load_partition(shared, 0, 1)[0][:limit]
    version = version_of(shared)
    chosen, total = [], 0
    for shard in version.shards(shared.splits):
        if total >= limit:
            break
        chosen.append(shard)
        total += int(shard["records"])
    return version.load_shards(chosen).data[:limit]


def load_partition(shared: SharedInput, rank: int, world: int) -> tuple[np.ndarray, np.ndarray | None]:
    """(records, labels or None) of worker `rank` of `world`."""
    if isinstance(shared, SharedRecords):
        import ray

        loaded = ray.get(shared.ref)
        labels = loaded["labels"]
        return (
            np.ascontiguousarray(loaded["data"][rank::world]),
            np.ascontiguousarray(labels[rank::world]) if labels is not None else None,
        )
    version = version_of(shared)
    shards = version.shards(shared.splits)
    if len(shards) >= world:
        part = version.load_shards(shards[rank::world])
        return part.data, part.labels
    part = version.load_shards(shards)
    return (
        np.ascontiguousarray(part.data[rank::world]),
        np.ascontiguousarray(part.labels[rank::world]) if part.labels is not None else None,
    )
