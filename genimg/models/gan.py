"""GANs: the fully connected baseline (`gan-mlp`) and a DCGAN-style conv GAN (`gan`); the
residual SNGAN / BigGAN-style `gan-resnet` lives in gan_resnet.py.

All share `GAN`, which owns the adversarial losses, DiffAugment, class conditioning, the EMA
generator and sampling. The generator always minimises the non-saturating −log D(G(z)) (or the
hinge / WGAN form when that loss is chosen), never the minimax log(1 − D(G(z))) whose gradient
vanishes early in training. A conditional GAN's generator takes (z, labels) and its
discriminator (images, labels), with the projection head of Miyato & Koyama (2018).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from itertools import pairwise
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch.nn.utils.parametrizations import spectral_norm as apply_spectral_norm

from genimg.errors import ConfigError
from genimg.models.augment import diff_augment, parse_policy
from genimg.models.base import (
    AveragedWeights,
    GenerativeModel,
    Losses,
    check_conditioning,
    evaluating,
    register_model,
    require_classes,
    sample_labels,
    seeded_normal,
)
from genimg.models.blocks import ConvDecoder, ConvEncoder

GANLoss = Literal["non-saturating", "hinge", "wgan-gp"]
MIN_SIDE, MAX_SIDE = 8, 256


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
    augment: str = ""  # DiffAugment policy, e.g. "color,translation,cutout" ("" = off)
    conditional: bool = False  # class-conditional: G(z, y), projection D(x, y)
    num_classes: int = 0  # fitted from the data when conditional
    class_names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        check_image_shape(self.image_shape)
        _, height, width = self.image_shape
        if not (MIN_SIDE <= height <= MAX_SIDE and MIN_SIDE <= width <= MAX_SIDE):
            raise ConfigError(
                f"model.image_shape: the conv GAN supports {MIN_SIDE}–{MAX_SIDE} px, got {height}x{width}"
            )
        check_positive(latent_dim=self.latent_dim, width=self.width)
        check_gan_options(self.ema_decay, self.augment)
        check_conditioning(self.conditional, self.num_classes, self.class_names)


def check_gan_options(ema_decay: float, augment: str) -> None:
    if not 0.0 <= ema_decay < 1.0:
        raise ConfigError(f"model.ema_decay must be in [0, 1), got {ema_decay}")
    parse_policy(augment)


@dataclass(frozen=True)
class GANMLPConfig:
    image_shape: tuple[int, int, int] = (1, 16, 16)
    latent_dim: int = 100
    generator_hidden: tuple[int, ...] = (128, 128, 1024)
    discriminator_hidden: tuple[int, ...] = (128, 128)
    loss: GANLoss = "non-saturating"
    gp_weight: float = 10.0
    ema_decay: float = 0.0
    augment: str = ""  # DiffAugment policy ("" = off)

    def __post_init__(self) -> None:
        check_image_shape(self.image_shape)
        check_positive(latent_dim=self.latent_dim)
        for key in ("generator_hidden", "discriminator_hidden"):
            sizes = getattr(self, key)
            if not sizes or any(size <= 0 for size in sizes):
                raise ConfigError(f"model.{key} must list positive layer sizes, got {sizes}")
        check_gan_options(self.ema_decay, self.augment)


class GAN(GenerativeModel):
    """Generator + discriminator + optional EMA generator, with the adversarial losses.

    Subclasses build the two networks — `generator(z, labels)` and `discriminator(images,
    labels)`, labels None unless conditional — and say how pixels in [0, 1] map to the
    generator's output range.
    """

    generator: nn.Module
    discriminator: nn.Module
    generator_ema: nn.Module | None
    ema: AveragedWeights

    def __init__(self, config: Any) -> None:
        super().__init__()
        self.config = config
        self.augmentations = parse_policy(config.augment)
        if getattr(config, "conditional", False):
            require_classes(self)

    def finish_init(self) -> None:
        if self.config.ema_decay > 0:
            self.generator_ema = copy.deepcopy(self.generator).requires_grad_(False)
            self.ema = AveragedWeights(self, self.config.ema_decay)
        else:
            self.generator_ema = None

    def to_model_space(self, images: Tensor) -> Tensor:
        return images

    def to_pixel_space(self, outputs: Tensor) -> Tensor:
        return outputs

    def noise(self, n: int) -> Tensor:
        return torch.randn(n, self.config.latent_dim, device=self.device)

    def augment(self, images: Tensor) -> Tensor:
        return diff_augment(images, self.augmentations) if self.augmentations else images

    def training_labels(self, n: int, labels: Tensor | None) -> Tensor | None:
        """The classes of a batch: the data's, or (G's step without them) uniform draws."""
        if not self.num_classes:
            return None
        if labels is None:
            return torch.randint(0, self.num_classes, (n,), device=self.device)
        return labels

    def discriminator_loss(self, real_images: Tensor, labels: Tensor | None = None) -> Losses:
        real = self.to_model_space(real_images)
        labels = self.training_labels(real.shape[0], labels)
        with torch.no_grad():
            fake = self.generator(self.noise(real.shape[0]), labels)
        real_logits = self.discriminator(self.augment(real), labels)
        fake_logits = self.discriminator(self.augment(fake), labels)
        loss_type = self.config.loss
        parts: dict[str, Tensor] = {}
        if loss_type == "non-saturating":
            loss = F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()
        elif loss_type == "hinge":
            loss = F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean()
        else:
            penalty = self.gradient_penalty(real, fake, labels)
            loss = fake_logits.mean() - real_logits.mean() + self.config.gp_weight * penalty
            parts["gradient_penalty"] = penalty.detach()
        parts |= {
            "d_loss": loss.detach(),
            "d_real": real_logits.detach().mean(),
            "d_fake": fake_logits.detach().mean(),
        }
        return Losses(loss, parts)

    def generator_loss(self, batch_size: int, labels: Tensor | None = None) -> Losses:
        labels = self.training_labels(batch_size, labels)
        logits = self.discriminator(self.augment(self.generator(self.noise(batch_size), labels)), labels)
        if self.config.loss == "non-saturating":
            loss = F.softplus(-logits).mean()  # = −log σ(D(G(z)))
        else:
            loss = -logits.mean()
        return Losses(loss, {"g_loss": loss.detach()})

    def gradient_penalty(self, real: Tensor, fake: Tensor, labels: Tensor | None = None) -> Tensor:
        mix = torch.rand(real.shape[0], *([1] * (real.dim() - 1)), device=real.device)
        interpolated = (mix * real + (1 - mix) * fake).requires_grad_(True)
        (gradients,) = torch.autograd.grad(
            self.discriminator(interpolated, labels).sum(), interpolated, create_graph=True
        )
        return (gradients.flatten(1).norm(2, dim=1) - 1.0).pow(2).mean()

    def update_ema(self) -> None:
        if self.generator_ema is not None:
            self.ema.update(self, self.generator_ema, self.generator)

    def sample(self, n: int, seed: int | None = None, labels: Tensor | None = None) -> Tensor:
        """`n` images in [0, 1]; a conditional GAN draws class `labels[i]` for image i (the
        classes are drawn uniformly from `seed` when none are given)."""
        network = self.generator_ema if self.generator_ema is not None else self.generator
        with evaluating(self):
            classes = sample_labels(self, n, seed, labels)
            z = seeded_normal((n, self.config.latent_dim), seed, self.device)
            return self.to_pixel_space(network(z, classes)).clamp(0.0, 1.0)


class MLPGenerator(nn.Module):
    def __init__(self, config: GANMLPConfig) -> None:
        super().__init__()
        self.image_shape = config.image_shape
        sizes = [config.latent_dim, *config.generator_hidden]
        layers: list[nn.Module] = []
        for n_in, n_out in pairwise(sizes):
            layers += [nn.Linear(n_in, n_out), nn.LeakyReLU(0.2)]
        layers += [nn.Linear(sizes[-1], math.prod(config.image_shape)), nn.Sigmoid()]
        self.net = nn.Sequential(*layers)

    def forward(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        return self.net(z).view(-1, *self.image_shape)


class MLPDiscriminator(nn.Module):
    def __init__(self, config: GANMLPConfig) -> None:
        super().__init__()
        sizes = [math.prod(config.image_shape), *config.discriminator_hidden]
        layers: list[nn.Module] = []
        for n_in, n_out in pairwise(sizes):
            layers += [nn.Linear(n_in, n_out), nn.LeakyReLU(0.2)]
        layers.append(nn.Linear(sizes[-1], 1))
        self.net = nn.Sequential(*layers)

    def forward(self, images: Tensor, labels: Tensor | None = None) -> Tensor:
        return self.net(images.flatten(1)).squeeze(1)


@register_model("gan-mlp", family="gan", data_kind="images", config_cls=GANMLPConfig, convolutional=False)
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
        conditional = config.conditional and config.num_classes > 0
        # A conditional generator reads its class as a learned vector beside z (cGAN).
        self.embed = nn.Embedding(config.num_classes, config.latent_dim) if conditional else None
        in_features = config.latent_dim * (2 if conditional else 1)
        self.decoder = ConvDecoder(in_features, config.image_shape, config.width, norm="batch")

    def forward(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        if self.embed is not None:
            assert labels is not None
            z = torch.cat([z, self.embed(labels)], dim=1)
        return torch.tanh(self.decoder(z))


class ConvDiscriminator(nn.Module):
    def __init__(self, config: GANConfig) -> None:
        super().__init__()
        # No batch norm: it couples samples in a batch, which breaks the per-sample gradient
        # penalty of WGAN-GP and is redundant with spectral norm.
        self.encoder = ConvEncoder(config.image_shape, config.width, 1, norm="none", spectral_norm=config.spectral_norm)
        self.projection = None
        if config.conditional and config.num_classes > 0:
            embed = nn.Embedding(config.num_classes, self.encoder.head.in_features)
            self.projection = apply_spectral_norm(embed) if config.spectral_norm else embed

    def forward(self, images: Tensor, labels: Tensor | None = None) -> Tensor:
        features = self.encoder.features(images).flatten(1)
        logits = self.encoder.head(features).squeeze(1)
        if self.projection is not None:
            assert labels is not None
            # Projection: the inner product of the features with the class's embedding.
            logits = logits + (self.projection(labels) * features).sum(1)
        return logits


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
