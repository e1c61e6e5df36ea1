"""IDX files (the MNIST format), gzip-compressed or not, with a labels file picked up beside.

A truncated file keeps every complete record before the cut; the missing ones are reported.
The file is read as a stream: the header first (its sides checked before anything is allocated),
then at most the records it declares, so trailing data is never read or inflated.
"""

from __future__ import annotations

import re
import zlib
from pathlib import Path
from typing import BinaryIO

import numpy as np

from genimg.data.dataset import Dataset, Rejection, check_label_values
from genimg.data.normalize import check_side, numeric_to_uint8
from genimg.errors import DataError

IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
GZIP_CHUNK_BYTES = 1 << 20
READ_SLICE_BYTES = 16 << 20


def is_idx_path(path: Path) -> bool:
    name = path.name.lower().removesuffix(".gz")
    return bool(re.search(r"idx\d", name)) or name.endswith(".idx")


class IdxReader:
    """A file's bytes in order, gunzipped on the fly when it is gzip: never more than asked for.

    A header can declare a few records and be followed by a gigabyte of zeros (about a megabyte
    gzipped); reading only what the header declares keeps such a file harmless."""

    def __init__(self, handle: BinaryIO, path: Path) -> None:
        self.handle, self.path = handle, path
        is_gzip = handle.read(2) == b"\x1f\x8b"
        handle.seek(0)
        self.inflater = zlib.decompressobj(zlib.MAX_WBITS | 16) if is_gzip else None

    def read(self, size: int) -> bytes:
        """Up to `size` bytes: fewer only where the data ends (or a gzip stream is cut short)."""
        if self.inflater is None:
            return self.handle.read(size)
        parts: list[bytes] = []
        wanted = size
        try:
            while wanted > 0 and not self.inflater.eof:
                # Input held back by an earlier max_length first, then more of the file.
                feed = self.inflater.unconsumed_tail or self.handle.read(GZIP_CHUNK_BYTES)
                data = self.inflater.decompress(feed, wanted)
                if not feed and not data:
                    break  # the file ends before the gzip stream does
                parts.append(data)
                wanted -= len(data)
        except zlib.error as exc:
            raise DataError(f"{self.path}: corrupt gzip data ({exc})") from exc
        return b"".join(parts)


def read_idx_header(reader: IdxReader, path: Path) -> tuple[np.dtype, tuple[int, ...]]:
    """(record dtype, declared shape) from the magic number and the dimensions."""
    magic = reader.read(4)
    if len(magic) < 4 or magic[0] != 0 or magic[1] != 0 or magic[2] not in IDX_DTYPES:
        raise DataError(f"{path}: not an IDX file (bad magic number)")
    rank = magic[3]
    dims = reader.read(4 * rank)
    if rank == 0 or len(dims) < 4 * rank:
        raise DataError(f"{path}: truncated IDX header")
    shape = tuple(int.from_bytes(dims[4 * i : 4 + 4 * i], "big") for i in range(rank))
    return IDX_DTYPES[magic[2]], shape


def read_idx_records(reader: IdxReader, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
    """The complete records that follow the header, at most the declared count of them."""
    record_size = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize
    if record_size == 0:
        return np.zeros((0, *shape[1:]), dtype)
    # Read in slices, so a header declaring more records than the file holds costs only what
    # the file really holds.
    slice_records = max(1, READ_SLICE_BYTES // record_size)
    parts: list[bytes] = []
    remaining = shape[0]
    while remaining > 0:
        wanted = min(remaining, slice_records) * record_size
        data = reader.read(wanted)
        parts.append(data)
        remaining -= len(data) // record_size
        if len(data) < wanted:
            break
    data = b"".join(parts)
    count = len(data) // record_size
    records = np.frombuffer(data, dtype=dtype, count=count * (record_size // dtype.itemsize))
    return records.reshape(count, *shape[1:])


def image_layout_problem(shape: tuple[int, ...]) -> str | None:
    """Why a declared shape cannot hold images (checked before any record is read)."""
    if len(shape) == 1:
        return "holds 1-d records (a labels file?), not images"
    if len(shape) not in (3, 4) or (len(shape) == 4 and shape[3] not in (1, 3)):
        return f"odd shape {shape} (expected N×H×W or N×H×W×C)"
    return check_side(shape[1], shape[2])


def labels_path_for(path: Path) -> Path | None:
    name = path.name
    candidates = [
        name.replace("images", "labels").replace("idx3", "idx1"),
        name.replace("images", "labels"),
    ]
    for candidate in candidates:
        if candidate != name and (path.parent / candidate).is_file():
            return path.parent / candidate
    return None


def read_idx(path: Path) -> Dataset:
    with open(path, "rb") as handle:
        reader = IdxReader(handle, path)
        dtype, shape = read_idx_header(reader, path)
        layout_problem = image_layout_problem(shape)
        if layout_problem:
            raise DataError(f"{path}: {layout_problem}")
        records = read_idx_records(reader, dtype, shape)
    if len(shape) == 3:
        records = records[:, None]
    else:
        records = records.transpose(0, 3, 1, 2)
    rejected: list[Rejection] = []
    if len(records) < shape[0]:
        rejected.append(
            Rejection(
                f"{path}[{len(records)}:{shape[0]}]",
                f"truncated file: ends after {len(records)} of {shape[0]} records",
            )
        )
    names = [f"{path}[{i}]" for i in range(len(records))]
    data, kept, bad = numeric_to_uint8(records, names)
    rejected = bad + rejected
    labels = None
    labels_file = labels_path_for(path)
    if labels_file is not None:
        labels, problem = read_idx_labels(labels_file, shape[0])
        if problem:
            rejected.append(Rejection(str(labels_file), f"labels ignored: {problem}"))
        else:
            assert labels is not None
            check_label_values(labels, str(labels_file))
            labels = labels[: len(records)][kept]
    return Dataset(kind="images", data=data, source=str(path), labels=labels, rejected=rejected)


def read_idx_labels(path: Path, expected: int) -> tuple[np.ndarray | None, str | None]:
    try:
        with open(path, "rb") as handle:
            reader = IdxReader(handle, path)
            dtype, shape = read_idx_header(reader, path)
            if len(shape) != 1:
                return None, f"expected 1-d labels, got shape {shape}"
            if shape[0] != expected:
                return None, f"{shape[0]} labels for {expected} images"
            labels = read_idx_records(reader, dtype, shape)
    except DataError as exc:
        return None, str(exc)
    return labels.astype(np.int64), None
