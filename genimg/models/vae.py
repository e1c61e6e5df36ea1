"""VAE with a convolutional or residual encoder/decoder, optionally class-conditional.

Likelihoods (genimg.models.base): Bernoulli with dynamic binarisation for grey digits, a
Gaussian with a learned per-channel scale on dequantised pixels, or a discretized logistic with a
per-pixel mean and scale (exact probabilities of the 8-bit levels, the one to use for RGB).
`nll` is the importance-weighted bound in nats per image; `bits_per_dim` converts it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Literal, overload

import torch
from torch import Tensor, nn

from genimg.errors import ConfigError, GenimgError
from genimg.models.base import (
    AveragedWeights,
    GenerativeModel,
    Likelihood,
    Losses,
    check_conditioning,
    decoded_mean,
    decoder_channels,
    discrete_nll_offset,
    evaluating,
    likelihood_target,
    log_likelihood,
    register_model,
    require_classes,
    sample_labels,
    seeded_normal,
)
from genimg.models.blocks import (
    ConvDecoder,
    ConvEncoder,
    Norm,
    ResNetDecoder,
    ResNetEncoder,
    gaussian_log_density,
    standard_normal_kl,
)
from genimg.models.gan import check_image_shape, check_positive

Architecture = Literal["conv", "resnet"]
PRIOR_MEAN_RATE = 0.05  # a conditional VAE's class prior means: the running-mean update per step


@dataclass(frozen=True)
class VAEConfig:
    image_shape: tuple[int, int, int] = (1, 16, 16)
    latent_dim: int = 16
    width: int = 32  # channels of the first stage; doubles per stage (≤ 8×)
    likelihood: Likelihood = "bernoulli"
    binarize: bool = True  # dynamic binarisation of the targets (bernoulli only)
    beta: float = 1.0  # weight of the KL term; 1 gives the ELBO
    norm: Norm = "batch"  # conv architecture only (the resnet one has no normalisation)
    # conv: strided convolutions (the original VAE); resnet: strided convolutions plus residual
    # blocks at the smallest grid, no BatchNorm (a better likelihood for the same budget).
    architecture: Architecture = "conv"
    decoder_width: int = 0  # 0: `width`; a decoder wider than the encoder buys likelihood
    res_blocks: int = 2  # resnet: residual blocks at the smallest grid, encoder and decoder
    decoder_stage_blocks: int = 0  # resnet: residual blocks after each decoder upsampling
    # Exponential moving average of the weights, which nll / sample / reconstruct use (0: off).
    # It does what a decaying learning rate would: averages out the last steps' noise.
    ema_decay: float = 0.0
    conditional: bool = False  # class-conditional: labels go into encoder and decoder
    num_classes: int = 0  # fitted from the data when conditional
    class_names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        check_image_shape(self.image_shape)
        check_positive(latent_dim=self.latent_dim, width=self.width)
        if self.beta < 0:
            raise ConfigError(f"model.beta must be ≥ 0, got {self.beta}")
        for key in ("decoder_width", "res_blocks", "decoder_stage_blocks"):
            if getattr(self, key) < 0:
                raise ConfigError(f"model.{key} must be ≥ 0, got {getattr(self, key)}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ConfigError(f"model.ema_decay must be in [0, 1), got {self.ema_decay}")
        check_conditioning(self.conditional, self.num_classes, self.class_names)


@overload
def bits_per_dim(nats: Tensor, image_shape: tuple[int, ...]) -> Tensor: ...


@overload
def bits_per_dim(nats: float, image_shape: tuple[int, ...]) -> float: ...


def bits_per_dim(nats: Tensor | float, image_shape: tuple[int, ...]) -> Tensor | float:
    """A negative log-likelihood per image in nats → bits per pixel value (per dimension)."""
    return nats / (math.prod(image_shape) * math.log(2))


@register_model("vae", family="vae", data_kind="images", config_cls=VAEConfig)
class VAE(GenerativeModel):
    encoder: ResNetEncoder | ConvEncoder
    decoder: ResNetDecoder | ConvDecoder
    log_scale: nn.Parameter | None
    encoder_labels: nn.Embedding  # conditional only, like the two below
    decoder_labels: nn.Embedding
    class_prior_means: Tensor  # a buffer
    ema: AveragedWeights  # with ema_decay > 0 only

    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        latent, channels = c.latent_dim, c.image_shape[0]
        decoder_width = c.decoder_width or c.width
        # The decoder's output: one number per pixel value, two for the discretized logistic.
        output_shape = (decoder_channels(c.likelihood, channels), *c.image_shape[1:])
        # A conditional decoder sees z next to a learned label vector of the same size.
        decoder_in = 2 * latent if c.conditional else latent
        if c.architecture == "resnet":
            self.encoder = ResNetEncoder(c.image_shape, c.width, 2 * latent, blocks=c.res_blocks)
            self.decoder = ResNetDecoder(
                decoder_in, output_shape, decoder_width, blocks=c.res_blocks, blocks_per_stage=c.decoder_stage_blocks
            )
        else:
            self.encoder = ConvEncoder(c.image_shape, c.width, 2 * latent, norm=c.norm)
            self.decoder = ConvDecoder(decoder_in, output_shape, decoder_width, norm=c.norm)
        if c.likelihood == "gaussian":
            # Per-channel log σ in pixel units, learned with the rest (starts at σ ≈ 0.1).
            self.log_scale = nn.Parameter(torch.full((channels,), math.log(0.1)))
        else:
            self.log_scale = None
        if c.conditional:
            classes = require_classes(self)
            # Added to the encoder's output, which ends in a linear layer: the same as feeding
            # the one-hot label into that layer next to the image features.
            self.encoder_labels = nn.Embedding(classes, 2 * latent)
            self.decoder_labels = nn.Embedding(classes, latent)
            nn.init.zeros_(self.encoder_labels.weight)
            # A prior per class, p(z | y) = N(m_y, I), with m_y the running mean of the class's
            # posterior means: the m_y that minimises the expected KL, kept like BatchNorm's
            # statistics. The encoder sees the image before the decoder learns to use its label,
            # so it often puts the class into z, and samples from N(0, I) then came out of any
            # class; with the class's own prior they come from where that class was encoded.
            self.register_buffer("class_prior_means", torch.zeros(classes, latent))
        self.averaged: VAE | None = None
        if c.ema_decay > 0:
            # The weight average is itself a VAE (the same networks, without an average of its
            # own), starting from the same weights.
            averaged = VAE(replace(c, ema_decay=0.0))
            averaged.load_state_dict(self.state_dict())
            self.averaged = averaged.requires_grad_(False)
            self.ema = AveragedWeights(self, c.ema_decay)

    # --- labels ---

    def check_labels(self, labels: Tensor | None, count: int) -> Tensor | None:
        """`labels` for `count` images of a conditional model (required), None otherwise."""
        if not self.num_classes:
            if labels is not None:
                raise GenimgError(f"model {self.registry_name} is not class-conditional: it takes no labels")
            return None
        if labels is None:
            raise GenimgError(
                f"model {self.registry_name} is class-conditional: pass the images' labels "
                f"(class indices 0–{self.num_classes - 1})"
            )
        return sample_labels(self, count, None, labels)

    # --- networks ---

    def encode(self, images: Tensor, labels: Tensor | None = None) -> tuple[Tensor, Tensor]:
        hidden = self.encoder(images)
        if labels is not None:
            hidden = hidden + self.encoder_labels(labels)
        mu, logvar = hidden.chunk(2, dim=1)
        return mu, logvar.clamp(-12.0, 8.0)

    def decode(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        if labels is not None:
            z = torch.cat([z, self.decoder_labels(labels)], dim=1)
        return self.decoder(z)

    def prior_mean(self, labels: Tensor | None, like: Tensor) -> Tensor:
        """Mean of p(z | y) for each label (zeros for an unconditional model), shaped as `like`."""
        if labels is None:
            return torch.zeros_like(like)
        return self.class_prior_means[labels].expand_as(like)

    @torch.no_grad()
    def update_class_priors(self, mu: Tensor, labels: Tensor) -> None:
        """Move each class's prior mean 5 % towards the batch's mean posterior mean of that class."""
        means = self.class_prior_means
        classes = means.shape[0]
        # Counted with index_add_, not bincount: on a GPU bincount reads the largest label back to
        # size its output (a device sync, which a CUDA graph cannot record).
        counts = torch.zeros(classes, dtype=means.dtype, device=means.device).index_add_(
            0, labels, torch.ones(labels.shape, dtype=means.dtype, device=means.device)
        )
        sums = torch.zeros_like(means).index_add_(0, labels, mu.detach().to(means.dtype))
        # Masked with torch.where, not by indexing with `counts > 0`: that would wait for the
        # device to say how many classes the batch holds.
        batch_means = sums / counts.clamp(min=1).unsqueeze(1)
        step = PRIOR_MEAN_RATE * (batch_means - means)
        means += torch.where((counts > 0).unsqueeze(1), step, torch.zeros_like(step))

    def update_average(self) -> None:
        """Move the averaged weights towards the live ones (buffers, e.g. BatchNorm statistics,
        are taken as they are)."""
        assert self.averaged is not None
        self.ema.update(self, self.averaged, self)

    # --- objectives ---

    def loss(self, images: Tensor, labels: Tensor | None = None, *, labels_checked: bool = False) -> Losses:
        """β-weighted negative ELBO per image (nats), averaged over the batch. With a weight
        average, a training loss first updates it (the training step has no hook after the
        optimiser's; the average trails the weights by that one step) and an evaluation loss
        (validation) is the average's. `labels_checked`: the training loop checked the labels'
        range once, on the host (checking it here would wait for the device at every step)."""
        if self.averaged is not None:
            if not self.training:
                return self.averaged.loss(images, labels)
            self.update_average()
        if labels_checked and labels is not None and self.num_classes and labels.shape == (images.shape[0],):
            labels = labels.to(self.device)
        else:
            labels = self.check_labels(labels, images.shape[0])
        target = likelihood_target(images, self.config.likelihood, self.config.binarize)
        mu, logvar = self.encode(images, labels)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
        reconstruction = -log_likelihood(target, self.decode(z, labels), self.config.likelihood, self.log_scale)
        if labels is not None and self.training:
            self.update_class_priors(mu, labels)
        kl = standard_normal_kl(mu - self.prior_mean(labels, mu), logvar)
        total = (reconstruction + self.config.beta * kl).mean()
        neg_elbo = (reconstruction + kl).mean() + discrete_nll_offset(self.config.likelihood, self.config.image_shape)
        return Losses(
            total,
            {
                "loss": total.detach(),
                "recon": reconstruction.detach().mean(),
                "kl": kl.detach().mean(),
                "neg_elbo": neg_elbo.detach(),
                "neg_elbo_bits_per_dim": bits_per_dim(neg_elbo.detach(), self.config.image_shape),
            },
        )

    def nll(
        self,
        images: Tensor,
        k: int = 100,
        *,
        labels: Tensor | None = None,
        generator: torch.Generator | None = None,
        chunk_size: int = 1000,
    ) -> Tensor:
        """Importance-weighted (IWAE, Burda et al. 2016) estimate of −log p(x) per image, in nats
        (`bits_per_dim` converts it); a conditional model scores −log p(x | label).

        With k = 1 it is the negative ELBO; it tightens towards the true NLL as k grows. Targets
        are binarised (or dequantised) once per image with `generator`, so a seeded generator
        makes the estimate repeatable.
        """
        if k < 1:
            raise ValueError(f"k must be ≥ 1, got {k}")
        if self.averaged is not None:
            return self.averaged.nll(images, k, labels=labels, generator=generator, chunk_size=chunk_size)
        labels = self.check_labels(labels, images.shape[0])
        with evaluating(self):
            target = likelihood_target(images, self.config.likelihood, self.config.binarize, generator)
            mu, logvar = self.encode(images, labels)
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
                decoded = self.decode(z.flatten(0, 1), None if labels is None else labels.repeat(count))
                log_px = log_likelihood(
                    target.repeat(count, 1, 1, 1), decoded, self.config.likelihood, self.log_scale
                ).view(count, batch)
                log_pz = gaussian_log_density(
                    z, self.prior_mean(labels, mu).unsqueeze(0).expand_as(z), torch.zeros_like(z)
                )
                log_qz = gaussian_log_density(z, mu.unsqueeze(0).expand_as(z), logvar.unsqueeze(0).expand_as(z))
                log_weights.append(log_px + log_pz - log_qz)
            log_p = torch.logsumexp(torch.cat(log_weights, 0), dim=0) - math.log(k)
            return -log_p + discrete_nll_offset(self.config.likelihood, self.config.image_shape)

    # --- images ---

    # With a weight average, the average scores and generates (the live weights only train).

    def reconstruct(self, images: Tensor, labels: Tensor | None = None) -> Tensor:
        if self.averaged is not None:
            return self.averaged.reconstruct(images, labels)
        labels = self.check_labels(labels, images.shape[0])
        with evaluating(self):
            mu, _ = self.encode(images, labels)
            return decoded_mean(self.decode(mu, labels), self.config.likelihood)

    def sample(self, n: int, seed: int | None = None, labels: Tensor | None = None) -> Tensor:
        """`n` images from the prior; a conditional model draws them for `labels` (or for
        classes drawn uniformly from `seed`)."""
        if self.averaged is not None:
            return self.averaged.sample(n, seed, labels)
        labels = sample_labels(self, n, seed, labels)
        with evaluating(self):
            z = seeded_normal((n, self.config.latent_dim), seed, self.device)
            z = z + self.prior_mean(labels, z)
            return decoded_mean(self.decode(z, labels), self.config.likelihood)
