"""Recurrent VAE for image sequences with a learned prior (SVG-LP style, Denton & Fergus 2018).

Per time step t, with h_t = E(x_t) a conv embedding of frame t and h_{-1} a learned start vector:

    posterior  q(z_t | x_≤t)   = N(μ_q, σ_q) from an LSTM over h_0 … h_t
    prior      p(z_t | x_<t)   = N(μ_p, σ_p) from an LSTM over h_{-1} … h_{t-1}
    predictor  g_t = LSTM([h_{t-1}, z_t]);  x_t ~ p(x | D(g_t))

The loss is Σ_t [−log p(x_t | …) + β·KL(q_t ‖ p_t)]: a bound on −log p(x_0 … x_{T−1}), so the
model generates whole sequences from the start vector as well as continuations of given frames.
"""

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
    decoder_channels,
    discrete_nll_offset,
    evaluating,
    likelihood_target,
    log_likelihood,
    register_model,
)
from genimg.models.blocks import ConvDecoder, ConvEncoder, Norm, gaussian_kl
from genimg.models.gan import check_image_shape, check_positive

LSTMState = tuple[Tensor, Tensor] | None


@dataclass(frozen=True)
class RVAEConfig:
    image_shape: tuple[int, int, int] = (1, 32, 32)
    num_frames: int = 10  # default length of generated sequences
    latent_dim: int = 16  # z_t per step
    frame_dim: int = 128  # size of the frame embedding h_t and of the predictor output g_t
    hidden_dim: int = 128  # LSTM state size
    width: int = 32
    likelihood: Likelihood = "bernoulli"
    binarize: bool = True
    beta: float = 1.0
    norm: Norm = "batch"

    def __post_init__(self) -> None:
        check_image_shape(self.image_shape)
        check_positive(
            num_frames=self.num_frames,
            latent_dim=self.latent_dim,
            frame_dim=self.frame_dim,
            hidden_dim=self.hidden_dim,
            width=self.width,
        )
        if self.beta < 0:
            raise ConfigError(f"model.beta must be ≥ 0, got {self.beta}")


class GaussianLSTM(nn.Module):
    """An LSTM whose every output is the mean and log-variance of a diagonal Gaussian."""

    def __init__(self, in_features: int, hidden: int, out_features: int) -> None:
        super().__init__()
        self.lstm = nn.LSTM(in_features, hidden, batch_first=True)
        self.head = nn.Linear(hidden, 2 * out_features)

    def forward(self, inputs: Tensor, state: LSTMState = None) -> tuple[Tensor, Tensor, LSTMState]:
        outputs, state = self.lstm(inputs, state)
        mu, logvar = self.head(outputs).chunk(2, dim=-1)
        return mu, logvar.clamp(-12.0, 8.0), state


class FramePredictor(nn.Module):
    def __init__(self, in_features: int, hidden: int, out_features: int) -> None:
        super().__init__()
        self.lstm = nn.LSTM(in_features, hidden, batch_first=True)
        self.head = nn.Linear(hidden, out_features)

    def forward(self, inputs: Tensor, state: LSTMState = None) -> tuple[Tensor, LSTMState]:
        outputs, state = self.lstm(inputs, state)
        return self.head(outputs), state


