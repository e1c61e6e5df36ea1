"""Bring decoded records to one uint8 shape per dataset.

Policy (the same for every reader, documented in the README):
- values: uint8 as they are; bool → {0, 255}; other numbers in [0, 1] (dataset-wide) are scaled
  by 255, in [0, 255] taken as levels; a record with non-finite values or values outside that
  range is rejected.
- channels: 1 if every image is grey, else 3 (grey images repeated; alpha was composited onto
  black when the file was decoded, genimg.data.folders).
- size: the most common height × width wins; images of another size are resized to it (bicubic).
  Images with a side under 4 px or over 4,096 px are rejected as an odd shape.

`ResizePolicy` (`genimg ingest --resolution N [--resize …]`) replaces the size rule: every image
becomes N × N as it is decoded — center-cropped to a square of its shorter side (default), padded
onto a black square, or stretched — with an antialiased (Lanczos) resize, the usual preparation of
CelebA, LSUN and FFHQ. The channel rule stays.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, cast, get_args

import numpy as np
from PIL import Image

from genimg.data.dataset import Rejection
from genimg.errors import DataError

MIN_SIDE, MAX_SIDE = 4, 4096
# Names this policy inside dataset versions: change it whenever the policy changes, so that the
# same source ingested under another policy gets another version.
POLICY_ID = "genimg.normalize/1: channels grey-or-rgb, size most-common resize-bicubic"
# The same for ResizePolicy; its resolution and mode are recorded beside it (ResizePolicy.record).
RESIZE_POLICY_ID = (
    "genimg.normalize/1+resize/1: channels grey-or-rgb, size fixed square resize-lanczos "
    "(reducing gap 3, JPEG DCT draft to at least 8 times the side), pad on black"
)

ResizeMode = Literal["center-crop", "pad", "stretch"]
RESIZE_MODES: tuple[str, ...] = get_args(ResizeMode)
# Pillow's `reducing_gap`: a large image is first shrunk by an integer factor (a fast box filter)
# to no less than this many times the target, then Lanczos does the rest; from 3 on the result is
# indistinguishable from a full Lanczos resize (Pillow's documentation), at a fraction of the cost.
REDUCING_GAP = 3.0
# A JPEG is decoded at 1/2, 1/4 or 1/8 scale in the DCT when it stays at least this many times
# the target side, so a 3000 px photo made 64 px never exists in full. Measured on photos: 8 stays
# about 0.5 levels (mean; max ≤ 11) from a full decode + Lanczos and is 1.4–2.4× faster for
# 3000 px → 64; Image.thumbnail's 2 (and 4) leave 1–7 levels, up to 56, of block-average aliasing.
JPEG_DRAFT_GAP = 8


def check_side(height: int, width: int) -> str | None:
    if min(height, width) < MIN_SIDE or max(height, width) > MAX_SIDE:
        return f"odd shape: {height}x{width} px (sides must be {MIN_SIDE}–{MAX_SIDE} px)"
    return None


@dataclass(frozen=True)
class ResizePolicy:
    """Every image becomes `resolution` × `resolution`; `mode` says how a non-square one fits."""

    resolution: int
    mode: ResizeMode = "center-crop"

    def __post_init__(self) -> None:
        # The messages name the CLI options: that is where these values come from.
        if not MIN_SIDE <= self.resolution <= MAX_SIDE:
            bounds = f"{MIN_SIDE}–{MAX_SIDE}"
            raise DataError(f"invalid --resolution {self.resolution} (must be {bounds})")
        if self.mode not in RESIZE_MODES:
            expected = "center-crop, pad or stretch"
            raise DataError(f"invalid --resize {self.mode!r} (expected {expected})")

    def record(self) -> dict[str, Any]:
        """What a dataset version's preprocessing settings say of this policy."""
        return {"resolution": self.resolution, "mode": self.mode}

    @property
    def draft_size(self) -> tuple[int, int]:
        """The size a JPEG decoder may reduce to: every mode needs both sides ≥ the target."""
        side = self.resolution * JPEG_DRAFT_GAP
        return side, side

    def apply(self, image: Image.Image) -> Image.Image:
        """`image` (L or RGB) as resolution × resolution pixels of the same mode."""
        side = self.resolution
        width, height = image.size
        if self.mode == "stretch":
            return image.resize((side, side), Image.Resampling.LANCZOS, reducing_gap=REDUCING_GAP)
        if self.mode == "center-crop":
            # The crop is the resize's source box: no copy of the cropped photo is made.
            square = min(width, height)
            left, top = (width - square) // 2, (height - square) // 2
            return image.resize(
                (side, side),
                Image.Resampling.LANCZOS,
                reducing_gap=REDUCING_GAP,
                box=(left, top, left + square, top + square),
            )
        # pad: scale the longer side to `side`, then centre on black. Resizing before padding
        # costs less and keeps the black out of the filter at the image's edges.
        scale = side / max(width, height)
        inner = (max(1, round(width * scale)), max(1, round(height * scale)))
        canvas = Image.new(image.mode, (side, side), 0)
        fitted = image.resize(inner, Image.Resampling.LANCZOS, reducing_gap=REDUCING_GAP)
        canvas.paste(fitted, ((side - inner[0]) // 2, (side - inner[1]) // 2))
        return canvas


def resize_records(data: np.ndarray, policy: ResizePolicy) -> np.ndarray:
    """Records (…, C, H, W) uint8 with C in {1, 3}, each image brought to the policy's size.

    For sources that are already arrays (builtin, IDX, .npz); folders resize as they decode."""
    channels, side = data.shape[-3], policy.resolution
    images = data.reshape(-1, *data.shape[-3:])
    out = np.empty((len(images), channels, side, side), np.uint8)
    for i, image in enumerate(images):
        pixels = Image.fromarray(image[0] if channels == 1 else image.transpose(1, 2, 0))
        out[i] = np.asarray(policy.apply(pixels)).reshape(side, side, channels).transpose(2, 0, 1)
    return out.reshape(*data.shape[:-2], side, side)


def numeric_to_uint8(records: np.ndarray, item_names: Sequence[str]) -> tuple[np.ndarray, np.ndarray, list[Rejection]]:
    """(kept uint8 records, kept indices, rejections) for an array of records of any dtype."""
    if records.dtype == np.uint8:
        return records, np.arange(len(records)), []
    if records.dtype == np.bool_:
        return records.astype(np.uint8) * 255, np.arange(len(records)), []
    if not (np.issubdtype(records.dtype, np.integer) or np.issubdtype(records.dtype, np.floating)):
        raise ValueError(f"unsupported dtype {records.dtype}")
    flat = records.reshape(len(records), -1)
    values = flat.astype(np.float64, copy=False)
    # A per-record array (numpy's stubs type `all` with an axis as maybe one scalar).
    finite = cast(np.ndarray, np.isfinite(values).all(axis=1))
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
        rejected.append(Rejection(item_names[int(i)], reason))
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
    out = np.empty((len(images), channels, height, width), np.uint8)
    if all(image.shape == (height, width, channels) for image in images):
        # One copy, straight into the (N, C, H, W) layout (a stack then a transpose is two).
        np.stack(images, out=out.transpose(0, 2, 3, 1))
        return out
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
