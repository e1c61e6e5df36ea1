"""Full training checkpoints: model (the export format), optimisers, step and every RNG.

A checkpoint is a folder `step-NNNNNNNN/` holding `model.json` + `model.safetensors` (so it
can be sampled from like an exported model) and `state.json` + `state.safetensors`. It is
written under a temporary name carrying its writer (`.staging-step-NNNNNNNN-pid@host`) and
renamed into place, so a folder with that name is complete, and a temporary whose writer was
killed can be told from one still being written.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from genimg.config import config_to_dict
from genimg.errors import GenimgError
from genimg.models.base import (
    MODEL_WEIGHTS_FILE,
    GenerativeModel,
    check_weights,
    read_model_description,
    save_model,
)
from genimg.store import disk_full_cause, disk_full_error, writer_is_gone, writer_tag
from genimg.training.config import TrainConfig
from genimg.training.state import flatten_state, unflatten_state
from genimg.training.steps import Optimizers

STATE_FILE = "state.json"
STATE_TENSORS_FILE = "state.safetensors"
CHECKPOINT_PREFIX = "step-"
RANK_RNG_PREFIX = "rng-rank-"  # other data-parallel ranks' RNG states, beside rank 0's state
STAGING_NAME = re.compile(r"\.staging-step-\d+-(?P<writer>\d+@.+)")


@dataclass(frozen=True)
class CheckpointInfo:
    path: Path
    step: int


def capture_rng() -> dict[str, Any]:
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def checkpoint_name(step: int) -> str:
    return f"{CHECKPOINT_PREFIX}{step:08d}"


def write_state(folder: Path, stem: str, state: dict[str, Any]) -> None:
    tensors: dict[str, torch.Tensor] = {}
    skeleton = flatten_state(state, tensors)
    save_file(tensors, str(folder / f"{stem}.safetensors"))
    (folder / f"{stem}.json").write_text(json.dumps(skeleton))


def read_state(folder: Path, stem: str) -> dict[str, Any]:
    skeleton = json.loads((folder / f"{stem}.json").read_text())
    state: dict[str, Any] = unflatten_state(skeleton, load_file(str(folder / f"{stem}.safetensors")))
    return state


def write_checkpoint_files(
    folder: Path,
    model: GenerativeModel,
    optimizers: Optimizers,
    step: int,
    train_config: TrainConfig,
    scaler: torch.amp.GradScaler | None = None,
) -> Path:
    """Write a complete checkpoint into `folder` (created if needed)."""
    save_model(model, folder)
    state = {
        "step": step,
        "model": model.registry_name,
        "train_config": config_to_dict(train_config),
        "optimizers": {name: opt.state_dict() for name, opt in optimizers.items()},
        "scaler": scaler.state_dict() if scaler is not None else None,
        "rng": capture_rng(),
    }
    write_state(folder, STATE_FILE.removesuffix(".json"), state)
    return folder


def checkpoint_step(folder: Path) -> int:
    """The step a checkpoint folder was written at (reads only its JSON skeleton)."""
    skeleton = json.loads((folder / STATE_FILE).read_text())
    return int(dict(skeleton["__dict__"])["step"])


def write_rank_rng(folder: Path, rank: int) -> None:
    """A data-parallel rank's RNG state, next to rank 0's checkpoint (merged into one folder)."""
    folder.mkdir(parents=True, exist_ok=True)
    write_state(folder, f"{RANK_RNG_PREFIX}{rank}", capture_rng())


def restore_rank_rng(folder: Path, rank: int) -> bool:
    if not (folder / f"{RANK_RNG_PREFIX}{rank}.json").is_file():
        return False
    restore_rng(read_state(folder, f"{RANK_RNG_PREFIX}{rank}"))
    return True


def save_checkpoint(
    directory: str | Path,
    model: GenerativeModel,
    optimizers: Optimizers,
    step: int,
    train_config: TrainConfig,
    *,
    keep: int | None = None,
    scaler: torch.amp.GradScaler | None = None,
) -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / checkpoint_name(step)
    staging = directory / f".staging-{checkpoint_name(step)}-{writer_tag()}"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        write_checkpoint_files(staging, model, optimizers, step, train_config, scaler)
    except Exception as exc:
        shutil.rmtree(staging, ignore_errors=True)  # a partial checkpoint only takes space
        cause = disk_full_cause(exc)
        if cause is None:
            raise
        previous = latest_checkpoint(directory)
        intact = f"the previous checkpoint, step {previous.step}, is intact" if previous else "no earlier checkpoint"
        raise disk_full_error(cause, directory, f"checkpoint step {step} to {final.as_uri()}", intact) from exc
    if final.exists():
        shutil.rmtree(final)
    os.replace(staging, final)
    if keep is not None:
        prune_checkpoints(directory, keep)
    return final


def remove_stale_staging(directory: str | Path) -> list[Path]:
    """Remove the staging folders in `directory` whose writer was killed mid-write (see
    `writer_is_gone`: a live writer's, or one on another host, stay); the removed ones."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    removed = []
    for path in sorted(directory.glob(".staging-*")):
        match = STAGING_NAME.fullmatch(path.name)
        if match and path.is_dir() and writer_is_gone(match["writer"]):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def list_checkpoints(directory: str | Path) -> list[CheckpointInfo]:
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = []
    for path in directory.iterdir():
        suffix = path.name.removeprefix(CHECKPOINT_PREFIX)
        if path.name.startswith(CHECKPOINT_PREFIX) and suffix.isdigit() and (path / STATE_FILE).is_file():
            found.append(CheckpointInfo(path, int(suffix)))
    return sorted(found, key=lambda info: info.step)


def latest_checkpoint(directory: str | Path) -> CheckpointInfo | None:
    checkpoints = list_checkpoints(directory)
    return checkpoints[-1] if checkpoints else None


def prune_checkpoints(directory: Path, keep: int) -> None:
    for info in list_checkpoints(directory)[:-keep]:
        shutil.rmtree(info.path, ignore_errors=True)


def load_checkpoint(
    path: str | Path,
    model: GenerativeModel,
    optimizers: Optimizers,
    *,
    restore_rngs: bool = True,
    scaler: torch.amp.GradScaler | None = None,
) -> dict[str, Any]:
    """Load weights, optimiser (and grad-scaler) state in place, restore RNGs; returns the
    saved state."""
    path = Path(path)
    description = read_model_description(path)
    if description["model"] != model.registry_name:
        raise GenimgError(f"checkpoint {path} is for model {description['model']}, not {model.registry_name}")
    if (path / MODEL_WEIGHTS_FILE).is_file():
        check_weights(path / MODEL_WEIGHTS_FILE, description)
    try:
        weights = load_file(str(path / MODEL_WEIGHTS_FILE), device=str(model.device))
        model.load_state_dict(weights, strict=True)
        state = read_state(path, STATE_FILE.removesuffix(".json"))
    except GenimgError:
        raise
    except Exception as exc:
        raise GenimgError(f"cannot load checkpoint {path}: {str(exc).splitlines()[0]}") from exc
    missing = set(optimizers) ^ set(state["optimizers"])
    if missing:
        raise GenimgError(f"checkpoint {path} has optimisers {sorted(state['optimizers'])}")
    for name, optimizer in optimizers.items():
        optimizer.load_state_dict(state["optimizers"][name])
    if scaler is not None and state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
    if restore_rngs:
        restore_rng(state["rng"])
    return state
