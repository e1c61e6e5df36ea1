from __future__ import annotations

import os

import numpy as np
import pytest
import torch

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

# Tiny networks keep every model test to a fraction of a second on 2 CPU cores.
TINY = {
    "gan-mlp": {"latent_dim": 8, "generator_hidden": [32, 32], "discriminator_hidden": [32]},
    "gan": {"latent_dim": 8, "width": 4},
    "vae": {"latent_dim": 4, "width": 4},
    "rvae": {"latent_dim": 4, "width": 4, "frame_dim": 16, "hidden_dim": 16},
}


def tiny_config(name: str, image_shape: tuple[int, int, int], **extra: object) -> dict:
    return {**TINY[name], "image_shape": list(image_shape), **extra}


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GENIMG_HOME", str(tmp_path_factory.mktemp("genimg-home")))
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def digits() -> np.ndarray:
    """The builtin digits (1,797 × 1 × 16 × 16 uint8)."""
    from genimg.data import read_source

    return read_source("builtin:digits").data


@pytest.fixture(scope="session")
def small_sequences(digits: np.ndarray) -> np.ndarray:
    """64 moving-digit sequences of 6 frames in a 16 px canvas, from 8 px digits."""
    from genimg.data import make_moving_digits

    small_digits = digits[:, :, ::2, ::2].copy()
    return make_moving_digits(small_digits, 64, num_frames=6, canvas_size=16, seed=1)
