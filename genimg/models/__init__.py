"""Model families, picked by name through `MODEL_REGISTRY` (gan-mlp, gan, gan-resnet, vae, rvae)."""

from genimg.models.base import (
    MODEL_REGISTRY,
    GenerativeModel,
    Losses,
    ModelSpec,
    build_model,
    load_model,
    model_spec,
    save_model,
)
from genimg.models.gan import DCGAN, GAN, MLPGAN, GANConfig, GANMLPConfig
from genimg.models.gan_resnet import ResNetGAN, ResNetGANConfig
from genimg.models.rvae import RVAE, RVAEConfig
from genimg.models.vae import VAE, VAEConfig

__all__ = [
    "DCGAN",
    "GAN",
    "MLPGAN",
    "MODEL_REGISTRY",
    "RVAE",
    "ResNetGAN",
    "ResNetGANConfig",
    "VAE",
    "GANConfig",
    "GANMLPConfig",
    "GenerativeModel",
    "Losses",
    "ModelSpec",
    "RVAEConfig",
    "VAEConfig",
    "build_model",
    "load_model",
    "model_spec",
    "save_model",
]
