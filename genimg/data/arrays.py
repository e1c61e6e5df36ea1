"""`.npy` / `.npz` array files (loaded without pickle)."""

from __future__ import annotations

import math
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np

from genimg.data.dataset import DataKind, Dataset, Rejection, check_label_values
from genimg.data.normalize import check_side, numeric_to_uint8
from genimg.errors import DataError
from genimg.limits import check_memory, format_bytes

IMAGE_KEYS = ("images", "x", "X", "data", "frames", "sequences", "arr_0")
LABEL_KEYS = ("labels", "y", "Y", "targets")
CHANNEL_COUNTS = (1, 3)
PIXEL_DTYPE_KINDS = "biuf"  # bool, signed and unsigned integers, floats: what numeric_to_uint8 reads


@dataclass(frozen=True)
class NpyHeader:
    """What an .npy header claims, read before any of its data."""

    shape: tuple[int, ...]
    dtype: np.dtype

    @property
    def data_bytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize


def read_npy_header(stream: IO[bytes], size: int, shown: str) -> NpyHeader:
    """The header of an .npy file (or .npz member) of `size` bytes; its data must fit the file
    and this machine's memory (genimg.limits), so a header claiming 10¹² records is refused
    before numpy allocates for them."""
    try:
        version = np.lib.format.read_magic(stream)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = read(stream)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"{shown}: not a readable .npy array ({exc})") from exc
    header = NpyHeader(tuple(int(n) for n in shape), dtype)
    held = size - stream.tell()
    if header.data_bytes > held:
        raise DataError(
            f"{shown}: its header claims {header.dtype} {header.shape} ({format_bytes(header.data_bytes)}) "
            f"but it holds {format_bytes(held)} of data: truncated or corrupt"
        )
    check_memory(f"{shown}: {header.dtype} {header.shape}", header.data_bytes, "too large to load", DataError)
    return header


def check_pixel_dtype(header: NpyHeader, shown: str) -> None:
    # Objects are pickles: np.load refuses them unread (allow_pickle=False), as "not a readable" file.
    if header.dtype.kind not in PIXEL_DTYPE_KINDS and not header.dtype.hasobject:
        raise DataError(
            f"{shown}: images of dtype {header.dtype} cannot be pixels (expected integers "
            "0–255, floats in [0, 1] or [0, 255], or booleans)"
        )


def npz_headers(path: Path) -> dict[str, NpyHeader]:
    """The header of every array of an .npz archive, by name (np.load's names)."""
    headers = {}
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            if info.filename.endswith(".npy"):
                name = info.filename.removesuffix(".npy")
                with archive.open(info) as stream:
                    headers[name] = read_npy_header(stream, info.file_size, f"{path}:{name}")
    return headers


def load_arrays(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    try:
        if path.suffix.lower() == ".npy":
            with path.open("rb") as stream:
                check_pixel_dtype(read_npy_header(stream, path.stat().st_size, str(path)), str(path))
            return np.load(path, allow_pickle=False), None
        headers = npz_headers(path)
        names = list(headers)
        image_key = next((k for k in IMAGE_KEYS if k in names), None)
        if image_key is None:
            candidates = [k for k in names if len(headers[k].shape) >= 2]
            if len(candidates) != 1:
                raise DataError(
                    f"{path}: cannot tell which array holds the images (arrays: "
                    f"{', '.join(names) or 'none'}; name it one of {', '.join(IMAGE_KEYS)})"
                )
            image_key = candidates[0]
        check_pixel_dtype(headers[image_key], f"{path}:{image_key}")
        label_key = next((k for k in LABEL_KEYS if k in names), None)
        with np.load(path, allow_pickle=False) as archive:
            labels = archive[label_key] if label_key else None
            return archive[image_key], labels
    except DataError:
        raise
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"{path}: not a readable {path.suffix} file ({exc})") from exc


def to_channels_first(array: np.ndarray, leading: int, path: Path) -> np.ndarray:
    """Records with `leading` batch-like dims → (..., C, H, W); grey (..., H, W) gets C = 1."""
    rest = array.shape[leading:]
    if len(rest) == 2:
        return array.reshape(*array.shape[:leading], 1, *rest)
    if len(rest) == 3:
        if rest[0] in CHANNEL_COUNTS and rest[2] not in CHANNEL_COUNTS:
            return array
        if rest[2] in CHANNEL_COUNTS:
            axes = tuple(range(leading)) + (leading + 2, leading, leading + 1)
            return array.transpose(axes)
        if rest[0] in CHANNEL_COUNTS:
            return array
    raise DataError(f"{path}: odd shape {array.shape} for {'sequences' if leading == 2 else 'images'}")


def read_array_file(path: Path, kind: DataKind | None) -> Dataset:
    array, labels = load_arrays(path)
    if kind is None:
        kind = "sequences" if array.ndim == 5 else "images"
    if kind == "images" and array.ndim == 2:
        side = math.isqrt(array.shape[1])
        if side * side != array.shape[1]:
            raise DataError(f"{path}: odd shape {array.shape}: rows are not square images")
        array = array.reshape(len(array), side, side)
    leading = 1 if kind == "images" else 2
    if array.ndim not in (leading + 2, leading + 3):
        raise DataError(f"{path}: odd shape {array.shape} for {kind}")
    array = to_channels_first(array, leading, path)
    side_problem = check_side(*array.shape[-2:])
    if side_problem:
        raise DataError(f"{path}: {side_problem}")
    names = [f"{path}[{i}]" for i in range(len(array))]
    data, kept, rejected = numeric_to_uint8(array, names)
    if labels is not None:
        if labels.shape != (len(array),) or not np.issubdtype(labels.dtype, np.integer):
            rejected.append(
                Rejection(
                    f"{path}:labels",
                    f"labels ignored: expected {len(array)} integers, got {labels.dtype} {labels.shape}",
                )
            )
            labels = None
        else:
            check_label_values(labels, f"{path}:labels")
            labels = labels.astype(np.int64)[kept]
    return Dataset(
        kind=kind,
        data=np.ascontiguousarray(data),
        source=str(path),
        labels=labels,
        rejected=rejected,
    )
