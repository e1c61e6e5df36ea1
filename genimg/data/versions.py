"""Versioned, immutable datasets in the object store (DESIGN.md §4).

    datasets/<name>/<version>/manifest.json
    datasets/<name>/<version>/<split>/part-NNNNN.parquet

A record is a raw uint8 array of the dataset's fixed shape, stored as fixed-size binary in
Parquet with its content hash (`id`) and label (−1 if none). VERSION is a hash of the sorted
(record hash, label) pairs and the preprocessing settings: the same content always gets the same
version, whatever the source path or the store. Splits are decided by each record's hash, so
adding records never moves an old one to another split. The manifest is published last and
create-if-absent: a version without a manifest does not exist for readers, and concurrent
ingests of the same content write identical shards and one manifest.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

import numpy as np

from genimg.data.dataset import DataKind, Dataset, Rejection
from genimg.data.normalize import POLICY_ID, RESIZE_POLICY_ID, ResizePolicy
from genimg.errors import DataError, GenimgError
from genimg.store import DiskFull, ObjectStore, StoreError, open_store, sha256_hex
from genimg.version import __version__

MANIFEST_FORMAT = "genimg.dataset/1"
MANIFEST_FILE = "manifest.json"
# datasets/<name>/CURRENT.json: the version `NAME` alone means, set by each ingest (a re-ingest of
# an older version's content makes that version current again); without it, the newest version.
CURRENT_FILE = "CURRENT.json"
SPLIT_FRACTIONS = {"train": 0.85, "val": 0.05, "test": 0.10}
SHARD_BYTES = 64 * 1024 * 1024
NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
VERSION_PATTERN = re.compile(r"[0-9a-f]{12}")
Progress = Callable[[int, int], None]


def check_name(name: str) -> str:
    if not NAME_PATTERN.fullmatch(name):
        raise DataError(
            f"invalid dataset name {name!r}: use 1–63 lowercase letters, digits, '-' and '_', "
            "starting with a letter or digit"
        )
    return name


def parse_ref(ref: str) -> tuple[str, str | None]:
    """'name' or 'name@version' → (name, version or None)."""
    name, _, version = ref.partition("@")
    check_name(name)
    if version and not VERSION_PATTERN.fullmatch(version):
        raise DataError(f"invalid dataset version {version!r} in {ref!r} (12 hex digits)")
    return name, version or None


def looks_like_ref(text: str) -> bool:
    name, _, version = text.partition("@")
    return bool(NAME_PATTERN.fullmatch(name)) and (not version or bool(VERSION_PATTERN.fullmatch(version)))


def record_hashes(data: np.ndarray) -> list[str]:
    shape_tag = "x".join(map(str, data.shape[1:])).encode()
    return [hashlib.sha256(shape_tag + record.tobytes()).hexdigest() for record in data]


def split_of(record_hash: str) -> str:
    position = int(record_hash[:13], 16) / float(16**13)  # uniform in [0, 1)
    cumulative = 0.0
    for split, fraction in SPLIT_FRACTIONS.items():
        cumulative += fraction
        if position < cumulative:
            return split
    return "test"


def preprocessing_of(dataset: Dataset, resize: ResizePolicy | None = None) -> dict[str, Any]:
    """The settings that, with the records, make the version. Without `resize` exactly today's
    record, so existing versions keep their ids."""
    record: dict[str, Any] = {
        "policy": POLICY_ID,
        "kind": dataset.kind,
        "record_shape": list(dataset.record_shape),
        "splits": SPLIT_FRACTIONS,
    }
    if resize is None:
        return record
    side = resize.resolution
    if dataset.record_shape[-2:] != (side, side):
        height, width = dataset.record_shape[-2:]
        raise DataError(
            f"{dataset.source}: records are {height}x{width}, not the {side}x{side} of "
            f"--resolution {side} (read it with the same resize policy)"
        )
    return {**record, "policy": RESIZE_POLICY_ID, "resize": resize.record()}


def version_of(pairs: list[tuple[str, int]], preprocessing: dict[str, Any]) -> str:
    digest = hashlib.sha256(json.dumps(preprocessing, sort_keys=True).encode())
    for record_hash, label in sorted(pairs):
        digest.update(f"{record_hash}:{label}\n".encode())
    return digest.hexdigest()[:12]


def version_prefix(name: str, version: str) -> str:
    return f"datasets/{name}/{version}/"


@dataclass
class IngestResult:
    name: str
    version: str
    uri: str
    counts: dict[str, int]
    rejected: list[Rejection]
    duplicates: int
    reused: bool
    uploaded_objects: int = 0
    uploaded_bytes: int = 0
    record_shape: tuple[int, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "uri": self.uri,
            "counts": self.counts,
            "rejected": [r.as_dict() for r in self.rejected],
            "duplicates": self.duplicates,
            "reused": self.reused,
            "uploaded_objects": self.uploaded_objects,
            "uploaded_bytes": self.uploaded_bytes,
        }


def shard_bytes(ids: list[str], labels: np.ndarray, records: np.ndarray) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    record_size = int(np.prod(records.shape[1:]))
    flat = np.ascontiguousarray(records).reshape(-1)
    data = pa.FixedSizeBinaryArray.from_buffers(pa.binary(record_size), len(records), [None, pa.py_buffer(flat)])
    table = pa.table({"id": pa.array(ids, pa.string()), "label": pa.array(labels, pa.int64()), "data": data})
    sink = io.BytesIO()
    # No statistics or timestamps that vary between runs: the same records give the same bytes.
    pq.write_table(table, sink, compression="zstd", write_statistics=False)
    return sink.getvalue()


@dataclass
class SplitPlan:
    """How a dataset's records become a version: unique records (first seen kept) by split."""

    hashes: list[str]
    labels: np.ndarray
    by_split: dict[str, list[int]]
    duplicates: int
    preprocessing: dict[str, Any]
    version: str

    def split(self, dataset: Dataset, split: str) -> Dataset:
        chosen = np.asarray(self.by_split[split], dtype=np.int64)
        return Dataset(
            kind=dataset.kind,
            data=dataset.data[chosen],
            source=dataset.source,
            labels=dataset.labels[chosen] if dataset.labels is not None else None,
            class_names=dataset.class_names,
        )


