"""DiffAugment (Zhao et al. 2020, "Differentiable Augmentation for Data-Efficient GAN Training").

The same random, differentiable transformations are applied to every image the discriminator
sees, real and generated, in both the discriminator's and the generator's step: D cannot tell
real from fake by augmentation artefacts, and G's gradients flow through the transformation. It
keeps D from memorising a small training set, the main cause of GAN collapse below ~100k images.

Policy: a comma-separated subset of `color` (brightness, saturation, contrast), `translation`
(shift by up to 1/8 of the side, zero padding) and `cutout` (a random square of half the side
set to zero). Images are (N, C, H, W) in the model's own range ([-1, 1] or [0, 1]).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F

from genimg.errors import ConfigError

AUGMENTATIONS = ("color", "translation", "cutout")


def parse_policy(policy: str) -> tuple[str, ...]:
    """'color,translation' → ('color', 'translation'); '' → (); an unknown name is refused."""
    names = tuple(part.strip() for part in policy.split(",") if part.strip())
    unknown = [name for name in names if name not in AUGMENTATIONS]
    if unknown:
        raise ConfigError(f"model.augment: unknown augmentation {unknown[0]!r} (known: {', '.join(AUGMENTATIONS)})")
    if len(set(names)) != len(names):
        raise ConfigError(f"model.augment lists an augmentation twice: {policy!r}")
    return names


def diff_augment(images: Tensor, policy: tuple[str, ...]) -> Tensor:
    """`images` transformed by `policy`, each image with its own random draw."""
    for name in policy:
        images = AUGMENT[name](images)
    return images


def color(images: Tensor) -> Tensor:
    n = images.shape[0]
    ones = (n, 1, 1, 1)
    images = images + (torch.rand(ones, dtype=images.dtype, device=images.device) - 0.5)  # brightness
    if images.shape[1] > 1:  # saturation: scale the distance from the pixel's grey value
        grey = images.mean(dim=1, keepdim=True)
        images = (images - grey) * (torch.rand(ones, dtype=images.dtype, device=images.device) * 2) + grey
    mean = images.mean(dim=(1, 2, 3), keepdim=True)  # contrast
    return (images - mean) * (torch.rand(ones, dtype=images.dtype, device=images.device) + 0.5) + mean


def translation(images: Tensor, ratio: float = 0.125) -> Tensor:
    n, _, height, width = images.shape
    shift_y, shift_x = int(height * ratio + 0.5), int(width * ratio + 0.5)
    dy = torch.randint(-shift_y, shift_y + 1, (n, 1, 1), device=images.device)
    dx = torch.randint(-shift_x, shift_x + 1, (n, 1, 1), device=images.device)
    rows = torch.arange(height, device=images.device).view(1, height, 1)
    cols = torch.arange(width, device=images.device).view(1, 1, width)
    # Index into a zero-padded copy: a shifted-out pixel reads the padding (a gather, so
    # gradients reach the pixels that stay in view).
    row_index = (rows + dy + 1).clamp(0, height + 1).expand(n, height, width)
    col_index = (cols + dx + 1).clamp(0, width + 1).expand(n, height, width)
    padded = F.pad(images, [1, 1, 1, 1])
    batch_index = torch.arange(n, device=images.device).view(n, 1, 1).expand(n, height, width)
    return padded.permute(0, 2, 3, 1)[batch_index, row_index, col_index].permute(0, 3, 1, 2)


def cutout(images: Tensor, ratio: float = 0.5) -> Tensor:
    n, _, height, width = images.shape
    size_y, size_x = int(height * ratio + 0.5), int(width * ratio + 0.5)
    top = torch.randint(0, height + (1 - size_y % 2), (n, 1, 1), device=images.device) - size_y // 2
    left = torch.randint(0, width + (1 - size_x % 2), (n, 1, 1), device=images.device) - size_x // 2
    rows = torch.arange(height, device=images.device).view(1, height, 1)
    cols = torch.arange(width, device=images.device).view(1, 1, width)
    inside = (rows >= top) & (rows < top + size_y) & (cols >= left) & (cols < left + size_x)
    return images * (~inside).unsqueeze(1).to(images.dtype)


AUGMENT = {"color": color, "translation": translation, "cutout": cutout}
