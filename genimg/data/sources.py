"""What `--dataset` accepts: a dataset in the store (NAME or NAME@VERSION) or any raw source."""

from __future__ import annotations

from pathlib import Path

from genimg.data.dataset import DataKind, Dataset
from genimg.data.readers import read_source
from genimg.data.versions import looks_like_ref, resolve_version
from genimg.errors import DataError
from genimg.store import ObjectStore


def open_dataset(
    source: str,
    kind: DataKind | None = None,
    *,
    splits: tuple[str, ...] = ("train",),
    store: ObjectStore | None = None,
) -> Dataset:
    """builtin:…, s3://… and existing local paths are read directly (all records); anything
    else of the form NAME[@VERSION] is a dataset version in the store (only `splits`)."""
    is_raw = source.startswith("builtin:") or "://" in source or Path(source).expanduser().exists()
    if is_raw or not looks_like_ref(source):
        return read_source(source, kind)
    version = resolve_version(source, store)
    if kind is not None and version.kind != kind:
        raise DataError(f"{version.ref} holds {version.kind}, not {kind}")
    return version.load(splits)
