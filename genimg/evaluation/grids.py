"""Sample grids (PNG) and animated sequence grids (GIF) from pixel tensors in [0, 1]."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from genimg.models.base import GenerativeModel, model_spec

MIN_CELL_PX = 64  # small images are enlarged (nearest neighbour) so grids are easy to look at


def to_uint8(images: torch.Tensor | np.ndarray) -> np.ndarray:
    array = images.detach().cpu().numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
    if array.dtype != np.uint8:
        array = np.clip(np.rint(array * 255.0), 0, 255).astype(np.uint8)
    return array


def image_grid(
    images: torch.Tensor | np.ndarray,
    *,
    columns: int | None = None,
    padding: int = 2,
    scale: int | None = None,
) -> np.ndarray:
    """(N, C, H, W) → one (rows·H, columns·W, C) uint8 image with `padding` px of grey between."""
    array = to_uint8(images)
    if array.ndim != 4 or array.shape[1] not in (1, 3):
        raise ValueError(f"expected (N, 1|3, H, W) images, got shape {array.shape}")
    count, channels, height, width = array.shape
    if scale is None:
        scale = max(1, MIN_CELL_PX // max(height, width))
    if scale > 1:
        array = array.repeat(scale, axis=2).repeat(scale, axis=3)
        height, width = height * scale, width * scale
    columns = columns or max(1, math.ceil(math.sqrt(count)))
    rows = max(1, math.ceil(count / columns))
    grid = np.full(
        (rows * (height + padding) + padding, columns * (width + padding) + padding, channels),
        96,
        np.uint8,
    )
    for index in range(count):
        row, column = divmod(index, columns)
        top, left = padding + row * (height + padding), padding + column * (width + padding)
        grid[top : top + height, left : left + width] = array[index].transpose(1, 2, 0)
    return grid


def to_pil(grid: np.ndarray) -> Image.Image:
    return Image.fromarray(grid.squeeze(2), "L") if grid.shape[2] == 1 else Image.fromarray(grid, "RGB")


def save_image_grid(images: torch.Tensor | np.ndarray, path: str | Path, **grid_options: int) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    to_pil(image_grid(images, **grid_options)).save(path)
    return path


def save_sequence_strips(sequences: torch.Tensor | np.ndarray, path: str | Path) -> Path:
    """(N, T, C, H, W) → PNG with one row per sequence and one column per frame."""
    array = to_uint8(sequences)
    count, steps = array.shape[:2]
    return save_image_grid(array.reshape(count * steps, *array.shape[2:]), path, columns=steps)


def save_sequence_gif(sequences: torch.Tensor | np.ndarray, path: str | Path, *, frame_ms: int = 200) -> Path:
    """(N, T, C, H, W) → animated GIF whose frame t is the grid of every sequence's frame t."""
    array = to_uint8(sequences)
    if array.ndim != 5:
        raise ValueError(f"expected (N, T, C, H, W) sequences, got shape {array.shape}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = [to_pil(image_grid(array[:, t])).convert("P") for t in range(array.shape[1])]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=frame_ms, loop=0)
    return path


def sample_png(model: GenerativeModel) -> bytes:
    """The grid a run logs at each checkpoint (MLflow's image slider shows them by step): 64
    images, or 8 sequences a row each, from seed 0 so that the grids of a run compare."""
    if model_spec(model.registry_name).data_kind == "sequences":
        sequences = to_uint8(model.sample(8, seed=0))
        grid = image_grid(sequences.reshape(-1, *sequences.shape[2:]), columns=sequences.shape[1])
    else:
        grid = image_grid(model.sample(64, seed=0))
    buffer = io.BytesIO()
    to_pil(grid).save(buffer, format="PNG")
    return buffer.getvalue()
