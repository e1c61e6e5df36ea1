"""Models out of tracking's storage: a registered version's generator (`models:/NAME/VERSION`,
`models:/NAME@ALIAS`), or a checkpoint / export folder given as a path, file:// or s3:// URI."""

from __future__ import annotations

import tempfile
from pathlib import Path
from urllib.parse import urlparse

from genimg.errors import GenimgError
from genimg.models.base import GenerativeModel, load_model
from genimg.store import download_s3_source
from genimg.tracking.runs import fluent_tracking, tracking_uri


def load_registered_model(uri: str) -> GenerativeModel:
    """The generator of `models:/NAME/VERSION` or `models:/NAME@ALIAS` (its safetensors + JSON)."""
    import mlflow.artifacts
    from mlflow.exceptions import MlflowException

    with tempfile.TemporaryDirectory(prefix="genimg-model-") as scratch:
        try:
            with fluent_tracking():
                local = mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=scratch)
        except MlflowException as exc:
            raise GenimgError(f"{uri}: not found in the registry at {tracking_uri()} ({exc.message})") from exc
        weights = Path(local) / "artifacts" / "weights"
        if not weights.is_dir():
            raise GenimgError(f"{uri} is not a genimg generator (no artifacts/weights)")
        return load_model(weights)


def load_model_at(location: str) -> GenerativeModel:
    """A model from a folder or a file:// / s3:// URI of one (a checkpoint or an export), or
    from the registry (`models:/NAME/VERSION`, `models:/NAME@ALIAS`)."""
    if location.startswith("models:/"):
        return load_registered_model(location)
    parsed = urlparse(location)
    if parsed.scheme == "s3":
        downloaded = download_s3_source(location)
        try:
            return load_model(downloaded.local_path)
        finally:
            downloaded.cleanup()
    return load_model(Path(parsed.path) if parsed.scheme == "file" else Path(location))
