"""Convolutional building blocks shared by the GAN, VAE and RVAE families.

Every conv net here halves (or doubles) the spatial size a fixed number of times between the
image and a small "base" grid. `resolution_plan` picks that number from the image size, so the
same code serves 8, 16, 28, 32 and 64 px images (28 → 14 → 7; 32 → 16 → 8 → 4).
"""

from __future__ import annotations

from typing import Literal, cast

import torch
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm as apply_spectral_norm

Norm = Literal["batch", "none"]
MAX_WIDTH_MULTIPLIER = 8


def resolution_plan(height: int, width: int) -> tuple[int, int, int]:
    """(stride-2 stages, base height, base width): halve while both sides stay even and ≥ 4."""
    stages = 0
    while height % 2 == 0 and width % 2 == 0 and height // 2 >= 4 and width // 2 >= 4:
        height, width, stages = height // 2, width // 2, stages + 1
    return stages, height, width


def stage_channels(width: int, stages: int) -> list[int]:
    """Channels after each stride-2 stage of an encoder: width, 2·width, … capped at 8·width."""
    return [width * min(2**i, MAX_WIDTH_MULTIPLIER) for i in range(max(stages, 1))]


class ConvEncoder(nn.Module):
    """Image (B, C, H, W) → feature vector (B, out_features) through strided convolutions."""

    def __init__(
        self,
        image_shape: tuple[int, int, int],
        width: int,
        out_features: int,
        *,
        norm: Norm = "none",
        spectral_norm: bool = False,
    ) -> None:
        super().__init__()
        channels, height, width_px = image_shape
        stages, base_h, base_w = resolution_plan(height, width_px)
        sizes = stage_channels(width, stages)

        def conv(c_in: int, c_out: int, kernel: int, stride: int, padding: int) -> nn.Module:
            layer = nn.Conv2d(c_in, c_out, kernel, stride, padding, bias=norm == "none")
            return apply_spectral_norm(layer) if spectral_norm else layer

        layers: list[nn.Module] = []
        c_in = channels
        if stages == 0:
            layers += [conv(c_in, sizes[0], 3, 1, 1), nn.LeakyReLU(0.2)]
            c_in = sizes[0]
        for i in range(stages):
            layers.append(conv(c_in, sizes[i], 4, 2, 1))
            # The first stage sees raw pixels: normalising it is known to hurt GAN discriminators.
            if norm == "batch" and i > 0:
                layers.append(nn.BatchNorm2d(sizes[i]))
            layers.append(nn.LeakyReLU(0.2))
            c_in = sizes[i]
        self.features = nn.Sequential(*layers)
        head = nn.Linear(c_in * base_h * base_w, out_features)
        # spectral_norm parametrizes the layer in place and returns it (typed as any Module).
        self.head = cast(nn.Linear, apply_spectral_norm(head)) if spectral_norm else head

    def forward(self, images: Tensor) -> Tensor:
        return self.head(self.features(images).flatten(1))


class ConvDecoder(nn.Module):
    """Vector (B, in_features) → image-shaped output (B, C, H, W), unbounded (logits or pre-tanh)."""

    def __init__(
        self,
        in_features: int,
        image_shape: tuple[int, int, int],
        width: int,
        *,
        norm: Norm = "batch",
    ) -> None:
        super().__init__()
        channels, height, width_px = image_shape
        stages, base_h, base_w = resolution_plan(height, width_px)
        sizes = stage_channels(width, stages)
        self.base_shape = (sizes[-1], base_h, base_w)

        def normalize(c: int) -> nn.Module:
            return nn.BatchNorm2d(c) if norm == "batch" else nn.Identity()

        self.project = nn.Linear(in_features, sizes[-1] * base_h * base_w, bias=norm == "none")
        layers: list[nn.Module] = [normalize(sizes[-1]), nn.ReLU()]
        for i in range(stages - 1, 0, -1):
            layers += [
                nn.ConvTranspose2d(sizes[i], sizes[i - 1], 4, 2, 1, bias=norm == "none"),
                normalize(sizes[i - 1]),
                nn.ReLU(),
            ]
        if stages == 0:
            layers.append(nn.Conv2d(sizes[0], channels, 3, 1, 1))
        else:
            layers.append(nn.ConvTranspose2d(sizes[0], channels, 4, 2, 1))
        self.features = nn.Sequential(*layers)

    def forward(self, vectors: Tensor) -> Tensor:
        return self.features(self.project(vectors).view(-1, *self.base_shape))


