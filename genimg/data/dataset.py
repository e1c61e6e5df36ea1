"""The in-memory result of reading a source: uint8 records, optional labels, rejections."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from genimg.errors import DataError

DataKind = Literal["images", "sequences"]
UNLABELLED = -1
# A label is a class index: a conditional model holds a row per class up to the largest label,
# so one stray 3,000,000 would cost gigabytes. Negative labels mark unlabelled records.
MAX_CLASSES = 100_000


@dataclass(frozen=True)
class Rejection:
    """One input item that was not kept, and why (the item is a path, or path[index])."""

    item: str
    reason: str

    def as_dict(self) -> dict[str, str]:
        return {"item": self.item, "reason": self.reason}


@dataclass
class Dataset:
    """Records as raw uint8 arrays of one fixed shape.

    images: (N, C, H, W); sequences: (N, T, C, H, W). labels: int64 (N,), UNLABELLED (−1) for
    records without one, or None when the source has no labels at all.
    """

    kind: DataKind
    data: np.ndarray
    source: str
    labels: np.ndarray | None = None
    class_names: list[str] | None = None
    rejected: list[Rejection] = field(default_factory=list)

    def __post_init__(self) -> None:
        expected_rank = 4 if self.kind == "images" else 5
        if self.data.dtype != np.uint8 or self.data.ndim != expected_rank:
            raise ValueError(
                f"{self.kind} must be uint8 of rank {expected_rank}, got {self.data.dtype} {self.data.shape}"
            )
        if self.labels is not None and self.labels.shape != (len(self.data),):
            raise ValueError(f"labels shape {self.labels.shape} != ({len(self.data)},)")

    def __len__(self) -> int:
        return int(self.data.shape[0])

    @property
    def record_shape(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self.data.shape[1:])

    @property
    def image_shape(self) -> tuple[int, int, int]:
        c, h, w = self.data.shape[-3:]
        return int(c), int(h), int(w)

    @property
    def num_frames(self) -> int | None:
        return int(self.data.shape[1]) if self.kind == "sequences" else None


def check_label_values(labels: np.ndarray, where: str) -> None:
    """Refuse integer labels that are not class indices below MAX_CLASSES (checked in their own
    dtype: a uint64 2**64 − 1 must not wrap to −1)."""
    if len(labels) == 0 or int(labels.max()) < MAX_CLASSES:
        return
    index = int(np.argmax(labels))
    raise DataError(
        f"{where}: label {int(labels[index])} (record {index}) is not a class index below "
        f"{MAX_CLASSES:,}; labels must be small non-negative integers 0, 1, … (negative: unlabelled)"
    )


def no_valid_records(source: str, kind: DataKind, rejected: list[Rejection]) -> Exception:
    """The error for a source in which nothing could be used."""
    if not rejected:
        return DataError(f"{source}: no {kind} found (empty source)")
    first = rejected[0]
    return DataError(f"{source}: no valid {kind}; {len(rejected)} item(s) rejected, first {first.item}: {first.reason}")
