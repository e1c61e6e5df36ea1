"""One optimisation step per family, in plain PyTorch.

A `StepContext` carries what differs between a local and a distributed, CPU and GPU run:
`gradient_sync` averages each group of parameters' gradients across ranks around the backward
pass (a distributed runner passes an all-reduce, a local run nothing); `autocast` wraps the forward
passes (bf16 / fp16 mixed precision); `scaler` scales fp16 losses.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import Tensor, nn
from torch.optim import Adam, Optimizer

from genimg.models.base import GenerativeModel, model_spec
from genimg.models.gan import GAN
from genimg.models.rvae import RVAE
from genimg.models.vae import VAE
from genimg.training.config import (
    DEFAULT_BETAS,
    DEFAULT_LEARNING_RATES,
    WGAN_GP_BETAS,
    TrainConfig,
)

Optimizers = dict[str, Optimizer]


class GradientSync(Protocol):
    """Averages gradients across data-parallel ranks: `start(parameters)` before a backward pass
    that computes their gradients (an implementation may begin averaging while the pass runs),
    `finish(parameters)` after it, when the gradients must be the ranks' mean."""

    def start(self, parameters: Sequence[nn.Parameter]) -> None: ...

    def finish(self, parameters: Sequence[nn.Parameter]) -> None: ...


class NoSync:
    """A single process: its gradients are the mean already."""

    def start(self, parameters: Sequence[nn.Parameter]) -> None:
        return None

    def finish(self, parameters: Sequence[nn.Parameter]) -> None:
        return None


no_sync = NoSync()


@dataclass
class StepContext:
    gradient_sync: GradientSync = no_sync
    autocast: Callable[[], Any] = field(default=contextlib.nullcontext)
    scaler: torch.amp.GradScaler | None = None


def make_step_context(
    precision: str, device: torch.device, gradient_sync: GradientSync = no_sync, *, graphed: bool = False
) -> StepContext:
    """`graphed`: the step is recorded as a CUDA graph, whose autocast must not cache the weights'
    low-precision copies (a cached copy would be made once, at recording, and never again)."""
    if precision == "fp32":
        return StepContext(gradient_sync)
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16

    def autocast() -> Any:
        return torch.autocast(device_type=device.type, dtype=dtype, cache_enabled=not graphed)

    scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None
    return StepContext(gradient_sync, autocast, scaler)


def adam(
    parameters: Iterable[nn.Parameter],
    config: TrainConfig,
    family: str,
    default_betas: tuple[float, float] | None = None,
    capturable: bool = False,
) -> Adam:
    """Adam; on a GPU the fused kernel (one launch per step for every parameter, no host sync).
    `capturable`: its step counts live on the GPU, so a CUDA graph can record its updates."""
    trained = [p for p in parameters if p.requires_grad]
    on_gpu = bool(trained) and trained[0].is_cuda
    return Adam(
        trained,
        lr=config.lr if config.lr is not None else DEFAULT_LEARNING_RATES[family],
        betas=config.betas or default_betas or DEFAULT_BETAS[family],
        weight_decay=config.weight_decay,
        fused=True if on_gpu else None,
        capturable=capturable and on_gpu,
    )


def gan_optimizers(model: GenerativeModel, config: TrainConfig, capturable: bool = False) -> Optimizers:
    assert isinstance(model, GAN)
    betas = WGAN_GP_BETAS if model.config.loss == "wgan-gp" else None
    return {
        "generator": adam(model.generator.parameters(), config, "gan", betas, capturable),
        "discriminator": adam(model.discriminator.parameters(), config, "gan", betas, capturable),
    }


def likelihood_optimizers(model: GenerativeModel, config: TrainConfig, capturable: bool = False) -> Optimizers:
    family = model_spec(model.registry_name).family
    return {"model": adam(model.parameters(), config, family, capturable=capturable)}


