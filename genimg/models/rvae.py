"""Recurrent VAE for image sequences with a learned prior (SVG-LP style, Denton & Fergus 2018).

Two cores, chosen by `model.core`:

`lstm` (small frames, e.g. 32×32 moving digits). Per time step t, with h_t = E(x_t) a conv
embedding of frame t (a vector) and h_{-1} a learned start vector:

    posterior  q(z_t | x_≤t)   = N(μ_q, σ_q) from an LSTM over h_0 … h_t
    prior      p(z_t | x_<t)   = N(μ_p, σ_p) from an LSTM over h_{-1} … h_{t-1}
    predictor  g_t = LSTM([h_{t-1}, z_t]);  x_t ~ p(x | D(g_t))

`convlstm` (64×64 Moving MNIST and up). Frames keep their layout: E(x_t) is a feature map at a
quarter of the frame's side, the recurrent core is a ConvLSTM over [E(x_{t−1}), z_t] with z_t a
latent map, the prior p(z_t | x_<t) and the posterior q(z_t | x_≤t) are convolutions of the
core's state with E(x_{t−1}) (and E(x_t)), and the decoder upsamples the core's output with skip
connections — the half-resolution features and the pixels — of the last context frame (of the
previous frame while still inside the context), as SVG does: the decoder redraws the digits it
is shown where the core says they went, rather than re-inventing their shapes from a code.

Either way the loss is Σ_t [−log p(x_t | …) + β·KL(q_t ‖ p_t)] with teacher forcing: a bound on
−log p(x_0 … x_{T−1}), so the model generates whole sequences from the start as well as
continuations of k given frames (posterior on the given frames, prior afterwards).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

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
Core = Literal["lstm", "convlstm"]
SPATIAL_DOWNSAMPLING = 4  # the convlstm core runs at a quarter of the frame's side


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
    norm: Norm = "batch"  # lstm core only: the convlstm core's small nets use no normalisation
    # lstm: vector codes; convlstm: maps at a quarter of the frame's side, where latent_dim,
    # frame_dim and hidden_dim count channels (z, E(x), core state) and width the decoder's.
    core: Core = "lstm"
    # convlstm: frames counted as context in training (skips come from the last of them);
    # None: the first half of each training sequence.
    context_frames: int | None = None

    def __post_init__(self) -> None:
        check_image_shape(self.image_shape)
        if self.core not in ("lstm", "convlstm"):
            raise ConfigError(f"model.core must be lstm or convlstm, got {self.core!r}")
        if self.context_frames is not None and self.context_frames < 1:
            raise ConfigError(f"model.context_frames must be ≥ 1, got {self.context_frames}")
        if self.core == "convlstm" and any(side % SPATIAL_DOWNSAMPLING for side in self.image_shape[1:]):
            raise ConfigError(
                f"model.core=convlstm needs frame sides divisible by {SPATIAL_DOWNSAMPLING}, "
                f"got {self.image_shape[1]}×{self.image_shape[2]}"
            )
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


class ConvLSTMCell(nn.Module):
    """An LSTM whose gates are 3×3 convolutions over [input, h]: state (B, hidden, H, W)."""

    def __init__(self, in_channels: int, hidden: int) -> None:
        super().__init__()
        self.hidden = hidden
        self.gates = nn.Conv2d(in_channels + hidden, 4 * hidden, 3, padding=1)
        bias = self.gates.bias
        assert bias is not None  # nn.Conv2d has one by default
        with torch.no_grad():  # forget gate open at the start: the state survives early steps
            bias[hidden : 2 * hidden].fill_(1.0)

    def forward(self, inputs: Tensor, state: LSTMState) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        if state is None:
            zeros = inputs.new_zeros(inputs.shape[0], self.hidden, *inputs.shape[2:])
            state = (zeros, zeros)
        h, c = state
        i, f, o, g = self.gates(torch.cat([inputs, h], dim=1)).chunk(4, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return h, (h, c)


class SkipEncoder(nn.Module):
    """Frame (B, C, H, W) → features (B, out, H/4, W/4) and its half-resolution skip (B, width, H/2, W/2)."""

    def __init__(self, channels: int, width: int, out_channels: int) -> None:
        super().__init__()
        self.to_half = nn.Sequential(nn.Conv2d(channels, width, 4, 2, 1), nn.LeakyReLU(0.2))
        self.to_quarter = nn.Sequential(
            nn.Conv2d(width, out_channels, 4, 2, 1),
            nn.LeakyReLU(0.2),
            nn.Conv2d(out_channels, out_channels, 3, 1, 1),
            nn.LeakyReLU(0.2),
        )

    def forward(self, frames: Tensor) -> tuple[Tensor, Tensor]:
        skip = self.to_half(frames)
        return self.to_quarter(skip), skip


class SkipDecoder(nn.Module):
    """Core output (B, in, H/4, W/4) + a frame's skips → decoder output (B, out, H, W)."""

    def __init__(self, in_channels: int, width: int, image_channels: int, out_channels: int) -> None:
        super().__init__()
        self.up_half = nn.Sequential(nn.ConvTranspose2d(in_channels, width, 4, 2, 1), nn.LeakyReLU(0.2))
        self.mix_half = nn.Sequential(nn.Conv2d(2 * width, width, 3, 1, 1), nn.LeakyReLU(0.2))
        self.up_full = nn.Sequential(nn.ConvTranspose2d(width, width, 4, 2, 1), nn.LeakyReLU(0.2))
        self.out = nn.Conv2d(width + image_channels, out_channels, 3, 1, 1)

    def forward(self, core: Tensor, skip: Tensor, skip_frame: Tensor) -> Tensor:
        half = self.mix_half(torch.cat([self.up_half(core), skip], dim=1))
        return self.out(torch.cat([self.up_full(half), skip_frame], dim=1))


