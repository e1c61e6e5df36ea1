"""`.npy` / `.npz` array files (loaded without pickle)."""

from __future__ import annotations

import math
import zipfile
from pathlib import Path

import numpy as np

from genimg.data.dataset import DataKind, Dataset, Rejection
from genimg.data.normalize import check_side, numeric_to_uint8
from genimg.errors import DataError

IMAGE_KEYS = ("images", "x", "X", "data", "frames", "sequences", "arr_0")
LABEL_KEYS = ("labels", "y", "Y", "targets")
CHANNEL_COUNTS = (1, 3)


def load_arrays(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    try:
        if path.suffix.lower() == ".npy":
            return np.load(path, allow_pickle=False), None
        with np.load(path, allow_pickle=False) as archive:
            names = list(archive.files)
            image_key = next((k for k in IMAGE_KEYS if k in names), None)
            if image_key is None:
                candidates = [k for k in names if archive[k].ndim >= 2]
                if len(candidates) != 1:
                    raise DataError(
                        f"{path}: cannot tell which array holds the images (arrays: "
                        f"{', '.join(names) or 'none'}; name it one of {', '.join(IMAGE_KEYS)})"
                    )
                image_key = candidates[0]
            label_key = next((k for k in LABEL_KEYS if k in names), None)
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
                    f"labels ignored: expected {len(array)} integers, got {labels.dtype} "
                    f"{labels.shape}",
                )
            )
            labels = None
        else:
            labels = labels.astype(np.int64)[kept]
    return Dataset(
        kind=kind, data=np.ascontiguousarray(data), source=str(path), labels=labels,
        rejected=rejected,
    )