def to_pixels(records: Tensor, device: torch.device, channels_last: bool) -> Tensor:
    """A batch of uint8 records → float pixels in [0, 1] on `device`."""
    batch = records.to(device, non_blocking=True).float().div_(255.0)
    if channels_last and batch.dim() == 4:
        batch = batch.contiguous(memory_format=torch.channels_last)
    return batch


def apply_update(
    loss: Tensor,
    optimizer: Optimizer,
    parameters: list[nn.Parameter],
    config: TrainConfig,
    context: StepContext,
) -> None:
    optimizer.zero_grad(set_to_none=True)
    scaler = context.scaler
    context.gradient_sync.start(parameters)
    (scaler.scale(loss) if scaler is not None else loss).backward()
    context.gradient_sync.finish(parameters)
    if scaler is not None:
        scaler.unscale_(optimizer)
    if config.grad_clip is not None:
        nn.utils.clip_grad_norm_(parameters, config.grad_clip)
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()


def gan_step(
    model: GenerativeModel,
    optimizers: Optimizers,
    batch: Tensor,
    config: TrainConfig,
    context: StepContext | None = None,
    labels: Tensor | None = None,
) -> dict[str, Tensor]:
    """One discriminator (× d_steps) and one generator update. A conditional GAN gets the
    batch's labels: D scores real images with their own classes, G draws the same classes."""
    assert isinstance(model, GAN)
    context = context or StepContext()
    d_params = [p for p in model.discriminator.parameters() if p.requires_grad]
    g_params = [p for p in model.generator.parameters() if p.requires_grad]
    for _ in range(config.d_steps):
        with context.autocast():
            d_losses = model.discriminator_loss(batch, labels)
        apply_update(d_losses.total, optimizers["discriminator"], d_params, config, context)
    # D is frozen for the generator's step: its gradients would be discarded anyway.
    model.discriminator.requires_grad_(False)
    try:
        with context.autocast():
            g_losses = model.generator_loss(batch.shape[0], labels)
        apply_update(g_losses.total, optimizers["generator"], g_params, config, context)
    finally:
        for p in d_params:
            p.requires_grad_(True)
    model.update_ema()
    return d_losses.parts | g_losses.parts


def likelihood_step(
    model: GenerativeModel,
    optimizers: Optimizers,
    batch: Tensor,
    config: TrainConfig,
    context: StepContext | None = None,
    labels: Tensor | None = None,
) -> dict[str, Tensor]:
    assert isinstance(model, (VAE, RVAE))
    context = context or StepContext()
    with context.autocast():
        if labels is None:
            losses = model.loss(batch)
        else:
            assert isinstance(model, VAE)  # the one class-conditional likelihood model
            # The loop checked the labels' range when the records came in (once, on the host).
            losses = model.loss(batch, labels, labels_checked=True)
    params = [p for p in model.parameters() if p.requires_grad]
    apply_update(losses.total, optimizers["model"], params, config, context)
    return losses.parts


@dataclass(frozen=True)
class Recipe:
    make_optimizers: Callable[..., Optimizers]  # (model, config, capturable=False)
    step: Callable[..., dict[str, Tensor]]


RECIPES: dict[str, Recipe] = {
    "gan": Recipe(gan_optimizers, gan_step),
    "vae": Recipe(likelihood_optimizers, likelihood_step),
    "rvae": Recipe(likelihood_optimizers, likelihood_step),
}


def recipe_for(model: GenerativeModel) -> Recipe:
    return RECIPES[model_spec(model.registry_name).family]


@torch.no_grad()
def mean_metrics(history: list[dict[str, Tensor]]) -> dict[str, float]:
    """Averages of logged parts over steps, converted to floats once (one device sync)."""
    if not history:
        return {}
    keys = history[0].keys()
    stacked = torch.stack([torch.stack([entry[k].float() for k in keys]) for entry in history])
    return dict(zip(keys, stacked.mean(0).tolist(), strict=True))
