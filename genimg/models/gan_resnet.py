"""`gan-resnet`: a residual GAN in the SNGAN / BigGAN line (Miyato et al. 2018, Brock et al. 2019).

Generator: z → 4×4 grid → residual up-blocks (BatchNorm, ReLU, nearest ×2, 3×3 convs; the BatchNorm
class-conditional when the model is) → BN, ReLU, 3×3 conv, tanh. Discriminator: residual
down-blocks with spectral norm on every layer, ReLU, global sum pooling, a linear head plus,
when conditional, the projection of the features on a class embedding. Hinge loss by default,
EMA generator for samples, DiffAugment as for every GAN (`model.augment`).

Depth follows the resolution: 32 px is SNGAN's CIFAR-10 network (three up-blocks of 4·width
channels, D downsampling to 8×8 then two more blocks); 64–256 px follow BigGAN's channel plans.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise

from torch import Tensor, nn
from torch.nn import functional as F
from torch.nn.utils.parametrizations import spectral_norm

from genimg.errors import ConfigError
from genimg.models.base import check_conditioning, register_model
from genimg.models.gan import GAN, GANLoss, check_gan_options, check_image_shape, check_positive

SIDES = (8, 16, 32, 64, 128, 256)
# Channels (× width) of the generator: at 4×4, then after each up-block (BigGAN's "arch").
GENERATOR_PLAN = {
    8: (4, 4),
    16: (4, 4, 4),
    32: (4, 4, 4, 4),
    64: (16, 8, 4, 2, 1),
    128: (16, 16, 8, 4, 2, 1),
    256: (16, 16, 8, 8, 4, 2, 1),
}
# Channels (× width) after each discriminator block, and how many of the first blocks halve
# the grid: SNGAN stops at 8×8 up to 32 px; BigGAN goes down to 4×4.
DISCRIMINATOR_PLAN = {
    8: ((4, 4), 0),
    16: ((4, 4, 4), 1),
    32: ((4, 4, 4, 4), 2),
    64: ((1, 2, 4, 8, 16), 4),
    128: ((1, 2, 4, 8, 16, 16), 5),
    256: ((1, 2, 4, 8, 8, 16, 16), 6),
}


@dataclass(frozen=True)
class ResNetGANConfig:
    image_shape: tuple[int, int, int] = (3, 32, 32)
    latent_dim: int = 128
    width: int = 64  # channel unit: 32 px uses 4·width channels throughout (SNGAN: 256)
    loss: GANLoss = "hinge"
    gp_weight: float = 10.0  # wgan-gp only
    ema_decay: float = 0.999
    augment: str = ""  # DiffAugment policy, e.g. "color,translation,cutout"
    conditional: bool = False  # class-conditional BatchNorm in G, projection D
    num_classes: int = 0  # fitted from the data when conditional
    class_names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        check_image_shape(self.image_shape)
        _, height, width = self.image_shape
        if height != width or height not in SIDES:
            raise ConfigError(
                f"model.image_shape: gan-resnet makes square images of {', '.join(map(str, SIDES))} px, "
                f"got {height}x{width} (ingest with --resolution N to make them square)"
            )
        check_positive(latent_dim=self.latent_dim, width=self.width)
        check_gan_options(self.ema_decay, self.augment)
        check_conditioning(self.conditional, self.num_classes, self.class_names)


def init_weights(module: nn.Module) -> None:
    # Xavier-uniform, as SNGAN: PyTorch's default (Kaiming-uniform with a=√5) starts the
    # residual branches too small next to their shortcuts.
    for layer in module.modules():
        if isinstance(layer, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_uniform_(layer.weight)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)


def sn(layer: nn.Module) -> nn.Module:
    """A discriminator layer: initialised, then spectrally normalised (every one of them)."""
    init_weights(layer)
    if isinstance(layer, nn.Embedding):
        nn.init.xavier_uniform_(layer.weight)
    return spectral_norm(layer)


class ConditionalBatchNorm2d(nn.Module):
    """BatchNorm whose scale and shift are looked up per class (identity at start); plain
    affine BatchNorm when `num_classes` is 0."""

    def __init__(self, channels: int, num_classes: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.norm = nn.BatchNorm2d(channels, affine=num_classes == 0)
        if num_classes:
            self.gain = nn.Embedding(num_classes, channels)
            self.bias = nn.Embedding(num_classes, channels)
            nn.init.ones_(self.gain.weight)
            nn.init.zeros_(self.bias.weight)

    def forward(self, x: Tensor, labels: Tensor | None) -> Tensor:
        out = self.norm(x)
        if self.num_classes:
            assert labels is not None
            out = out * self.gain(labels)[:, :, None, None] + self.bias(labels)[:, :, None, None]
        return out


class GeneratorBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, num_classes: int) -> None:
        super().__init__()
        self.norm1 = ConditionalBatchNorm2d(c_in, num_classes)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, 1, 1)
        self.norm2 = ConditionalBatchNorm2d(c_out, num_classes)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1)
        self.shortcut = nn.Conv2d(c_in, c_out, 1)

    def forward(self, x: Tensor, labels: Tensor | None) -> Tensor:
        h = F.interpolate(F.relu(self.norm1(x, labels)), scale_factor=2.0, mode="nearest")
        h = self.conv2(F.relu(self.norm2(self.conv1(h), labels)))
        return h + self.shortcut(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class ResNetGenerator(nn.Module):
    def __init__(self, config: ResNetGANConfig) -> None:
        super().__init__()
        channels, side, _ = config.image_shape
        plan = [config.width * m for m in GENERATOR_PLAN[side]]
        classes = config.num_classes if config.conditional else 0
        self.base_channels = plan[0]
        self.project = nn.Linear(config.latent_dim, plan[0] * 4 * 4)
        self.blocks = nn.ModuleList(GeneratorBlock(c_in, c_out, classes) for c_in, c_out in pairwise(plan))
        self.out_norm = nn.BatchNorm2d(plan[-1])
        self.out_conv = nn.Conv2d(plan[-1], channels, 3, 1, 1)
        init_weights(self)

    def forward(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        h = self.project(z).view(-1, self.base_channels, 4, 4)
        for block in self.blocks:
            h = block(h, labels)
        return self.out_conv(F.relu(self.out_norm(h))).tanh()


class DiscriminatorBlock(nn.Module):
    """Pre-activation residual block (the first one sees raw pixels: no ReLU before it)."""

    def __init__(self, c_in: int, c_out: int, *, downsample: bool, first: bool) -> None:
        super().__init__()
        self.downsample, self.first = downsample, first
        self.conv1 = sn(nn.Conv2d(c_in, c_out, 3, 1, 1))
        self.conv2 = sn(nn.Conv2d(c_out, c_out, 3, 1, 1))
        self.shortcut = sn(nn.Conv2d(c_in, c_out, 1)) if (c_in != c_out or downsample) else None

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv2(F.relu(self.conv1(x if self.first else F.relu(x))))
        if self.downsample:
            h = F.avg_pool2d(h, 2)
        skip = x
        if self.shortcut is not None:
            # The first block pools before its 1×1 conv (SNGAN's "optimized" block): fewer FLOPs.
            if self.first and self.downsample:
                skip = self.shortcut(F.avg_pool2d(skip, 2))
            else:
                skip = self.shortcut(skip)
                skip = F.avg_pool2d(skip, 2) if self.downsample else skip
        return h + skip


class ResNetDiscriminator(nn.Module):
    def __init__(self, config: ResNetGANConfig) -> None:
        super().__init__()
        channels, side, _ = config.image_shape
        multipliers, downsampling = DISCRIMINATOR_PLAN[side]
        plan = [channels] + [config.width * m for m in multipliers]
        self.blocks = nn.Sequential(
            *(
                DiscriminatorBlock(c_in, c_out, downsample=i < downsampling, first=i == 0)
                for i, (c_in, c_out) in enumerate(pairwise(plan))
            )
        )
        self.head = sn(nn.Linear(plan[-1], 1))
        classes = config.num_classes if config.conditional else 0
        self.projection = sn(nn.Embedding(classes, plan[-1])) if classes else None

    def forward(self, images: Tensor, labels: Tensor | None = None) -> Tensor:
        features = F.relu(self.blocks(images)).sum(dim=(2, 3))  # global sum pooling
        logits = self.head(features).squeeze(1)
        if self.projection is not None:
            assert labels is not None
            logits = logits + (self.projection(labels) * features).sum(1)
        return logits


@register_model("gan-resnet", family="gan", data_kind="images", config_cls=ResNetGANConfig)
class ResNetGAN(GAN):
    """Residual G and spectral-norm residual D; pixels scaled to [-1, 1] like the DCGAN."""

    def __init__(self, config: ResNetGANConfig) -> None:
        super().__init__(config)
        self.generator = ResNetGenerator(config)
        self.discriminator = ResNetDiscriminator(config)
        self.finish_init()

    def to_model_space(self, images: Tensor) -> Tensor:
        return images * 2.0 - 1.0

    def to_pixel_space(self, outputs: Tensor) -> Tensor:
        return (outputs + 1.0) / 2.0
