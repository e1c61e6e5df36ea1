"""What the quality benchmarks share: training a model for a wall-clock budget, and their table."""

from __future__ import annotations

import time
from typing import Any

import torch


class BudgetSpent(Exception):
    pass


def train_for(
    model: Any,
    records: torch.Tensor,
    train: dict[str, Any],
    budget: float,
    *,
    labels: torch.Tensor | None = None,
    device: str = "cpu",
) -> tuple[int, float]:
    """Train `model` until `budget` seconds have passed (checked every 10 steps), with the
    TrainConfig options in `train`; returns (steps, seconds). `labels` go to conditional models."""
    from genimg.training.config import TrainConfig
    from genimg.training.loop import train_model

    started = time.perf_counter()
    reached = [0]

    def on_log(step: int, metrics: dict[str, float]) -> None:
        reached[0] = step
        if time.perf_counter() - started >= budget:
            raise BudgetSpent

    config = TrainConfig(**{"steps": 10_000_000, "log_every": 10, "checkpoint_every": 10_000_000, **train})
    try:
        train_model(model, records, config, device=device, on_log=on_log, labels=labels if model.num_classes else None)
    except BudgetSpent:
        pass
    return reached[0], time.perf_counter() - started


def print_table(results: dict[str, Any], names: list[str], columns: list[str]) -> None:
    """One markdown row per benchmark entry; "—" where an entry has no such figure."""
    print("| family | " + " | ".join(columns) + " |\n|" + " --- |" * (len(columns) + 1))
    for name in names:
        cells = [results[name].get(column) for column in columns]
        print(
            f"| {name} | "
            + " | ".join("—" if c is None else str(c) if isinstance(c, int) else f"{c:.4g}" for c in cells)
            + " |"
        )
