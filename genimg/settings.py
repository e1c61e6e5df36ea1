"""Where genimg keeps its local state: `GENIMG_HOME` (default ./.genimg)."""

from __future__ import annotations

import os
from pathlib import Path


def genimg_home() -> Path:
    return Path(os.environ.get("GENIMG_HOME", ".genimg")).expanduser().resolve()


def local_runs_dir() -> Path:
    return genimg_home() / "runs"
