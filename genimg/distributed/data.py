"""Each worker's share of the training records, read without loading what it does not need.

Store datasets: with at least as many Parquet shards as workers, worker r reads shards
r, r + W, …; with fewer shards (a small dataset), each worker reads them and keeps records
r, r + W, …. Raw sources (builtin, paths) are read once by the driver and shared through Ray's
object store."""

from __future__ import annotations

from typing import Any

import numpy as np

from genimg.data.dataset import Dataset
from genimg.data.versions import DatasetVersion
from genimg.store import open_store


def store_spec(version: DatasetVersion, splits: tuple[str, ...] = ("train",)) -> dict[str, Any]:
    return {"type": "store", "store": version.store.uri, "manifest": version.manifest, "splits": list(splits)}


def object_spec(dataset: Dataset) -> dict[str, Any]:
    """A raw source's records (and labels) in Ray's object store, read once by the driver."""
    import ray

    return {"type": "object", "ref": ray.put({"data": dataset.data, "labels": dataset.labels})}


def load_partition(spec: dict[str, Any], rank: int, world: int) -> tuple[np.ndarray, np.ndarray | None]:
    """(records, labels or None) of worker `rank` of `world`."""
    if spec["type"] == "object":
        import ray

        shared = ray.get(spec["ref"])
        labels = shared["labels"]
        return (np.ascontiguousarray(shared["data"][rank::world]),
                np.ascontiguousarray(labels[rank::world]) if labels is not None else None)
    version = DatasetVersion(spec["manifest"], open_store(spec["store"]))
    shards = [shard for split in spec["splits"] for shard in version.manifest["shards"][split]]
    if len(shards) >= world:
        part = version.load_shards(shards[rank::world])
        return part.data, part.labels
    part = version.load_shards(shards)
    return (np.ascontiguousarray(part.data[rank::world]),
            np.ascontiguousarray(part.labels[rank::world]) if part.labels is not None else None)


def partition_sizes(total: int, world: int) -> list[int]:
    return [len(range(rank, total, world)) for rank in range(world)]
