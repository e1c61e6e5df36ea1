"""Ingestion: read a source (checked record by record) and publish it as a dataset version."""

from __future__ import annotations

from typing import cast

from genimg.data.dataset import DataKind
from genimg.data.normalize import ResizeMode, ResizePolicy
from genimg.data.readers import read_source
from genimg.data.versions import IngestResult, check_name, ingest_dataset
from genimg.errors import GenimgError
from genimg.feedback import phase, progress_callback
from genimg.store import ObjectStore, open_store


def resize_policy(resolution: int | None, resize: str | None) -> ResizePolicy | None:
    """`--resolution N [--resize MODE]`: every image N×N px (center-crop unless MODE says)."""
    if resize is not None and resolution is None:
        raise GenimgError(f"--resize {resize} needs --resolution N (the square side in px)")
    mode = resize or "center-crop"  # ResizePolicy checks it, naming --resize
    return None if resolution is None else ResizePolicy(resolution, cast(ResizeMode, mode))


def ingest(
    source: str,
    name: str,
    *,
    kind: DataKind | None = None,
    resolution: int | None = None,
    resize: str | None = None,
    store: ObjectStore | None = None,
) -> IngestResult:
    """Validate `source` and publish it as a version of dataset `name` (the same content gives
    the same version, uploaded once)."""
    check_name(name)
    if kind not in (None, "images", "sequences"):
        raise GenimgError(f"invalid --kind {kind!r} (expected images or sequences)")
    policy = resize_policy(resolution, resize)
    store = store or open_store()
    with phase(f"reading {source}"), progress_callback(f"decoding {source}") as progress:
        dataset = read_source(source, kind, progress=progress, resize=policy)
    with (
        phase(f"publishing {len(dataset)} records as a version of {name} in {store.uri}"),
        progress_callback(f"writing {name}") as progress,
    ):
        return ingest_dataset(dataset, name, store=store, progress=progress, resize=policy)
