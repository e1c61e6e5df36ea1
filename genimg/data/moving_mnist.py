"""Moving MNIST (Srivastava et al. 2015): MNIST digits bouncing in a square canvas.

Two sources:

- `moving-mnist:PATH[?frames=20&size=64&digits=2&count=10000&seed=0]` with PATH an MNIST IDX
  images file generates the sequences as Srivastava's `moving_mnist.py` does: each digit starts
  at a uniform random position of the free range (size − digit side), moves 0.1 of that range per
  frame in a uniform random direction, is clipped to a wall it reaches and bounces (that velocity
  component flips); overlapping digits combine by maximum. Deterministic by seed.
- the published file (`mnist_test_seq.npy`: T × N × 64 × 64 uint8, frames first), as
  `moving-mnist:PATH.npy[?count=N]` or as a plain path named `mnist_test_seq*.npy`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from genimg.data.dataset import Dataset
from genimg.data.idx import read_idx
from genimg.data.normalize import MAX_SIDE, MIN_SIDE, check_side
from genimg.errors import DataError
from genimg.limits import check_memory

MOVING_MNIST_PREFIX = "moving-mnist:"
MOVING_MNIST_USAGE = "moving-mnist:PATH[?frames=20&size=64&digits=2&count=10000&seed=0]"
# Srivastava's step_length_: a step is this fraction of the free range (3.6 px for 28 px digits
# at 64 px).
STEP_LENGTH = 0.1
# key: (lowest, highest, default). Limits keep a typo from asking for terabytes.
QUERY_KEYS: dict[str, tuple[int, int, int]] = {
    "frames": (1, 1000, 20),
    "size": (MIN_SIDE, MAX_SIDE, 64),
    "digits": (1, 16, 2),
    "count": (1, 1_000_000, 10_000),
    "seed": (0, 2**63 - 1, 0),
}
NPY_QUERY_KEYS = ("count",)
# The generated array is held in memory whole: refuse a query that would not fit a workstation.
MAX_GENERATED_BYTES = 16 * 1024**3
# Sequences rendered per batch: bounds the gathered patches to a few MB.
RENDER_CHUNK = 512
INTEGER = re.compile(r"-?[0-9]+")


@dataclass(frozen=True)
class Trajectories:
    """Where every digit of every sequence is drawn.

    digit: (S, D) index into the digit images; top, left: (S, T, D) pixel row and column of each
    digit's top-left corner in each frame.
    """

    digit: np.ndarray
    top: np.ndarray
    left: np.ndarray


def moving_mnist_trajectories(
    num_sequences: int,
    *,
    num_digits: int,
    digit_shape: tuple[int, int],
    num_frames: int = 20,
    size: int = 64,
    digits_per_sequence: int = 2,
    seed: int = 0,
) -> Trajectories:
    """The digit choices and per-frame positions `make_moving_mnist` draws (`num_digits` images
    of `digit_shape` to choose from). Arguments are checked as `make_moving_mnist` checks them."""
    check_arguments(num_digits, digit_shape, num_sequences, num_frames, size, digits_per_sequence)
    rng = np.random.default_rng(seed)
    # One block of 4 uniforms per digit, in sequence order, so the first k sequences of a seed
    # are the same whatever num_sequences is (count=100 is a prefix of count=10000).
    uniforms = rng.random((num_sequences, digits_per_sequence, 4))
    digit = np.minimum((uniforms[..., 0] * num_digits).astype(np.int64), num_digits - 1)
    position = uniforms[..., 1:3].copy()  # (y, x) in units of the free range
    theta = uniforms[..., 3] * (2 * np.pi)
    velocity = np.stack([np.sin(theta), np.cos(theta)], axis=-1) * STEP_LENGTH
    free_range = np.array([size - digit_shape[0], size - digit_shape[1]], dtype=np.float64)
    pixels = np.empty((num_sequences, num_frames, digits_per_sequence, 2), np.int64)
    for t in range(num_frames):
        # As in the original: step first, then clip to a wall reached and flip that component.
        position += velocity
        at_low, at_high = position <= 0.0, position >= 1.0
        position[at_low] = 0.0
        position[at_high] = 1.0
        velocity[at_low | at_high] *= -1.0
        pixels[:, t] = (free_range * position).astype(np.int64)  # truncation, as int() does
    return Trajectories(digit=digit, top=pixels[..., 0], left=pixels[..., 1])


def render_moving_mnist(digits: np.ndarray, trajectories: Trajectories, size: int) -> np.ndarray:
    """Sequences (S, T, 1, size, size) uint8: each digit drawn where `trajectories` put it,
    overlapping digits combined by maximum."""
    num_sequences, num_frames, digits_per_sequence = trajectories.top.shape
    height, width = digits.shape[-2:]
    out = np.zeros((num_sequences, num_frames, 1, size, size), np.uint8)
    # windows[s, t, y, x] is the (height, width) patch of frame (s, t) at (y, x), a writable view:
    # one fancy-indexed read and write per digit draws it in every frame of a batch at once.
    windows = sliding_window_view(out[:, :, 0], (height, width), axis=(2, 3), writeable=True)
    frames = np.arange(num_frames)[None, :]
    for start in range(0, num_sequences, RENDER_CHUNK):
        chunk = slice(start, start + RENDER_CHUNK)
        sequences = np.arange(start, min(start + RENDER_CHUNK, num_sequences))[:, None]
        for d in range(digits_per_sequence):
            # Within one digit slot every (sequence, frame) is drawn once, so no writes collide.
            top, left = trajectories.top[chunk, :, d], trajectories.left[chunk, :, d]
            where = (sequences, frames, top, left)
            images = digits[trajectories.digit[chunk, d], 0][:, None]
            windows[where] = np.maximum(windows[where], images)
    return out


def make_moving_mnist(
    digits: np.ndarray,
    num_sequences: int,
    *,
    num_frames: int = 20,
    size: int = 64,
    digits_per_sequence: int = 2,
    seed: int = 0,
) -> np.ndarray:
    """Moving MNIST sequences (S, T, 1, size, size) uint8 of `digits_per_sequence` digits chosen
    uniformly from `digits` ((N, 1, h, w) uint8, h and w ≤ size), as Srivastava et al. make them."""
    if digits.ndim != 4 or digits.dtype != np.uint8 or digits.shape[1] != 1:
        raise ValueError(f"digits must be uint8 (N, 1, h, w), got {digits.dtype} {digits.shape}")
    trajectories = moving_mnist_trajectories(
        num_sequences,
        num_digits=len(digits),
        digit_shape=(int(digits.shape[2]), int(digits.shape[3])),
        num_frames=num_frames,
        size=size,
        digits_per_sequence=digits_per_sequence,
        seed=seed,
    )
    return render_moving_mnist(digits, trajectories, size)


def check_arguments(
    num_digits: int,
    digit_shape: tuple[int, int],
    num_sequences: int,
    num_frames: int,
    size: int,
    digits_per_sequence: int,
) -> None:
    if num_digits < 1:
        raise ValueError("no digit images to move (digits is empty)")
    if digit_shape[0] > size or digit_shape[1] > size:
        height, width = digit_shape
        raise ValueError(f"digits of {height}x{width} px do not fit a {size} px canvas")
    for name, value in (
        ("num_sequences", num_sequences),
        ("num_frames", num_frames),
        ("digits_per_sequence", digits_per_sequence),
    ):
        if value < 1:
            raise ValueError(f"{name} must be at least 1, got {value}")


def is_moving_mnist_npy(path: Path) -> bool:
    """The published file's name (`mnist_test_seq.npy`, or a copy named after it)."""
    name = path.name.lower()
    return name.startswith("mnist_test_seq") and name.endswith(".npy")


