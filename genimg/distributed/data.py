"""Each worker's share of the training records, read without loading what it does not need.

Store datasets: with at least as many Parquet shards as workers, worker r reads shards
r, r + W, …; with fewer shards (a small dataset), each worker reads them and keeps records
r, r + W, …. Raw sources are read once by the driver (the dataset handle) and shared through
Ray's object store."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from genimg.data.handle import InMemoryRecords, StoreShards, WorkerInput
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


def load_partition(shared: SharedInput, rank: int, world: int) -> tuple[np.ndarray, np.ndarray | None]:
    """(records, labels or None) of worker `rank` of `world`."""
    if isinstance(shared, SharedRecords):
        import ray

        loaded = ray.get(shared.ref)
        labels = loaded["labels"]
        return (np.ascontiguousarray(loaded["data"][rank::world]),
                np.ascontiguousarray(labels[rank::world]) if labels is not None else None)
    version = DatasetVersion(dict(shared.manifest), open_store(shared.store_uri))
    shards = version.shards(shared.splits)
    if len(shards) >= world:
        part = version.load_shards(shards[rank::world])
        return part.data, part.labels
    part = version.load_shards(shards)
    return (np.ascontiguousarray(part.data[rank::world]),
            np.ascontiguousarray(part.labels[rank::world]) if part.labels is not None else None)

