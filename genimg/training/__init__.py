"""Plain-PyTorch training: per-family steps, the local loop, checkpoints. No Ray, Prefect or
MLflow here: distributed runners and trackers call into this package, never the reverse."""

from genimg.training.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from genimg.training.config import TrainConfig
from genimg.training.loop import BatchSchedule, TrainResult, train_model
from genimg.training.steps import recipe_for

__all__ = [
    "BatchSchedule",
    "TrainConfig",
    "TrainResult",
    "latest_checkpoint",
    "load_checkpoint",
    "recipe_for",
    "save_checkpoint",
    "train_model",
]
