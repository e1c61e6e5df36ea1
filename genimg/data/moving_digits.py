"""Moving-MNIST-style sequences: digits bouncing inside a canvas, deterministic by seed."""

from __future__ import annotations

import numpy as np


def make_moving_digits(
    digits: np.ndarray,
    num_sequences: int,
    *,
    num_frames: int = 10,
    canvas_size: int = 32,
    digits_per_sequence: int = 2,
    min_speed: float = 1.0,
    max_speed: float = 2.5,
    seed: int = 0,
) -> np.ndarray:
    """Sequences (S, T, C, canvas, canvas) uint8 of digits moving in straight lines and
    bouncing off the canvas edges; overlapping digits combine by maximum, as in Moving MNIST.

    `digits` is any (N, C, h, w) uint8 array of digit images (h, w ≤ canvas_size).
    """
    if digits.ndim != 4 or digits.dtype != np.uint8:
        raise ValueError(f"digits must be uint8 (N, C, h, w), got {digits.dtype} {digits.shape}")
    count, channels, height, width = digits.shape
    if count == 0:
        raise ValueError("no digit images to move")
    if height > canvas_size or width > canvas_size:
        raise ValueError(f"digits of {height}x{width} px do not fit a {canvas_size} px canvas")
    if num_sequences < 0 or num_frames < 1 or digits_per_sequence < 1:
        raise ValueError("num_sequences ≥ 0, num_frames ≥ 1 and digits_per_sequence ≥ 1 required")
    rng = np.random.default_rng(seed)
    limits = np.array([canvas_size - height, canvas_size - width], dtype=np.float64)
    out = np.zeros((num_sequences, num_frames, channels, canvas_size, canvas_size), np.uint8)
    for s in range(num_sequences):
        chosen = rng.integers(count, size=digits_per_sequence)
        position = rng.uniform(0.0, 1.0, size=(digits_per_sequence, 2)) * limits
        angle = rng.uniform(0.0, 2 * np.pi, size=digits_per_sequence)
        speed = rng.uniform(min_speed, max_speed, size=digits_per_sequence)
        velocity = np.stack([np.sin(angle), np.cos(angle)], axis=1) * speed[:, None]
        for t in range(num_frames):
            frame = out[s, t]
            for d in range(digits_per_sequence):
                y, x = np.rint(position[d]).astype(int)
                patch = frame[:, y : y + height, x : x + width]
                np.maximum(patch, digits[chosen[d]], out=patch)
            position += velocity
            # Reflect off the walls: a position past an edge is mirrored back inside.
            low, high = position < 0, position > limits
            position[low] = -position[low]
            position[high] = 2 * np.broadcast_to(limits, position.shape)[high] - position[high]
            velocity[low | high] = -velocity[low | high]
    return out
