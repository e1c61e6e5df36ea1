"""Models out of tracking's storage: a registered version's generator (`models:/NAME/VERSION`,
`models:/NAME@ALIAS`), or a checkpoint / export folder given as a path, file:// or s3:// URI."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlparse

from genimg.errors import GenimgError
from genimg.models.base import GenerativeModel, load_model
from genimg.store import download_s3_source, local_path
from genimg.tracking.runs import client, fluent_tracking, tracking_uri

WEIGHTS_TAG = "genimg.weights_sha256"  # on a model version: the sha256 of its registered weights
MODEL_URI_PATTERN = re.compile(r"models:/(?P<name>[^/@\s]+)(?:/(?P<version>\d+)|@(?P<alias>[\w-]+))")


def model_version_at(uri: re.Match[str]) -> Any:
    """The registry's model version a matched `models:/NAME/VERSION` or `@ALIAS` names (MLflow's
    own exception when there is none)."""
    registry = client(f"looking up {uri.group(0)}")
    return (
        registry.get_model_version(uri["name"], uri["version"])
        if uri["version"]
        else registry.get_model_version_by_alias(uri["name"], uri["alias"])
    )


def registered_weights_sha256(uri: str) -> str | None:
    """What the registry recorded for the weights of `models:/NAME/VERSION` or `@ALIAS`."""
    from mlflow.exceptions import MlflowException

    match = MODEL_URI_PATTERN.fullmatch(uri)
    if match is None:
        return None
    try:
        # MLflow's ModelVersion.tags is unannotated: a dict of str to str.
        return cast("str | None", model_version_at(match).tags.get(WEIGHTS_TAG))
    except MlflowException:
        return None  # the download names what is missing


def load_registered_model(uri: str) -> GenerativeModel:
    """The generator of `models:/NAME/VERSION` or `models:/NAME@ALIAS` (its safetensors + JSON),
    its weights checked against the sha256 the registry recorded at registration."""
    import mlflow.artifacts
    from mlflow.exceptions import MlflowException

    with tempfile.TemporaryDirectory(prefix="genimg-model-") as scratch:
        try:
            with fluent_tracking(f"downloading {uri}"):
                local = mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=scratch)
        except MlflowException as exc:
            raise GenimgError(f"{uri}: not found in the registry at {tracking_uri()} ({exc.message})") from exc
        weights = Path(local) / "artifacts" / "weights"
        if not weights.is_dir():
            raise GenimgError(f"{uri} is not a genimg generator (no artifacts/weights)")
        try:
            return load_model(weights, expected_sha256=registered_weights_sha256(uri))
        except GenimgError as exc:
            raise GenimgError(f"{uri}: {exc}") from exc


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
    return load_model(local_path(location) if parsed.scheme == "file" else Path(location))
