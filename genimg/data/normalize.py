"""Bring decoded records to one uint8 shape per dataset.

Policy (the same for every reader, documented in the README):
- values: uint8 as they are; bool → {0, 255}; other numbers in [0, 1] (dataset-wide) are scaled
  by 255, in [0, 255] taken as levels; a record with non-finite values or values outside that
  range is rejected.
- channels: 1 if every image is grey, else 3 (grey images repeated, alpha dropped).
- size: the most common height × width wins; images of another size are resized to it (bicubic).
  Images with a side under 4 px or over 4,096 px are rejected as an odd shape.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np
from PIL import Image

from genimg.data.dataset import Rejection

MIN_SIDE, MAX_SIDE = 4, 4096
# Names this policy inside dataset versions: change it whenever the policy changes, so that the
# same source ingested under another policy gets another version.
POLICY_ID = "genimg.normalize/1: channels grey-or-rgb, size most-common resize-bicubic"


def check_side(height: int, width: int) -> str | None:
    if min(height, width) < MIN_SIDE or max(height, width) > MAX_SIDE:
        return f"odd shape: {height}x{width} px (sides must be {MIN_SIDE}–{MAX_SIDE} px)"
    return None


def numeric_to_uint8(
    records: np.ndarray, item_names: Sequence[str]
) -> tuple[np.ndarray, np.ndarray, list[Rejection]]:
    """(kept uint8 records, kept indices, rejections) for an array of records of any dtype."""
    if records.dtype == np.uint8:
        return records, np.arange(len(records)), []
    if records.dtype == np.bool_:
        return records.astype(np.uint8) * 255, np.arange(len(records)), []
    if not (np.issubdtype(records.dtype, np.integer) or np.issubdtype(records.dtype, np.floating)):
        raise ValueError(f"unsupported dtype {records.dtype}")
    flat = records.reshape(len(records), -1)
    values = flat.astype(np.float64, copy=False)
    finite = np.isfinite(values).all(axis=1)
    low = np.where(finite, np.nanmin(np.where(np.isfinite(values), values, 0), axis=1), 0)
    high = np.where(finite, np.nanmax(np.where(np.isfinite(values), values, 0), axis=1), 0)
    in_range = finite & (low >= 0) & (high <= 255)
    unit_scale = bool(in_range.any()) and float(high[in_range].max()) <= 1.0
    rejected = []
    for i in np.flatnonzero(~in_range):
        reason = (
            "non-finite values (NaN or inf)"
            if not finite[i]
            else f"values outside [0, 255] (min {low[i]:g}, max {high[i]:g})"
        )
        rejected.append(Rejection(item_names[i], reason))
    kept = np.flatnonzero(in_range)
    scale = 255.0 if unit_scale else 1.0
    converted = np.clip(np.rint(values[kept] * scale), 0, 255).astype(np.uint8)
    return converted.reshape(len(kept), *records.shape[1:]), kept, rejected


def most_common_size(shapes: Sequence[tuple[int, int]]) -> tuple[int, int]:
    # Ties go to the larger size: resizing down loses less than resizing up invents.
    counts = Counter(shapes)
    return max(counts, key=lambda size: (counts[size], size))


def stack_images(images: Sequence[np.ndarray]) -> np.ndarray:
    """(N, C, H, W) uint8 from (H, W, C) uint8 images with C in {1, 3}, per the policy above."""
    channels = 3 if any(image.shape[2] == 3 for image in images) else 1
    height, width = most_common_size([image.shape[:2] for image in images])
    if all(image.shape == (height, width, channels) for image in images):
        return np.ascontiguousarray(np.stack(images).transpose(0, 3, 1, 2))
    out = np.empty((len(images), channels, height, width), np.uint8)
    for i, image in enumerate(images):
        if image.shape[:2] != (height, width):
            mode = "L" if image.shape[2] == 1 else "RGB"
            resized = Image.fromarray(image.squeeze(2) if mode == "L" else image, mode)
            image = np.asarray(resized.resize((width, height), Image.Resampling.BICUBIC))
            image = image.reshape(height, width, -1)
        if image.shape[2] != channels:
            image = np.repeat(image, channels, axis=2)
        out[i] = image.transpose(2, 0, 1)
    return out