def read_moving_mnist_npy(path: Path, count: int | None = None, shown_as: str | None = None) -> Dataset:
    """The first `count` (default: all) sequences of a T × N × H × W uint8 file, as
    (N, T, 1, H, W)."""
    shown = shown_as or str(path)
    try:
        # Memory-mapped: only the sequences kept are read, and copied once (by the transpose).
        frames_first = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise DataError(f"{shown}: not a readable .npy file ({exc})") from exc
    if frames_first.ndim != 4 or frames_first.dtype != np.uint8:
        raise DataError(
            f"{shown}: expected Moving MNIST's frames × sequences × height × width uint8, "
            f"got {frames_first.dtype} {frames_first.shape}"
        )
    side_problem = check_side(*frames_first.shape[2:])
    if side_problem:
        raise DataError(f"{shown}: {side_problem}")
    available = int(frames_first.shape[1])
    if count is not None and count > available:
        raise DataError(f"{shown}: count={count} but the file holds {available} sequences")
    kept = frames_first[:, : available if count is None else count]
    check_memory(
        f"{shown}: {kept.shape[1]} sequences of {kept.shape[0]} frames of {kept.shape[2]}x{kept.shape[3]} px",
        kept.size,
        "read fewer (moving-mnist:PATH.npy?count=N)",
        DataError,
    )
    data = np.ascontiguousarray(kept.transpose(1, 0, 2, 3))[:, :, None]
    return Dataset(kind="sequences", data=data, source=shown)


