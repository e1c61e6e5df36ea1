"""One entry point for every source: `read_source("builtin:digits" | path, kind=None)`."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from genimg.data.arrays import read_array_file
from genimg.data.builtin import BUILTIN_SOURCES
from genimg.data.dataset import DataKind, Dataset, Rejection, no_valid_records
from genimg.data.folders import IMAGE_SUFFIXES, Progress, read_image_folder, read_sequence_folder
from genimg.data.idx import is_idx_path, read_idx
from genimg.data.moving_mnist import (
    MOVING_MNIST_PREFIX,
    MOVING_MNIST_USAGE,
    is_moving_mnist_npy,
    read_moving_mnist,
    read_moving_mnist_npy,
)
from genimg.data.normalize import ResizePolicy, resize_records
from genimg.errors import DataError
from genimg.store import download_s3_source

ARRAY_SUFFIXES = {".npy", ".npz"}
SOURCE_HELP = (
    f"expected builtin:digits, builtin:moving-digits, {MOVING_MNIST_USAGE} (PATH an MNIST IDX "
    "file), or a path to an image folder, a sequence folder, an IDX file, an .npz/.npy file or "
    "Moving MNIST's mnist_test_seq.npy"
)


def read_source(
    source: str,
    kind: DataKind | None = None,
    progress: Progress | None = None,
    resize: ResizePolicy | None = None,
) -> Dataset:
    """Read every record of `source`; bad records become `Dataset.rejected`, not errors.

    `source` is a builtin name, a moving-mnist: source, a local path, or an s3:// URI of a file
    or a folder-like prefix (copied to a temporary folder first; rejections name the s3:// items).
    `resize` (ingest --resolution): every image becomes its square size — folders as they decode,
    array sources afterwards; without it, the size rule of genimg.data.normalize applies.
    Raises DataError when the source itself is unusable (missing, unknown type, nothing valid).
    """
    if kind not in (None, "images", "sequences"):
        raise DataError(f"unknown kind {kind!r} (expected images or sequences)")
    if source.startswith("builtin:"):
        loader = BUILTIN_SOURCES.get(source)
        if loader is None:
            known = ", ".join(sorted(BUILTIN_SOURCES))
            raise DataError(f"unknown builtin dataset {source!r} (known: {known})")
        dataset = with_resize(loader(), resize)
    elif source.startswith(MOVING_MNIST_PREFIX):
        dataset = with_resize(read_moving_mnist(source), resize)
    elif source.startswith("s3://"):
        dataset = read_s3(source, kind, progress, resize)
    elif "://" in source:
        raise DataError(
            f"cannot read {source!r}: sources are builtin:, local paths or s3:// URIs (or {MOVING_MNIST_USAGE})"
        )
    else:
        dataset = read_path(Path(source).expanduser(), kind, progress, resize=resize)
        # As a manifest records it: where the data came from, whatever folder genimg ran in.
        dataset.source = str(Path(source).expanduser().resolve())
    if kind is not None and dataset.kind != kind:
        raise DataError(
            f"{source} holds {dataset.kind}, not {kind} (a model that trains on "
            f"{kind} needs e.g. builtin:{'moving-digits' if kind == 'sequences' else 'digits'})"
        )
    if len(dataset) == 0:
        raise no_valid_records(source, dataset.kind, dataset.rejected)
    return dataset


def with_resize(dataset: Dataset, resize: ResizePolicy | None) -> Dataset:
    """`dataset` with its records brought to `resize`'s size (a new Dataset: builtin ones are
    shared), or `dataset` itself without a policy."""
    if resize is None:
        return dataset
    return dataclasses.replace(dataset, data=resize_records(dataset.data, resize))


def read_s3(uri: str, kind: DataKind | None, progress: Progress | None, resize: ResizePolicy | None = None) -> Dataset:
    downloaded = download_s3_source(uri)
    try:
        dataset = read_path(downloaded.local_path, kind, progress, shown_as=uri, resize=resize)
    finally:
        downloaded.cleanup()
    dataset.source = uri
    dataset.rejected = [Rejection(downloaded.original_name(r.item), r.reason) for r in dataset.rejected]
    return dataset


def read_path(
    path: Path,
    kind: DataKind | None,
    progress: Progress | None = None,
    shown_as: str | None = None,
    resize: ResizePolicy | None = None,
) -> Dataset:
    if not path.exists():
        raise DataError(f"dataset source not found: {shown_as or path} ({SOURCE_HELP})")
    if path.is_dir():
        if kind == "sequences":
            return read_sequence_folder(path, progress, resize)
        return read_image_folder(path, progress, resize)
    suffix = path.suffix.lower()
    # Before the generic .npy reader: this file is frames first (T × N × H × W), which no
    # generic layout rule would guess.
    if is_moving_mnist_npy(path):
        return with_resize(read_moving_mnist_npy(path, shown_as=shown_as), resize)
    if suffix in ARRAY_SUFFIXES:
        return with_resize(read_array_file(path, kind), resize)
    if is_idx_path(path):
        return with_resize(read_idx(path), resize)
    if suffix in IMAGE_SUFFIXES:
        raise DataError(f"{path} is a single image; point at the folder that holds the images")
    raise DataError(f"{path}: unknown source type ({SOURCE_HELP})")