class SpatialCore(nn.Module):
    """The convlstm core's networks (see the module docstring)."""

    def __init__(self, c: RVAEConfig, decoder_outputs: int) -> None:
        super().__init__()
        channels, height, width_px = c.image_shape
        quarter = (height // SPATIAL_DOWNSAMPLING, width_px // SPATIAL_DOWNSAMPLING)
        self.encoder = SkipEncoder(channels, c.width, c.frame_dim)
        self.decoder = SkipDecoder(c.hidden_dim, c.width, channels, decoder_outputs)
        self.start = nn.Parameter(torch.zeros(c.frame_dim, *quarter))
        self.core = ConvLSTMCell(c.frame_dim + c.latent_dim, c.hidden_dim)
        self.prior = nn.Conv2d(c.frame_dim + c.hidden_dim, 2 * c.latent_dim, 3, padding=1)
        self.posterior = nn.Conv2d(2 * c.frame_dim + c.hidden_dim, 2 * c.latent_dim, 3, padding=1)
        self.latent_channels = c.latent_dim

    @staticmethod
    def gaussian(output: Tensor) -> tuple[Tensor, Tensor]:
        mu, logvar = output.chunk(2, dim=1)
        return mu, logvar.clamp(-12.0, 8.0)


@register_model("rvae", family="rvae", data_kind="sequences", config_cls=RVAEConfig)
class RVAE(GenerativeModel):
    log_scale: nn.Parameter | None

    def __init__(self, config: RVAEConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        # The decoder's output: one number per pixel value, two for the discretized logistic.
        output_shape = (decoder_channels(c.likelihood, c.image_shape[0]), *c.image_shape[1:])
        self.spatial: SpatialCore | None = None
        if c.core == "convlstm":
            self.spatial = SpatialCore(c, output_shape[0])
        else:
            self.frame_encoder = ConvEncoder(c.image_shape, c.width, c.frame_dim, norm=c.norm)
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

    def step_terms(self, sequences: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """Per-step reconstruction NLL and KL, each (B, T), in nats (one posterior sample)."""
        self.check_sequences(sequences)
        batch, steps = sequences.shape[:2]
        c = self.config
        target = likelihood_target(sequences, c.likelihood, c.binarize, generator)
        if self.spatial is not None:
            return self.spatial_step_terms(sequences, target, generator)
        h = self.embed_frames(sequences)
        h_prev = torch.cat([self.start.expand(batch, 1, -1), h[:, :-1]], dim=1)
        mu_q, logvar_q, _ = self.posterior(h)
        mu_p, logvar_p, _ = self.prior(h_prev)
        z = mu_q + (0.5 * logvar_q).exp() * self.normal_like(mu_q, generator)
        g, _ = self.predictor(torch.cat([h_prev, z], dim=-1))
        decoded = self.frame_decoder(g.flatten(0, 1))
        reconstruction = -log_likelihood(target.flatten(0, 1), decoded, c.likelihood, self.log_scale).view(batch, steps)
        kl = gaussian_kl(mu_q, logvar_q, mu_p, logvar_p)
        return reconstruction, kl

    def normal_like(self, like: Tensor, generator: torch.Generator | None) -> Tensor:
        if generator is None:
            return torch.randn_like(like)
        return torch.randn(like.shape, generator=generator).to(like.device)

    def training_context(self, steps: int) -> int:
        return min(self.config.context_frames or max(1, steps // 2), steps)

    def spatial_step_terms(
        self, sequences: Tensor, target: Tensor, generator: torch.Generator | None
    ) -> tuple[Tensor, Tensor]:
        assert self.spatial is not None
        net, c = self.spatial, self.config
        batch, steps = sequences.shape[:2]
        features, skips = net.encoder(sequences.flatten(0, 1))
        features = features.view(batch, steps, *features.shape[1:])
        skips = skips.view(batch, steps, *skips.shape[1:])
        state: LSTMState = None
        core_h = sequences.new_zeros(batch, c.hidden_dim, *features.shape[-2:])
        outputs, kls = [], []
        for t in range(steps):
            previous = features[:, t - 1] if t > 0 else net.start.expand(batch, -1, -1, -1)
            mu_p, logvar_p = net.gaussian(net.prior(torch.cat([previous, core_h], dim=1)))
            mu_q, logvar_q = net.gaussian(net.posterior(torch.cat([previous, core_h, features[:, t]], dim=1)))
            z = mu_q + (0.5 * logvar_q).exp() * self.normal_like(mu_q, generator)
            core_h, state = net.core(torch.cat([previous, z], dim=1), state)
            outputs.append(core_h)
            kls.append(gaussian_kl(mu_q.flatten(1), logvar_q.flatten(1), mu_p.flatten(1), logvar_p.flatten(1)))
        # Frame t is drawn from the skips of frame min(t − 1, k − 1); frame 0 has none.
        context = self.training_context(steps)
        source = torch.tensor([min(t - 1, context - 1) for t in range(1, steps)], device=sequences.device)
        skip = torch.cat([torch.zeros_like(skips[:, :1]), skips[:, source]], dim=1)
        skip_frames = torch.cat([torch.zeros_like(sequences[:, :1]), sequences[:, source]], dim=1)
        decoded = net.decoder(torch.stack(outputs, dim=1).flatten(0, 1), skip.flatten(0, 1), skip_frames.flatten(0, 1))
        reconstruction = -log_likelihood(target.flatten(0, 1), decoded, c.likelihood, self.log_scale).view(batch, steps)
        return reconstruction, torch.stack(kls, dim=1)

    def spatial_generate(
        self, n: int, num_frames: int, context: Tensor | None, generator: torch.Generator | None
    ) -> Tensor:
        assert self.spatial is not None
        net, c = self.spatial, self.config
        known = 0 if context is None else context.shape[1]
        quarter = net.start.shape[-2:]
        previous = net.start.expand(n, -1, -1, -1)
        core_h = previous.new_zeros(n, c.hidden_dim, *quarter)
        skip = previous.new_zeros(n, c.width, *(2 * side for side in quarter))
        skip_frame = previous.new_zeros(n, *c.image_shape)
        state: LSTMState = None
        frames = []
        for t in range(num_frames):
            mu_p, logvar_p = net.gaussian(net.prior(torch.cat([previous, core_h], dim=1)))
            if t < known:
                assert context is not None
                frame = context[:, t].to(self.device)
                features, frame_skip = net.encoder(frame)
                mu_q, logvar_q = net.gaussian(net.posterior(torch.cat([previous, core_h, features], dim=1)))
                z = mu_q + (0.5 * logvar_q).exp() * self.normal_like(mu_q, generator)
                core_h, state = net.core(torch.cat([previous, z], dim=1), state)
            else:
                z = mu_p + (0.5 * logvar_p).exp() * self.normal_like(mu_p, generator)
                core_h, state = net.core(torch.cat([previous, z], dim=1), state)
                frame = decoded_mean(net.decoder(core_h, skip, skip_frame), c.likelihood)
                features, frame_skip = net.encoder(frame)
            if t < known or known == 0:  # past the context the skips stay those of its last frame
                skip, skip_frame = frame_skip, frame
            frames.append(frame)
            previous = features
        return torch.stack(frames, dim=1)

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

    def generate(self, n: int, num_frames: int, seed: int | None = None, context: Tensor | None = None) -> Tensor:
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
        if self.spatial is not None:
            with evaluating(self):
                return self.spatial_generate(n, num_frames, context, generator)

        with evaluating(self):
            h_prev = self.start.expand(n, -1)
            prior_state = posterior_state = predictor_state = None
            frames = []
            for t in range(num_frames):
                mu_p, logvar_p, prior_state = self.prior(h_prev.unsqueeze(1), prior_state)
                eps = self.normal_like(mu_p, generator)
                if t < known:
                    assert context is not None
                    frame = context[:, t].to(self.device)
                    h_t = self.frame_encoder(frame)
                    mu_q, logvar_q, posterior_state = self.posterior(h_t.unsqueeze(1), posterior_state)
                    z = mu_q + (0.5 * logvar_q).exp() * eps
                else:
                    z = mu_p + (0.5 * logvar_p).exp() * eps
                g, predictor_state = self.predictor(torch.cat([h_prev.unsqueeze(1), z], dim=-1), predictor_state)
                if t >= known:
                    frame = decoded_mean(self.frame_decoder(g.squeeze(1)), self.config.likelihood)
                    h_t = self.frame_encoder(frame)
                frames.append(frame)
                h_prev = h_t
            return torch.stack(frames, dim=1)

    def continue_sequence(self, context: Tensor, num_frames: int | None = None, seed: int | None = None) -> Tensor:
        """Continue each sequence of `context` (B, k, C, H, W) to `num_frames` frames."""
        return self.generate(context.shape[0], num_frames or self.config.num_frames, seed, context=context)

    def sample(self, n: int, seed: int | None = None, num_frames: int | None = None) -> Tensor:
        return self.generate(n, num_frames or self.config.num_frames, seed)

    def check_sequences(self, sequences: Tensor) -> None:
        expected = tuple(self.config.image_shape)
        if sequences.dim() != 5 or tuple(sequences.shape[2:]) != expected:
            raise ValueError(
                f"expected sequences of shape (B, T, {', '.join(map(str, expected))}), got {tuple(sequences.shape)}"
            )
        if sequences.shape[1] < 1:
            raise ValueError("sequences need at least one frame")