@register_model("rvae", family="rvae", data_kind="sequences", config_cls=RVAEConfig)
class RVAE(GenerativeModel):
    def __init__(self, config: RVAEConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        self.frame_encoder = ConvEncoder(c.image_shape, c.width, c.frame_dim, norm=c.norm)
        # The decoder's output: one number per pixel value, two for the discretized logistic.
        output_shape = (decoder_channels(c.likelihood, c.image_shape[0]), *c.image_shape[1:])
        self.frame_decoder = ConvDecoder(c.frame_dim, output_shape, c.width, norm=c.norm)
        self.start = nn.Parameter(torch.zeros(c.frame_dim))
        self.posterior = GaussianLSTM(c.frame_dim, c.hidden_dim, c.latent_dim)
        self.prior = GaussianLSTM(c.frame_dim, c.hidden_dim, c.latent_dim)
        self.predictor = FramePredictor(c.frame_dim + c.latent_dim, c.hidden_dim, c.frame_dim)
        if c.likelihood == "gaussian":
            self.log_scale = nn.Parameter(torch.full((c.image_shape[0],), math.log(0.1)))
        else:
            self.log_scale = None

    def embed_frames(self, sequences: Tensor) -> Tensor:
        batch, steps = sequences.shape[:2]
        return self.frame_encoder(sequences.flatten(0, 1)).view(batch, steps, -1)

    def step_terms(
        self, sequences: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """Per-step reconstruction NLL and KL, each (B, T), in nats (one posterior sample)."""
        self.check_sequences(sequences)
        batch, steps = sequences.shape[:2]
        c = self.config
        target = likelihood_target(sequences, c.likelihood, c.binarize, generator)
        h = self.embed_frames(sequences)
        h_prev = torch.cat([self.start.expand(batch, 1, -1), h[:, :-1]], dim=1)
        mu_q, logvar_q, _ = self.posterior(h)
        mu_p, logvar_p, _ = self.prior(h_prev)
        eps = (
            torch.randn_like(mu_q)
            if generator is None
            else torch.randn(mu_q.shape, generator=generator).to(mu_q.device)
        )
        z = mu_q + (0.5 * logvar_q).exp() * eps
        g, _ = self.predictor(torch.cat([h_prev, z], dim=-1))
        decoded = self.frame_decoder(g.flatten(0, 1))
        reconstruction = -log_likelihood(
            target.flatten(0, 1), decoded, c.likelihood, self.log_scale
        ).view(batch, steps)
        kl = gaussian_kl(mu_q, logvar_q, mu_p, logvar_p)
        return reconstruction, kl

    def loss(self, sequences: Tensor) -> Losses:
        """β-weighted negative ELBO per sequence (summed over steps), averaged over the batch."""
        reconstruction, kl = self.step_terms(sequences)
        total = (reconstruction + self.config.beta * kl).sum(1).mean()
        offset = discrete_nll_offset(self.config.likelihood, self.config.image_shape)
        return Losses(
            total,
            {
                "loss": total.detach(),
                "recon": reconstruction.detach().sum(1).mean(),
                "kl": kl.detach().sum(1).mean(),
                "nll_bound_per_frame": (reconstruction + kl).detach().mean() + offset,
            },
        )

    def generate(
        self, n: int, num_frames: int, seed: int | None = None, context: Tensor | None = None
    ) -> Tensor:
        """n sequences of `num_frames` frames in [0, 1]; the first k equal `context` when given."""
        known = 0
        if context is not None:
            self.check_sequences(context)
            known = context.shape[1]
            if context.shape[0] != n:
                raise ValueError(f"context holds {context.shape[0]} sequences, asked for {n}")
            if known > num_frames:
                raise ValueError(f"context has {known} frames, more than num_frames={num_frames}")
        if num_frames < 1:
            raise ValueError(f"num_frames must be ≥ 1, got {num_frames}")
        generator = torch.Generator().manual_seed(seed) if seed is not None else None

        def standard_normal(shape: tuple[int, ...]) -> Tensor:
            if generator is None:
                return torch.randn(shape, device=self.device)
            return torch.randn(shape, generator=generator).to(self.device)

        with evaluating(self):
            h_prev = self.start.expand(n, -1)
            prior_state = posterior_state = predictor_state = None
            frames = []
            for t in range(num_frames):
                mu_p, logvar_p, prior_state = self.prior(h_prev.unsqueeze(1), prior_state)
                eps = standard_normal((n, 1, self.config.latent_dim))
                if t < known:
                    assert context is not None
                    frame = context[:, t].to(self.device)
                    h_t = self.frame_encoder(frame)
                    mu_q, logvar_q, posterior_state = self.posterior(
                        h_t.unsqueeze(1), posterior_state
                    )
                    z = mu_q + (0.5 * logvar_q).exp() * eps
                else:
                    z = mu_p + (0.5 * logvar_p).exp() * eps
                g, predictor_state = self.predictor(
                    torch.cat([h_prev.unsqueeze(1), z], dim=-1), predictor_state
                )
                if t >= known:
                    frame = decoded_mean(self.frame_decoder(g.squeeze(1)), self.config.likelihood)
                    h_t = self.frame_encoder(frame)
                frames.append(frame)
                h_prev = h_t
            return torch.stack(frames, dim=1)

    def continue_sequence(
        self, context: Tensor, num_frames: int | None = None, seed: int | None = None
    ) -> Tensor:
        """Continue each sequence of `context` (B, k, C, H, W) to `num_frames` frames."""
        return self.generate(
            context.shape[0], num_frames or self.config.num_frames, seed, context=context
        )

    def sample(self, n: int, seed: int | None = None, num_frames: int | None = None) -> Tensor:
        return self.generate(n, num_frames or self.config.num_frames, seed)

    def check_sequences(self, sequences: Tensor) -> None:
        expected = tuple(self.config.image_shape)
        if sequences.dim() != 5 or tuple(sequences.shape[2:]) != expected:
            raise ValueError(
                f"expected sequences of shape (B, T, {', '.join(map(str, expected))}), "
                f"got {tuple(sequences.shape)}"
            )
        if sequences.shape[1] < 1:
            raise ValueError("sequences need at least one frame")
