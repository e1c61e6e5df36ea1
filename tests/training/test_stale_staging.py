"""A run killed while writing a checkpoint leaves a staging folder; the next run removes it."""

import os
import socket
import subprocess
import sys
import textwrap

import torch

from genimg.models import build_model
from genimg.training import TrainConfig, latest_checkpoint, train_model
from tests.conftest import tiny_config

KILLED_RUN = textwrap.dedent(
    """
    import os, sys
    import torch
    from genimg.models import build_model
    from genimg.training import TrainConfig, train_model

    os.replace = lambda *args: os._exit(9)  # killed after writing the checkpoint, before the rename
    model = build_model("vae", {"latent_dim": 4, "width": 4, "image_shape": [1, 16, 16]})
    train_model(model, torch.zeros(16, 1, 16, 16, dtype=torch.uint8),
                TrainConfig(steps=2, batch_size=8), checkpoint_dir=sys.argv[1])
    """
)


def test_the_next_run_removes_staging_folders_of_killed_writers_only(tmp_path, digits):
    killed = subprocess.run([sys.executable, "-c", KILLED_RUN, str(tmp_path)], timeout=120)
    assert killed.returncode == 9
    stale = [p.name for p in tmp_path.glob(".staging-*")]
    assert len(stale) == 1 and stale[0].startswith(".staging-step-00000002-")
    live = tmp_path / f".staging-step-00000004-{os.getpid()}@{socket.gethostname()}"
    elsewhere = tmp_path / ".staging-step-00000004-1@another-host"  # cannot tell: it stays
    live.mkdir()
    elsewhere.mkdir()

    model = build_model("vae", tiny_config("vae", (1, 16, 16)))
    train_model(model, torch.from_numpy(digits[:64]), TrainConfig(steps=2, batch_size=8), checkpoint_dir=tmp_path)

    left = sorted(p.name for p in tmp_path.glob(".staging-*"))
    assert left == sorted([live.name, elsewhere.name])
    assert latest_checkpoint(tmp_path).step == 2
