"""What an evaluation measures and how much: one typed config for `genimg evaluate` and for the
evaluation at the end of `genimg train` (the `eval:` section of a run config)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from genimg.errors import ConfigError

FeatureChoice = Literal["auto", "inception", "classifier"]


@dataclass(frozen=True)
class EvalConfig:
    samples: int = 1000  # generated images (sequences for rvae) compared with the real split
    seed: int = 0
    nll_k: int = 100  # importance samples per image for the VAE's IWAE estimate of −log p(x)
    best_of: int = 5  # continuations drawn per test sequence; the best (mean SSIM) is scored
    context_frames: int | None = None  # frames given to the RVAE before it continues; None: half
    max_real: int = 10000  # real records of the split compared at most (a seeded subset beyond)
    features: FeatureChoice = "auto"  # auto: inception when its weights file is present
    extractor_steps: int = 1000  # training steps of the dataset's own feature network
    batch_size: int = 250
    at_end_of_training: bool = True  # `genimg train` evaluates on the validation split

    def __post_init__(self) -> None:
        for key in ("samples", "nll_k", "best_of", "max_real", "extractor_steps", "batch_size"):
            if getattr(self, key) < 1:
                raise ConfigError(f"eval.{key} must be ≥ 1, got {getattr(self, key)}")
        if self.context_frames is not None and self.context_frames < 1:
            raise ConfigError(f"eval.context_frames must be ≥ 1, got {self.context_frames}")


# The end-of-training evaluation is a small, fixed check so every run carries comparable numbers
# without paying for a full evaluation; the run's `eval:` section overrides any of these.
END_OF_TRAINING_DEFAULTS = {"samples": 200, "nll_k": 20, "best_of": 3}
