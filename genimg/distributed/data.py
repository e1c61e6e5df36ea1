"""Each worker's share of the training records, read without loading what it does not need.

Store datasets: with at least as many Parquet shards as workers, worker r reads shards
r, r + W, …; with fewer shards (a small dataset), each worker reads them and keeps records
r, r + W, …. Raw sources (builtin, paths) are read once by the driver and shared through Ray's
object store."""

from __future__ import annotations

from typing import Any

import numpy as np

from genimg.data.versions import DatasetVersion
from genimg.store import open_store


def store_spec(version: DatasetVersion, splits: tuple[str, ...] = ("train",)) -> dict[str, Any]:
    return {"type": "store", "store": version.store.uri, "manifest": version.manifest, "splits": list(splits)}


def load_partition(spec: dict[str, Any], rank: int, world: int) -> np.ndarray:
    if spec["type"] == "object":
        import ray

        records = ray.get(spec["ref"])
        return np.ascontiguousarray(records[rank::world])
    version = DatasetVersion(spec["manifest"], open_store(spec["store"]))
    shards = [shard for split in spec["splits"] for shard in version.manifest["shards"][split]]
    if len(shards) >= world:
        return version.load_shards(shards[rank::world]).data
    return np.ascontiguousarray(version.load_shards(shards).data[rank::world])


def partition_sizes(total: int, world: int) -> list[int]:
    return [len(range(rank, total, world)) for rank in range(world)]
