"""Training hyperparameters shared by every family (model hyperparameters live in the model's
config). Batch sizes here are per process; a distributed run multiplies by its workers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from genimg.errors import ConfigError

# Adam settings per family and GAN loss, from the papers each recipe follows.
DEFAULT_LEARNING_RATES = {"gan": 2e-4, "vae": 1e-3, "rvae": 1e-3}
DEFAULT_BETAS = {"gan": (0.5, 0.999), "vae": (0.9, 0.999), "rvae": (0.9, 0.999)}
WGAN_GP_BETAS = (0.0, 0.9)

# Where bf16 autocast + channels_last pays on a GPU, by the records' side (issue 16, one H200):
# at 16 px every family ran slower in bf16 (gan-mlp ×0.90, gan ×0.89, vae ×0.77, rvae ×0.76),
# at 32 px the `gan` too (×0.89: the step is bound by the host); from 64 px the arithmetic
# dominates and bf16 + channels_last ran faster (`gan` 24.7k vs 24.3k img/s at batch 256; the
# reference DCGAN 31.0k vs 27.5k).
BF16_FROM_SIDE = 64
# Seeds reach numpy, torch and Python's RNGs, and the batch order's generator takes
# seed × 1,000,003 + epoch: 32 bits keep every derived seed within the 64 bits torch accepts.
MAX_SEED = 2**32 - 1


def gpu_defaults(convolutional: bool, record_shape: tuple[int, ...]) -> dict[str, Any]:
    """The train settings `--gpu` adds for a model on records of `record_shape`: bf16 autocast
    and channels_last for a convolutional model on images of BF16_FROM_SIDE px or more; below,
    or for a fully connected model, none (fp32, as measured faster there)."""
    if convolutional and min(record_shape[-2:]) >= BF16_FROM_SIDE:
        return {"precision": "bf16", "channels_last": True}
    return {}


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 1000
    batch_size: int = 64
    lr: float | None = None  # None: the family's default (DEFAULT_LEARNING_RATES)
    betas: tuple[float, float] | None = None  # None: the family's default
    weight_decay: float = 0.0
    d_steps: int = 1  # discriminator updates per generator update (GANs)
    grad_clip: float | None = None  # max global gradient norm; None: no clipping
    seed: int = 0
    log_every: int = 50
    checkpoint_every: int = 500
    keep_checkpoints: int = 3
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"  # autocast dtype; fp16 adds a grad scaler
    channels_last: bool = False  # NHWC memory layout for conv models (faster on GPUs)
    compile: bool = False  # torch.compile each network (in place: checkpoints stay the same)
    # Record the whole step as one CUDA graph and replay it (genimg.training.graphs). None: where it
    # can (one CUDA process, fp32 or bf16, no compile); true: fail where it cannot; false: never.
    cuda_graph: bool | None = None
    # How Ray Train workers get a store dataset's records: "memory" loads each worker's share before
    # the first step; "stream" reads shards as the steps need them (bounded memory); "auto" streams
    # a train split of STREAM_THRESHOLD_BYTES or more (genimg.data.handle).
    data_mode: Literal["auto", "memory", "stream"] = "auto"
    shuffle_buffer: int = 4096  # records a streaming worker shuffles among
    prefetch_shards: int = 2  # shards a streaming worker reads ahead

    def stream_options(self) -> dict[str, int]:
        """A RecordStream's settings from this config (the shard order and shuffle are drawn from
        the seed, batches are batch_size records)."""
        return {
            "seed": self.seed,
            "batch_size": self.batch_size,
            "shuffle_buffer": self.shuffle_buffer,
            "prefetch_shards": self.prefetch_shards,
        }

    def __post_init__(self) -> None:
        for key in (
            "steps",
            "batch_size",
            "d_steps",
            "log_every",
            "checkpoint_every",
            "keep_checkpoints",
            "shuffle_buffer",
            "prefetch_shards",
        ):
            if getattr(self, key) < (0 if key == "steps" else 1):
                raise ConfigError(f"train.{key} must be ≥ {0 if key == 'steps' else 1}, got {getattr(self, key)}")
        if self.lr is not None and self.lr <= 0:
            raise ConfigError(f"train.lr must be > 0, got {self.lr}")
        if self.betas is not None and not all(0.0 <= b < 1.0 for b in self.betas):
            raise ConfigError(f"train.betas must be in [0, 1), got {self.betas}")
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise ConfigError(f"train.grad_clip must be > 0, got {self.grad_clip}")
        if self.data_mode not in ("auto", "memory", "stream"):
            raise ConfigError(f"train.data_mode must be auto, memory or stream, got {self.data_mode!r}")
        if self.weight_decay < 0:
            raise ConfigError(f"train.weight_decay must be ≥ 0, got {self.weight_decay}")
        if not 0 <= self.seed <= MAX_SEED:
            raise ConfigError(f"train.seed must be from 0 to {MAX_SEED} (2**32 - 1), got {self.seed}")