def parse_query(source: str, query: str, allowed: tuple[str, ...]) -> dict[str, int]:
    """The integer settings of `query` ('frames=12&count=5'), each checked against QUERY_KEYS."""
    values: dict[str, int] = {}
    for field in query.split("&") if query else []:
        key, equals, text = field.partition("=")
        if key not in allowed:
            raise DataError(f"{source}: unknown key {key!r} (accepted: {', '.join(allowed)})")
        if key in values:
            raise DataError(f"{source}: {key} given twice")
        lowest, highest, _ = QUERY_KEYS[key]
        if not equals or not INTEGER.fullmatch(text) or not lowest <= int(text) <= highest:
            raise DataError(f"{source}: {key} must be an integer from {lowest} to {highest}, got {text!r}")
        values[key] = int(text)
    return values


def read_moving_mnist(source: str) -> Dataset:
    """The Dataset of a `moving-mnist:PATH[?…]` source (see the module docstring)."""
    if not source.startswith(MOVING_MNIST_PREFIX):
        raise DataError(f"{source}: not a moving-mnist source (expected {MOVING_MNIST_USAGE})")
    rest = source.removeprefix(MOVING_MNIST_PREFIX)
    # The last '?' starts the query: a query never holds one, a path rarely does.
    path_text, _, query = rest.rpartition("?") if "?" in rest else (rest, "", "")
    if not path_text:
        raise DataError(f"{source}: no path to an MNIST IDX file (expected {MOVING_MNIST_USAGE})")
    path = Path(path_text).expanduser()
    if not path.is_file():
        raise DataError(f"{source}: file not found: {path}")
    if path.name.lower().endswith(".npy"):
        values = parse_query(source, query, NPY_QUERY_KEYS)
        dataset = read_moving_mnist_npy(path, values.get("count"), shown_as=str(path))
        dataset.source = source
        return dataset
    values = parse_query(source, query, tuple(QUERY_KEYS))
    settings = {key: values.get(key, default) for key, (_, _, default) in QUERY_KEYS.items()}
    size, frames, count = settings["size"], settings["frames"], settings["count"]
    if count * frames * size * size > MAX_GENERATED_BYTES:
        raise DataError(
            f"{source}: count × frames × size² = {count * frames * size * size / 1024**3:.1f} GiB "
            f"(at most {MAX_GENERATED_BYTES // 1024**3} GiB); lower count, frames or size"
        )
    # The static cap above keeps a typo from asking for terabytes; this one, what this machine can hold.
    check_memory(
        f"{source}: count={count} sequences of {frames} frames of {size}x{size} px",
        count * frames * size * size,
        "lower count, frames or size",
        DataError,
    )
    try:
        digits = read_idx(path)
    except OSError as exc:
        raise DataError(f"{source}: cannot read {path} ({exc})") from exc
    if len(digits) == 0:
        raise DataError(f"{source}: {path} holds no usable digit images")
    channels, height, width = digits.image_shape
    if channels != 1:
        raise DataError(f"{source}: {path} holds {channels}-channel images; Moving MNIST needs grey digits")
    if height > size or width > size:
        raise DataError(f"{source}: size={size} is smaller than the {height}x{width} px digits")
    data = make_moving_mnist(
        digits.data,
        count,
        num_frames=frames,
        size=size,
        digits_per_sequence=settings["digits"],
        seed=settings["seed"],
    )
    # A truncated or partly bad IDX file still says so, though every sequence is complete.
    return Dataset(kind="sequences", data=data, source=source, rejected=list(digits.rejected))
