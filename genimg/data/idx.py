"""IDX files (the MNIST format), gzip-compressed or not, with a labels file picked up beside.

A truncated file keeps every complete record before the cut; the missing ones are reported.
"""

from __future__ import annotations

import re
import zlib
from pathlib import Path

import numpy as np

from genimg.data.dataset import Dataset, Rejection
from genimg.data.normalize import check_side, numeric_to_uint8
from genimg.errors import DataError

IDX_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def is_idx_path(path: Path) -> bool:
    name = path.name.lower().removesuffix(".gz")
    return bool(re.search(r"idx\d", name)) or name.endswith(".idx")


def read_bytes(path: Path) -> tuple[bytes, bool]:
    """The file's bytes, gunzipped as far as they go; True if the gzip stream was cut short."""
    raw = path.read_bytes()
    if raw[:2] != b"\x1f\x8b":
        return raw, False
    decompressor = zlib.decompressobj(zlib.MAX_WBITS | 16)
    try:
        data = decompressor.decompress(raw)
    except zlib.error as exc:
        raise DataError(f"{path}: corrupt gzip data ({exc})") from exc
    return data, not decompressor.eof


def parse_idx(path: Path) -> tuple[np.ndarray, tuple[int, ...], bool]:
    """(complete records, declared shape, gzip truncated)."""
    data, gzip_cut = read_bytes(path)
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in IDX_DTYPES:
        raise DataError(f"{path}: not an IDX file (bad magic number)")
    dtype, rank = IDX_DTYPES[data[2]], data[3]
    header_end = 4 + 4 * rank
    if rank == 0 or len(data) < header_end:
        raise DataError(f"{path}: truncated IDX header")
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(rank))
    record_size = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize
    available = (len(data) - header_end) // record_size if record_size else 0
    count = min(shape[0], available)
    records = np.frombuffer(data, dtype=dtype, count=count * (record_size // dtype.itemsize),
                            offset=header_end)
    return records.reshape(count, *shape[1:]), shape, gzip_cut


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
    records, shape, _ = parse_idx(path)
    if len(shape) == 1:
        raise DataError(f"{path}: holds 1-d records (a labels file?), not images")
    if len(shape) == 3:
        records = records[:, None]
    elif len(shape) == 4 and shape[3] in (1, 3):
        records = records.transpose(0, 3, 1, 2)
    else:
        raise DataError(f"{path}: odd shape {shape} (expected N×H×W or N×H×W×C)")
    side_problem = check_side(*records.shape[2:])
    if side_problem:
        raise DataError(f"{path}: {side_problem}")
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
            labels = labels[: len(records)][kept]
    return Dataset(kind="images", data=data, source=str(path), labels=labels, rejected=rejected)


def read_idx_labels(path: Path, expected: int) -> tuple[np.ndarray | None, str | None]:
    try:
        labels, shape, _ = parse_idx(path)
    except DataError as exc:
        return None, str(exc)
    if len(shape) != 1:
        return None, f"expected 1-d labels, got shape {shape}"
    if shape[0] != expected:
        return None, f"{shape[0]} labels for {expected} images"
    return labels.astype(np.int64), None
