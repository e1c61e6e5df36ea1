"""Drawing samples from a trained model into a PNG grid or an animated GIF."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, cast

import numpy as np
import torch

from genimg.errors import GenimgError
from genimg.evaluation.grids import save_image_grid, save_sequence_gif, save_sequence_strips, to_uint8
from genimg.limits import check_memory
from genimg.models.base import GenerativeModel, class_index, model_spec
from genimg.tracking.evaluations import RUN_ID_PATTERN, resolve_target
from genimg.tracking.models import load_model_at
from genimg.training.config import MAX_SEED

# What a sample costs per value at least: the fp32 output, the decoder's last activations, the grid.
SAMPLE_BYTES_PER_VALUE = 16


class ImageSampler(Protocol):
    """`sample` of every image model: class labels per sample (None: drawn from the seed)."""

    def sample(self, n: int, seed: int | None = None, labels: torch.Tensor | None = None) -> torch.Tensor: ...


class SequenceSampler(Protocol):
    """`sample` of every sequence model: `num_frames` per sequence (None: the model's own)."""

    def sample(self, n: int, seed: int | None = None, num_frames: int | None = None) -> torch.Tensor: ...


@dataclass(frozen=True)
class SampleOutcome:
    model: str
    output: str
    num_samples: int
    seed: int
    shape: tuple[int, ...]
    classes: tuple[str, ...] | None  # per sample, for a class-conditional model asked for classes

    def as_dict(self) -> dict[str, Any]:
        """What `genimg sample --json` prints."""
        return {
            "model": self.model,
            "output": self.output,
            "num_samples": self.num_samples,
            "seed": self.seed,
            "shape": list(self.shape),
            "classes": list(self.classes) if self.classes is not None else None,
        }


def class_labels(model: GenerativeModel, classes: list[str] | None, n: int) -> torch.Tensor | None:
    """The samples split between `classes` (indices or names) in order."""
    if not classes:
        return None
    chosen = [class_index(model, value) for value in classes]
    if n < len(chosen):
        raise GenimgError(f"-n {n} is fewer than the {len(chosen)} classes asked for")
    return torch.tensor([chosen[i * len(chosen) // n] for i in range(n)])


def check_sample_memory(model: GenerativeModel, n: int, frames: int | None) -> None:
    """Refuse -n whose samples cannot fit this machine's memory (genimg.limits), before drawing."""
    values = math.prod(model.config.image_shape)
    if model_spec(model.registry_name).data_kind == "sequences":
        values *= frames or model.config.num_frames
    check_memory(
        f"-n {n}", n * values * SAMPLE_BYTES_PER_VALUE, f"draw fewer (a sample holds {values:,} values)", GenimgError
    )


def model_location(model_uri: str) -> str:
    """Where a model's files are: a run id or runs:/RUN_ID (an MLflow training run) is its
    latest checkpoint; anything else is such a place already."""
    if model_uri.startswith("runs:/") or (RUN_ID_PATTERN.fullmatch(model_uri) and not Path(model_uri).exists()):
        return resolve_target(model_uri).checkpoint
    return model_uri


def model_to_sample(model_uri: str, n: int, seed: int, frames: int | None) -> GenerativeModel:
    """The model at `model_uri`, once -n, --seed and the memory the samples take are checked."""
    if n < 1:
        raise GenimgError(f"-n must be ≥ 1, got {n}")
    if not 0 <= seed <= MAX_SEED:
        raise GenimgError(f"--seed must be from 0 to {MAX_SEED}, got {seed}")
    model = load_model_at(model_location(model_uri))
    check_sample_memory(model, n, frames)
    return model


def draw(model: GenerativeModel, n: int, seed: int, frames: int | None, labels: torch.Tensor | None) -> torch.Tensor:
    """`n` samples in [0, 1]: (N, C, H, W) images or (N, T, C, H, W) sequences."""
    with torch.no_grad():
        if model_spec(model.registry_name).data_kind == "images":
            return cast(ImageSampler, model).sample(n, seed=seed, labels=labels)
        return cast(SequenceSampler, model).sample(n, seed=seed, num_frames=frames)


def sample_array(
    model_uri: str, n: int = 64, *, seed: int = 0, frames: int | None = None, classes: list[str] | None = None
) -> np.ndarray:
    """`n` samples as uint8 (0–255), (N, C, H, W) or (N, T, C, H, W), as the served model returns them."""
    model = model_to_sample(model_uri, n, seed, frames)
    return to_uint8(draw(model, n, seed, frames, class_labels(model, classes, n)))


def sample(
    model_uri: str,
    output: Path,
    n: int = 64,
    *,
    seed: int = 0,
    frames: int | None = None,
    classes: list[str] | None = None,
) -> SampleOutcome:
    """`model_uri`: an MLflow run id or runs:/RUN_ID, an exported model or checkpoint folder (path,
    file://, s3://) or models:/NAME/VERSION | models:/NAME@ALIAS; `output`: FILE.png (grid) or
    FILE.gif (sequences)."""
    suffix = output.suffix.lower()
    if suffix not in (".png", ".gif"):
        raise GenimgError(f"output must end in .png or .gif, got {output}")
    model = model_to_sample(model_uri, n, seed, frames)
    labels = class_labels(model, classes, n)
    if model_spec(model.registry_name).data_kind == "images" and suffix == ".gif":
        raise GenimgError(f"{model.registry_name} draws still images: write a .png")
    samples = draw(model, n, seed, frames, labels)
    if samples.dim() == 4:
        save_image_grid(samples, output)
    else:
        (save_sequence_gif if suffix == ".gif" else save_sequence_strips)(samples, output)
    shown = None
    if labels is not None:
        shown = tuple(model.class_names[k] if model.class_names else str(k) for k in labels.tolist())
    return SampleOutcome(model.registry_name, str(output), n, seed, tuple(samples.shape), shown)