class ResidualBlock(nn.Module):
    """x + conv1×1(relu(conv3×3(relu(x)))), a bottleneck of `hidden` channels (no normalisation:
    a likelihood model scored in eval mode must not see BatchNorm's train/eval gap)."""

    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.ReLU(),
            nn.Conv2d(channels, hidden, 3, 1, 1),
            nn.ReLU(),
            nn.Conv2d(hidden, channels, 1),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


def residual_stack(channels: int, blocks: int) -> list[nn.Module]:
    return [ResidualBlock(channels, max(channels // 4, 1)) for _ in range(blocks)]


class ResNetEncoder(nn.Module):
    """Image → feature vector: strided 4×4 convolutions down to the base grid, then `blocks`
    residual blocks there (the MNIST ResNet of pythae's benchmarks, for any resolution)."""

    def __init__(self, image_shape: tuple[int, int, int], width: int, out_features: int, *, blocks: int = 2) -> None:
        super().__init__()
        channels, height, width_px = image_shape
        stages, base_h, base_w = resolution_plan(height, width_px)
        sizes = stage_channels(width, stages)
        layers: list[nn.Module] = []
        c_in = channels
        if stages == 0:
            layers += [nn.Conv2d(c_in, sizes[0], 3, 1, 1), nn.ReLU()]
            c_in = sizes[0]
        for i in range(stages):
            layers += [nn.Conv2d(c_in, sizes[i], 4, 2, 1), nn.ReLU()]
            c_in = sizes[i]
        layers += [*residual_stack(c_in, blocks), nn.ReLU()]
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(c_in * base_h * base_w, out_features)

    def forward(self, images: Tensor) -> Tensor:
        return self.head(self.features(images).flatten(1))


class ResNetDecoder(nn.Module):
    """Vector → image-shaped output (`image_shape[0]` channels, unbounded): a projection to the
    base grid, `blocks` residual blocks there, then transposed 4×4 convolutions up to full size,
    each followed by `blocks_per_stage` residual blocks (decoder capacity where pixels are)."""

    def __init__(
        self,
        in_features: int,
        image_shape: tuple[int, int, int],
        width: int,
        *,
        blocks: int = 2,
        blocks_per_stage: int = 0,
    ) -> None:
        super().__init__()
        channels, height, width_px = image_shape
        stages, base_h, base_w = resolution_plan(height, width_px)
        sizes = stage_channels(width, stages)
        self.base_shape = (sizes[-1], base_h, base_w)
        self.project = nn.Linear(in_features, sizes[-1] * base_h * base_w)
        layers: list[nn.Module] = [*residual_stack(sizes[-1], blocks), nn.ReLU()]
        for i in range(stages - 1, 0, -1):
            layers += [nn.ConvTranspose2d(sizes[i], sizes[i - 1], 4, 2, 1)]
            layers += [*residual_stack(sizes[i - 1], blocks_per_stage), nn.ReLU()]
        if stages == 0:
            layers.append(nn.Conv2d(sizes[0], channels, 3, 1, 1))
        else:
            layers.append(nn.ConvTranspose2d(sizes[0], channels, 4, 2, 1))
        self.features = nn.Sequential(*layers)

    def forward(self, vectors: Tensor) -> Tensor:
        return self.features(self.project(vectors).view(-1, *self.base_shape))


def gaussian_kl(mu_q: Tensor, logvar_q: Tensor, mu_p: Tensor, logvar_p: Tensor) -> Tensor:
    """KL(N(mu_q, var_q) ‖ N(mu_p, var_p)) summed over the last dimension."""
    return 0.5 * (logvar_p - logvar_q + (logvar_q.exp() + (mu_q - mu_p).pow(2)) / logvar_p.exp() - 1.0).sum(-1)


def standard_normal_kl(mu: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(mu, var) ‖ N(0, I)) summed over the last dimension."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(-1)


def gaussian_log_density(x: Tensor, mu: Tensor, logvar: Tensor) -> Tensor:
    """log N(x; mu, var) summed over the last dimension."""
    return -0.5 * ((x - mu).pow(2) / logvar.exp() + logvar + torch.log(torch.tensor(2 * torch.pi))).sum(-1)