def plan_splits(dataset: Dataset, resize: ResizePolicy | None = None) -> SplitPlan:
    """The version and splits `ingest_dataset` gives `dataset`, computed without a store.
    `resize`: the policy `dataset` was read with (read_source's), if any."""
    hashes = record_hashes(dataset.data)
    labels = dataset.labels if dataset.labels is not None else np.full(len(dataset), -1, np.int64)
    first_seen: dict[str, int] = {}
    for index, record_hash in enumerate(hashes):
        first_seen.setdefault(record_hash, index)
    keep = sorted(first_seen.values(), key=lambda i: hashes[i])
    preprocessing = preprocessing_of(dataset, resize)
    by_split: dict[str, list[int]] = {split: [] for split in SPLIT_FRACTIONS}
    for index in keep:
        by_split[split_of(hashes[index])].append(index)
    return SplitPlan(
        hashes=hashes,
        labels=labels,
        by_split=by_split,
        duplicates=len(dataset) - len(keep),
        preprocessing=preprocessing,
        version=version_of([(hashes[i], int(labels[i])) for i in keep], preprocessing),
    )


def ingest_dataset(
    dataset: Dataset,
    name: str,
    *,
    store: ObjectStore | None = None,
    progress: Progress | None = None,
    resize: ResizePolicy | None = None,
) -> IngestResult:
    """Publish `dataset` as a version of `name` (no-op if that version already exists).
    `resize`: the policy `dataset` was read with (read_source's), recorded in the version.
    A disk that fills on the way says what `name` means still (its manifest is written last)."""
    check_name(name)
    store = store or open_store()
    try:
        return publish_version(dataset, name, store=store, progress=progress, resize=resize)
    except DiskFull as full:
        try:
            intact = f"{name} still means {resolve_version(name, store).ref}, which is intact"
        except GenimgError:
            intact = f"no version of {name} was published"
        raise full.saying(intact) from full


