"""GANs: the fully connected baseline (`gan-mlp`) and a DCGAN-style conv GAN (`gan`).

Both share `GAN`, which owns the adversarial losses, the EMA generator and sampling. The
generator always minimises the non-saturating −log D(G(z)) (or the hinge / WGAN form when that
loss is chosen), never the minimax log(1 − D(G(z))) whose gradient vanishes early in training.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from genimg.errors import ConfigError
from genimg.models.base import (
    GenerativeModel,
    Losses,
    evaluating,
    register_model,
    seeded_normal,
)
from genimg.models.blocks import ConvDecoder, ConvEncoder

GANLoss = Literal["non-saturating", "hinge", "wgan-gp"]
MIN_SIDE, MAX_SIDE = 8, 64


def check_image_shape(image_shape: tuple[int, int, int]) -> None:
    channels, height, width = image_shape
    if channels not in (1, 3):
        raise ConfigError(f"model.image_shape: channels must be 1 or 3, got {channels}")
    if not (1 <= height <= 4096 and 1 <= width <= 4096):
        raise ConfigError(f"model.image_shape: unsupported image size {height}x{width}")


def check_positive(**values: float) -> None:
    for key, value in values.items():
        if value <= 0:
            raise ConfigError(f"model.{key} must be > 0, got {value}")


@dataclass(frozen=True)
class GANConfig:
    image_shape: tuple[int, int, int] = (1, 16, 16)
    latent_dim: int = 64
    width: int = 32  # channels of the discriminator's first stage; doubles per stage (≤ 8×)
    loss: GANLoss = "non-saturating"
    spectral_norm: bool = False
    gp_weight: float = 10.0  # gradient-penalty weight, used by wgan-gp only
    ema_decay: float = 0.999  # 0 disables the EMA generator

    def __post_init__(self) -> None:
        check_image_shape(self.image_shape)
        _, height, width = self.image_shape
        if not (MIN_SIDE <= height <= MAX_SIDE and MIN_SIDE <= width <= MAX_SIDE):
            raise ConfigError(
                f"model.image_shape: the conv GAN supports {MIN_SIDE}–{MAX_SIDE} px, "
                f"got {height}x{width}"
            )
        check_positive(latent_dim=self.latent_dim, width=self.width)
        if not 0.0 <= self.ema_decay < 1.0:
            raise ConfigError(f"model.ema_decay must be in [0, 1), got {self.ema_decay}")


@dataclass(frozen=True)
class GANMLPConfig:
    image_shape: tuple[int, int, int] = (1, 16, 16)
    latent_dim: int = 100
    generator_hidden: tuple[int, ...] = (128, 128, 1024)
    discriminator_hidden: tuple[int, ...] = (128, 128)
    loss: GANLoss = "non-saturating"
    gp_weight: float = 10.0
    ema_decay: float = 0.0

    def __post_init__(self) -> None:
        check_image_shape(self.image_shape)
        check_positive(latent_dim=self.latent_dim)
        for key in ("generator_hidden", "discriminator_hidden"):
            sizes = getattr(self, key)
            if not sizes or any(size <= 0 for size in sizes):
                raise ConfigError(f"model.{key} must list positive layer sizes, got {sizes}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ConfigError(f"model.ema_decay must be in [0, 1), got {self.ema_decay}")


class GAN(GenerativeModel):
    """Generator + discriminator + optional EMA generator, with the adversarial losses.

    Subclasses build the two networks and say how pixels in [0, 1] map to the generator's
    output range.
    """

    generator: nn.Module
    discriminator: nn.Module

    def __init__(self, config: GANConfig | GANMLPConfig) -> None:
        super().__init__()
        self.config = config

    def finish_init(self) -> None:
        if self.config.ema_decay > 0:
            self.generator_ema = copy.deepcopy(self.generator).requires_grad_(False)
            self.register_buffer("ema_updates", torch.zeros((), dtype=torch.long))
        else:
            self.generator_ema = None

    def to_model_space(self, images: Tensor) -> Tensor:
        return images

    def to_pixel_space(self, outputs: Tensor) -> Tensor:
        return outputs

    def noise(self, n: int) -> Tensor:
        return torch.randn(n, self.config.latent_dim, device=self.device)

    def discriminator_loss(self, real_images: Tensor, labels: Tensor | None = None) -> Losses:
        real = self.to_model_space(real_images)
        with torch.no_grad():
            fake = self.generator(self.noise(real.shape[0]))
        real_logits = self.discriminator(real)
        fake_logits = self.discriminator(fake)
        loss_type = self.config.loss
        parts: dict[str, Tensor] = {}
        if loss_type == "non-saturating":
            loss = F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()
        elif loss_type == "hinge":
            loss = F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean()
        else:
            penalty = self.gradient_penalty(real, fake)
            loss = fake_logits.mean() - real_logits.mean() + self.config.gp_weight * penalty
            parts["gradient_penalty"] = penalty.detach()
        parts |= {
            "d_loss": loss.detach(),
            "d_real": real_logits.detach().mean(),
            "d_fake": fake_logits.detach().mean(),
        }
        return Losses(loss, parts)

    def generator_loss(self, batch_size: int, labels: Tensor | None = None) -> Losses:
        logits = self.discriminator(self.generator(self.noise(batch_size)))
        if self.config.loss == "non-saturating":
            loss = F.softplus(-logits).mean()  # = −log σ(D(G(z)))
        else:
            loss = -logits.mean()
        return Losses(loss, {"g_loss": loss.detach()})

    def gradient_penalty(self, real: Tensor, fake: Tensor) -> Tensor:
        mix = torch.rand(real.shape[0], *([1] * (real.dim() - 1)), device=real.device)
        interpolated = (mix * real + (1 - mix) * fake).requires_grad_(True)
        (gradients,) = torch.autograd.grad(
            self.discriminator(interpolated).sum(), interpolated, create_graph=True
        )
        return (gradients.flatten(1).norm(2, dim=1) - 1.0).pow(2).mean()

    @torch.no_grad()
    def update_ema(self) -> None:
        if self.generator_ema is None:
            return
        # Warm-up: early on the average would be dominated by the random initial weights
        # (0.999^1500 ≈ 0.22 of them remain after 1,500 steps), so the horizon grows with the
        # number of updates: decay_n = min(decay, (1 + n) / (10 + n)).
        updates = int(self.ema_updates)
        decay = min(self.config.ema_decay, (1.0 + updates) / (10.0 + updates))
        self.ema_updates += 1
        for ema, live in zip(self.generator_ema.parameters(), self.generator.parameters()):
            ema.lerp_(live, 1.0 - decay)
        for ema_buffer, live_buffer in zip(self.generator_ema.buffers(), self.generator.buffers()):
            ema_buffer.copy_(live_buffer)

    def sample(self, n: int, seed: int | None = None) -> Tensor:
        network = self.generator_ema if self.generator_ema is not None else self.generator
        with evaluating(self):
            z = seeded_normal((n, self.config.latent_dim), seed, self.device)
            return self.to_pixel_space(network(z)).clamp(0.0, 1.0)


class MLPGenerator(nn.Module):
    def __init__(self, config: GANMLPConfig) -> None:
        super().__init__()
        self.image_shape = config.image_shape
        sizes = [config.latent_dim, *config.generator_hidden]
        layers: list[nn.Module] = []
        for n_in, n_out in zip(sizes, sizes[1:]):
            layers += [nn.Linear(n_in, n_out), nn.LeakyReLU(0.2)]
        layers += [nn.Linear(sizes[-1], math.prod(config.image_shape)), nn.Sigmoid()]
        self.net = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z).view(-1, *self.image_shape)


class MLPDiscriminator(nn.Module):
    def __init__(self, config: GANMLPConfig) -> None:
        super().__init__()
        sizes = [math.prod(config.image_shape), *config.discriminator_hidden]
        layers: list[nn.Module] = []
        for n_in, n_out in zip(sizes, sizes[1:]):
            layers += [nn.Linear(n_in, n_out), nn.LeakyReLU(0.2)]
        layers.append(nn.Linear(sizes[-1], 1))
        self.net = nn.Sequential(*layers)

    def forward(self, images: Tensor) -> Tensor:
        return self.net(images.flatten(1)).squeeze(1)


@register_model("gan-mlp", family="gan", data_kind="images", config_cls=GANMLPConfig)
class MLPGAN(GAN):
    """The classic fully connected GAN; pixels in [0, 1] through a sigmoid."""

    def __init__(self, config: GANMLPConfig) -> None:
        super().__init__(config)
        self.generator = MLPGenerator(config)
        self.discriminator = MLPDiscriminator(config)
        self.finish_init()


class ConvGenerator(nn.Module):
    def __init__(self, config: GANConfig) -> None:
        super().__init__()
        self.decoder = ConvDecoder(config.latent_dim, config.image_shape, config.width, norm="batch")

    def forward(self, z: Tensor) -> Tensor:
        return torch.tanh(self.decoder(z))


class ConvDiscriminator(nn.Module):
    def __init__(self, config: GANConfig) -> None:
        super().__init__()
        # No batch norm: it couples samples in a batch, which breaks the per-sample gradient
        # penalty of WGAN-GP and is redundant with spectral norm.
        self.encoder = ConvEncoder(
            config.image_shape, config.width, 1, norm="none", spectral_norm=config.spectral_norm
        )

    def forward(self, images: Tensor) -> Tensor:
        return self.encoder(images).squeeze(1)


@register_model("gan", family="gan", data_kind="images", config_cls=GANConfig)
class DCGAN(GAN):
    """DCGAN-style conv generator (tanh output, pixels scaled to [-1, 1]) and discriminator."""

    def __init__(self, config: GANConfig) -> None:
        super().__init__(config)
        self.generator = ConvGenerator(config)
        self.discriminator = ConvDiscriminator(config)
        self.finish_init()

    def to_model_space(self, images: Tensor) -> Tensor:
        return images * 2.0 - 1.0

    def to_pixel_space(self, outputs: Tensor) -> Tensor:
        return (outputs + 1.0) / 2.0
