"""Convolutional VAE with a Bernoulli (grey-level digits) or Gaussian (RGB) likelihood."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from genimg.errors import ConfigError
from genimg.models.base import (
    GenerativeModel,
    Likelihood,
    Losses,
    decoded_mean,
    discrete_nll_offset,
    evaluating,
    likelihood_target,
    log_likelihood,
    register_model,
    seeded_normal,
)
from genimg.models.blocks import (
    ConvDecoder,
    ConvEncoder,
    Norm,
    gaussian_log_density,
    standard_normal_kl,
)
from genimg.models.gan import check_image_shape, check_positive


@dataclass(frozen=True)
class VAEConfig:
    image_shape: tuple[int, int, int] = (1, 16, 16)
    latent_dim: int = 16
    width: int = 32
    likelihood: Likelihood = "bernoulli"
    binarize: bool = True  # dynamic binarisation of the targets (bernoulli only)
    beta: float = 1.0  # weight of the KL term; 1 gives the ELBO
    norm: Norm = "batch"

    def __post_init__(self) -> None:
        check_image_shape(self.image_shape)
        check_positive(latent_dim=self.latent_dim, width=self.width)
        if self.beta < 0:
            raise ConfigError(f"model.beta must be ≥ 0, got {self.beta}")


@register_model("vae", family="vae", data_kind="images", config_cls=VAEConfig)
class VAE(GenerativeModel):
    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = ConvEncoder(config.image_shape, config.width, 2 * config.latent_dim, norm=config.norm)
        self.decoder = ConvDecoder(config.latent_dim, config.image_shape, config.width, norm=config.norm)
        if config.likelihood == "gaussian":
            # Per-channel log σ in pixel units, learned with the rest (starts at σ ≈ 0.1).
            self.log_scale = nn.Parameter(torch.full((config.image_shape[0],), math.log(0.1)))
        else:
            self.log_scale = None

    def encode(self, images: Tensor) -> tuple[Tensor, Tensor]:
        mu, logvar = self.encoder(images).chunk(2, dim=1)
        return mu, logvar.clamp(-12.0, 8.0)

    def decode(self, z: Tensor) -> Tensor:
        return self.decoder(z)

    def loss(self, images: Tensor) -> Losses:
        """β-weighted negative ELBO per image (nats), averaged over the batch."""
        target = likelihood_target(images, self.config.likelihood, self.config.binarize)
        mu, logvar = self.encode(images)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
        reconstruction = -log_likelihood(
            target, self.decode(z), self.config.likelihood, self.log_scale
        )
        kl = standard_normal_kl(mu, logvar)
        total = (reconstruction + self.config.beta * kl).mean()
        neg_elbo = (reconstruction + kl).mean() + discrete_nll_offset(
            self.config.likelihood, self.config.image_shape
        )
        return Losses(
            total,
            {
                "loss": total.detach(),
                "recon": reconstruction.detach().mean(),
                "kl": kl.detach().mean(),
                "neg_elbo": neg_elbo.detach(),
            },
        )

    def nll(
        self,
        images: Tensor,
        k: int = 100,
        *,
        generator: torch.Generator | None = None,
        chunk_size: int = 1000,
    ) -> Tensor:
        """Importance-weighted (IWAE, Burda et al. 2016) estimate of −log p(x) per image, in nats.

        With k = 1 it is the negative ELBO; it tightens towards the true NLL as k grows. Targets
        are binarised (or dequantised) once per image with `generator`, so a seeded generator
        makes the estimate repeatable.
        """
        if k < 1:
            raise ValueError(f"k must be ≥ 1, got {k}")
        with evaluating(self):
            target = likelihood_target(
                images, self.config.likelihood, self.config.binarize, generator
            )
            mu, logvar = self.encode(images)
            std = (0.5 * logvar).exp()
            batch = images.shape[0]
            log_weights = []
            # k samples per image, processed `chunk_size` decoder passes at a time.
            per_chunk = max(1, chunk_size // max(batch, 1))
            for start in range(0, k, per_chunk):
                count = min(per_chunk, k - start)
                eps = (
                    torch.randn(count, *mu.shape, device=mu.device)
                    if generator is None
                    else torch.randn(count, *mu.shape, generator=generator).to(mu.device)
                )
                z = mu.unsqueeze(0) + std.unsqueeze(0) * eps  # (count, B, latent)
                decoded = self.decode(z.flatten(0, 1))
                log_px = log_likelihood(
                    target.repeat(count, 1, 1, 1), decoded, self.config.likelihood, self.log_scale
                ).view(count, batch)
                log_pz = gaussian_log_density(z, torch.zeros_like(z), torch.zeros_like(z))
                log_qz = gaussian_log_density(
                    z, mu.unsqueeze(0).expand_as(z), logvar.unsqueeze(0).expand_as(z)
                )
                log_weights.append(log_px + log_pz - log_qz)
            log_p = torch.logsumexp(torch.cat(log_weights, 0), dim=0) - math.log(k)
            return -log_p + discrete_nll_offset(self.config.likelihood, self.config.image_shape)

    def reconstruct(self, images: Tensor) -> Tensor:
        with evaluating(self):
            mu, _ = self.encode(images)
            return decoded_mean(self.decode(mu))

    def sample(self, n: int, seed: int | None = None) -> Tensor:
        with evaluating(self):
            z = seeded_normal((n, self.config.latent_dim), seed, self.device)
            return decoded_mean(self.decode(z))
