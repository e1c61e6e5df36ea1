"""Drawing samples from a trained model into a PNG grid or an animated GIF."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, cast

import torch

from genimg.errors import GenimgError
from genimg.evaluation.grids import save_image_grid, save_sequence_gif, save_sequence_strips
from genimg.limits import check_memory
from genimg.models.base import GenerativeModel, class_index, model_spec
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


def sample(
    model_uri: str,
    output: Path,
    n: int = 64,
    *,
    seed: int = 0,
    frames: int | None = None,
    classes: list[str] | None = None,
) -> SampleOutcome:
    """`model_uri`: an exported model or checkpoint folder (path, file://, s3://) or
    models:/NAME/VERSION | models:/NAME@ALIAS; `output`: FILE.png (grid) or FILE.gif (sequences)."""
    suffix = output.suffix.lower()
    if suffix not in (".png", ".gif"):
        raise GenimgError(f"output must end in .png or .gif, got {output}")
    if n < 1:
        raise GenimgError(f"-n must be ≥ 1, got {n}")
    if not 0 <= seed <= MAX_SEED:
        raise GenimgError(f"--seed must be from 0 to {MAX_SEED}, got {seed}")
    model = load_model_at(model_uri)
    check_sample_memory(model, n, frames)
    labels = class_labels(model, classes, n)
    if model_spec(model.registry_name).data_kind == "images":
        if suffix == ".gif":
            raise GenimgError(f"{model.registry_name} draws still images: write a .png")
        samples = cast(ImageSampler, model).sample(n, seed=seed, labels=labels)
        save_image_grid(samples, output)
    else:
        samples = cast(SequenceSampler, model).sample(n, seed=seed, num_frames=frames)
        (save_sequence_gif if suffix == ".gif" else save_sequence_strips)(samples, output)
    shown = None
    if labels is not None:
        shown = tuple(model.class_names[k] if model.class_names else str(k) for k in labels.tolist())
    return SampleOutcome(model.registry_name, str(output), n, seed, tuple(samples.shape), shown)
