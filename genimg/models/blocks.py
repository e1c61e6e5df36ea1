"""Convolutional building blocks shared by the GAN, VAE and RVAE families.

Every conv net here halves (or doubles) the spatial size a fixed number of times between the
image and a small "base" grid. `resolution_plan` picks that number from the image size, so the
same code serves 8, 16, 28, 32 and 64 px images (28 → 14 → 7; 32 → 16 → 8 → 4).
"""

from __future__ import annotations

from typing import Literal

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
        self.head = apply_spectral_norm(head) if spectral_norm else head

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


def gaussian_kl(mu_q: Tensor, logvar_q: Tensor, mu_p: Tensor, logvar_p: Tensor) -> Tensor:
    """KL(N(mu_q, var_q) ‖ N(mu_p, var_p)) summed over the last dimension."""
    return 0.5 * (
        logvar_p - logvar_q + (logvar_q.exp() + (mu_q - mu_p).pow(2)) / logvar_p.exp() - 1.0
    ).sum(-1)


def standard_normal_kl(mu: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(mu, var) ‖ N(0, I)) summed over the last dimension."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(-1)


def gaussian_log_density(x: Tensor, mu: Tensor, logvar: Tensor) -> Tensor:
    """log N(x; mu, var) summed over the last dimension."""
    return -0.5 * (
        (x - mu).pow(2) / logvar.exp() + logvar + torch.log(torch.tensor(2 * torch.pi))
    ).sum(-1)