def publish_version(
    dataset: Dataset,
    name: str,
    *,
    store: ObjectStore,
    progress: Progress | None = None,
    resize: ResizePolicy | None = None,
) -> IngestResult:
    """ingest_dataset's work: the shards that are not in the store yet, then the manifest."""
    plan = plan_splits(dataset, resize)
    hashes, labels, by_split = plan.hashes, plan.labels, plan.by_split
    duplicates, preprocessing, version = plan.duplicates, plan.preprocessing, plan.version
    prefix = version_prefix(name, version)
    # A killed ingest of this version may have left half-written shards in a local store.
    store.remove_stale_temporaries(prefix)
    counts = {split: len(indices) for split, indices in by_split.items()}
    result = IngestResult(
        name,
        version,
        store.uri_for(prefix.rstrip("/")),
        counts,
        list(dataset.rejected),
        duplicates,
        reused=True,
        record_shape=dataset.record_shape,
    )
    if store.exists(prefix + MANIFEST_FILE):
        make_current(store, name, version)
        return result
    result.reused = False
    record_size = int(np.prod(dataset.record_shape))
    per_shard = max(1, SHARD_BYTES // record_size)
    shards: dict[str, list[dict[str, Any]]] = {}
    total_shards = sum(max(1, -(-n // per_shard)) for n in counts.values() if n) or 1
    done = 0
    for split, indices in by_split.items():
        shards[split] = []
        for number, start in enumerate(range(0, len(indices), per_shard)):
            chosen = np.asarray(indices[start : start + per_shard])
            payload = shard_bytes([hashes[i] for i in chosen], labels[chosen], dataset.data[chosen])
            key = f"{prefix}{split}/part-{number:05d}.parquet"
            digest = sha256_hex(payload)
            existing = store.info(key)
            if existing is None or existing.sha256 != digest:
                store.put_bytes(key, payload)
                result.uploaded_objects += 1
                result.uploaded_bytes += len(payload)
            shards[split].append(
                {"key": key[len(prefix) :], "records": len(chosen), "sha256": digest, "bytes": len(payload)}
            )
            done += 1
            if progress is not None:
                progress(done, total_shards)
    manifest = {
        "format": MANIFEST_FORMAT,
        "name": name,
        "version": version,
        "kind": dataset.kind,
        "record_shape": list(dataset.record_shape),
        "dtype": "uint8",
        "counts": counts,
        "shards": shards,
        "labels": dataset.labels is not None,
        "class_names": dataset.class_names,
        "source": dataset.source,
        "preprocessing": preprocessing,
        "rejected": [r.as_dict() for r in dataset.rejected],
        "duplicates": duplicates,
        # Microseconds: "latest" is decided by this, and versions can come within one second.
        "created_at": datetime.now(UTC).isoformat(timespec="microseconds"),
        "genimg_version": __version__,
    }
    payload = json.dumps(manifest, indent=1).encode()
    if store.publish(prefix + MANIFEST_FILE, payload):
        result.uploaded_objects += 1
        result.uploaded_bytes += len(payload)
    make_current(store, name, version)
    return result


def make_current(store: ObjectStore, name: str, version: str) -> None:
    """Point `name` (without @VERSION) at `version`: the one ingested last."""
    record = {"version": version, "time": datetime.now(UTC).isoformat(timespec="microseconds")}
    store.put_bytes(f"datasets/{name}/{CURRENT_FILE}", json.dumps(record).encode())


def current_version(store: ObjectStore, name: str) -> str | None:
    """The version `name` alone means, when an ingest has recorded one that still exists."""
    key = f"datasets/{name}/{CURRENT_FILE}"
    if not store.exists(key):
        return None
    version = json.loads(store.get_bytes(key)).get("version")
    if not isinstance(version, str) or not store.exists(version_prefix(name, version) + MANIFEST_FILE):
        return None
    return version


@dataclass
class DatasetVersion:
    manifest: dict[str, Any]
    store: ObjectStore = field(repr=False)

    @property
    def name(self) -> str:
        return str(self.manifest["name"])

    @property
    def version(self) -> str:
        return str(self.manifest["version"])

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def kind(self) -> DataKind:
        return cast(DataKind, self.manifest["kind"])

    @property
    def uri(self) -> str:
        return self.store.uri_for(version_prefix(self.name, self.version).rstrip("/"))

    @property
    def record_shape(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self.manifest["record_shape"])

    @property
    def counts(self) -> dict[str, int]:
        """Records per split."""
        return {split: int(n) for split, n in self.manifest["counts"].items()}

    @property
    def labelled(self) -> bool:
        return bool(self.manifest.get("labels"))

    @property
    def class_names(self) -> tuple[str, ...] | None:
        names = self.manifest.get("class_names")
        return tuple(names) if names else None

    @property
    def created_at(self) -> str | None:
        return self.manifest.get("created_at")

    @property
    def source(self) -> str | None:
        """What it was ingested from."""
        return self.manifest.get("source")

    def shards(self, splits: tuple[str, ...]) -> list[dict[str, Any]]:
        """The manifest's shard entries of `splits`, in order."""
        return [shard for split in splits for shard in self.manifest["shards"][split]]

    def load(self, splits: tuple[str, ...] = ("train",)) -> Dataset:
        """The records of `splits` (verified against the manifest's checksums)."""
        unknown = [s for s in splits if s not in self.manifest["shards"]]
        if unknown:
            raise DataError(f"{self.ref} has no split {unknown[0]!r} (splits: {', '.join(self.manifest['shards'])})")
        return self.load_shards(self.shards(splits))

    def load_labels(self, splits: tuple[str, ...] = ("train",)) -> np.ndarray:
        """The labels of `splits` alone (their Parquet column; checksums verified)."""
        import pyarrow.parquet as pq

        prefix = version_prefix(self.name, self.version)
        columns = [
            pq.read_table(
                io.BytesIO(self.store.get_bytes(prefix + shard["key"], sha256=shard["sha256"])), columns=["label"]
            )
            .column("label")
            .to_numpy()
            for shard in self.shards(splits)
        ]
        return np.concatenate(columns).astype(np.int64) if columns else np.zeros(0, np.int64)

    def load_shard_labels(self, shard: dict[str, Any]) -> np.ndarray:
        """The labels of one manifest shard entry (−1: unlabelled; all −1 in an unlabelled version)."""
        import pyarrow.parquet as pq

        payload = self.store.get_bytes(version_prefix(self.name, self.version) + shard["key"], sha256=shard["sha256"])
        labels: np.ndarray = (
            pq.read_table(io.BytesIO(payload), columns=["label"]).column("label").to_numpy().astype(np.int64)
        )
        return labels

    def count(self, splits: tuple[str, ...] = ("train",)) -> int:
        return sum(self.counts.get(split, 0) for split in splits)

    def read_shard(self, shard: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        """(records, labels: −1 where none) of one manifest shard entry, checksum verified; the
        records are a view of the decoded Parquet column (no copy)."""
        import pyarrow.parquet as pq

        payload = self.store.get_bytes(version_prefix(self.name, self.version) + shard["key"], sha256=shard["sha256"])
        table = pq.read_table(io.BytesIO(payload))
        del payload
        column = table.column("data").combine_chunks()
        width, count = column.type.byte_width, len(column)
        start = column.offset * width
        records = np.frombuffer(column.buffers()[1], np.uint8)[start : start + count * width]
        if count != int(shard["records"]):
            raise DataError(
                f"{self.ref}: shard {shard['key']} holds {count} records, its manifest says {shard['records']}"
            )
        return records.reshape(count, *self.record_shape), table.column("label").to_numpy().astype(np.int64)

    def load_shards(self, shards: list[dict[str, Any]]) -> Dataset:
        """The records of the given manifest shard entries, in order. Each shard is copied into
        one array sized from the manifest, so loading peaks at the records' size plus one shard."""
        total = sum(int(shard["records"]) for shard in shards)
        data = np.empty((total, *self.record_shape), np.uint8)
        label_array = np.empty(total, np.int64)
        filled = 0
        for shard in shards:
            records, labels = self.read_shard(shard)
            data[filled : filled + len(records)] = records
            label_array[filled : filled + len(records)] = labels
            filled += len(records)
        return Dataset(
            kind=self.kind,
            data=data,
            source=self.ref,
            labels=label_array if self.manifest["labels"] else None,
            class_names=self.manifest.get("class_names"),
        )


def read_manifest(store: ObjectStore, key: str) -> dict[str, Any]:
    try:
        manifest: dict[str, Any] = json.loads(store.get_bytes(key))
    except json.JSONDecodeError as exc:
        raise DataError(f"{store.uri_for(key)}: corrupt manifest ({exc})") from exc
    if manifest.get("format") != MANIFEST_FORMAT:
        raise DataError(f"{store.uri_for(key)}: not a {MANIFEST_FORMAT} manifest")
    return manifest


def list_versions(store: ObjectStore | None = None, name: str | None = None) -> list[DatasetVersion]:
    """Every published version (oldest first), or those of `name`."""
    store = store or open_store()
    prefix = f"datasets/{check_name(name)}/" if name else "datasets/"
    keys = [k for k in store.list(prefix) if k.endswith("/" + MANIFEST_FILE)]
    versions = [DatasetVersion(read_manifest(store, key), store) for key in keys]
    return sorted(versions, key=lambda v: (v.name, v.manifest.get("created_at", ""), v.version))


def resolve_version(ref: str, store: ObjectStore | None = None) -> DatasetVersion:
    """`name@version`, or `name` alone for its current version (the one ingested last)."""
    store = store or open_store()
    name, version = parse_ref(ref)
    if version is not None:
        key = version_prefix(name, version) + MANIFEST_FILE
        if not store.exists(key):
            raise DataError(f"dataset {name}@{version} not found in {store.uri}")
        return DatasetVersion(read_manifest(store, key), store)
    current = current_version(store, name)
    if current is not None:
        return DatasetVersion(read_manifest(store, version_prefix(name, current) + MANIFEST_FILE), store)
    versions = list_versions(store, name)
    if not versions:
        raise DataError(
            f"dataset {name!r} not found in {store.uri} (ingest it first: genimg ingest SOURCE --name {name})"
        )
    return versions[-1]


__all__ = [
    "DatasetVersion",
    "IngestResult",
    "StoreError",
    "ingest_dataset",
    "list_versions",
    "looks_like_ref",
    "parse_ref",
    "plan_splits",
    "resolve_version",
]
