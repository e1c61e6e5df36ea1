"""Datasets that ship with the dependencies: nothing is downloaded."""

from __future__ import annotations

import numpy as np
from PIL import Image

from genimg.data.dataset import Dataset
from genimg.data.moving_digits import make_moving_digits

DIGITS_SIZE = 16
MOVING_DIGITS_SEQUENCES = 2000
MOVING_DIGITS_FRAMES = 10
MOVING_DIGITS_CANVAS = 32


def load_digits_16() -> Dataset:
    """scikit-learn's 1,797 real 8×8 handwritten digits (17 grey levels), upsampled to 16×16."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    levels = np.rint(digits.images * (255.0 / 16.0)).astype(np.uint8)
    images = np.stack(
        [
            np.asarray(Image.fromarray(image, "L").resize((DIGITS_SIZE, DIGITS_SIZE), Image.Resampling.BILINEAR))
            for image in levels
        ]
    )[:, None]
    return Dataset(
        kind="images",
        data=images,
        source="builtin:digits",
        labels=digits.target.astype(np.int64),
        class_names=[str(i) for i in range(10)],
    )


def load_moving_digits() -> Dataset:
    """2,000 sequences of 10 frames: 2 builtin digits bouncing in a 32×32 canvas (seed 0)."""
    digits = load_digits_16()
    sequences = make_moving_digits(
        digits.data,
        MOVING_DIGITS_SEQUENCES,
        num_frames=MOVING_DIGITS_FRAMES,
        canvas_size=MOVING_DIGITS_CANVAS,
        digits_per_sequence=2,
        seed=0,
    )
    return Dataset(kind="sequences", data=sequences, source="builtin:moving-digits")


BUILTIN_SOURCES = {
    "builtin:digits": load_digits_16,
    "builtin:moving-digits": load_moving_digits,
}
