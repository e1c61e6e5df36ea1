"""Where a Ray Train run keeps its files: `<store>/runs/<run name>/` (Ray's checkpoints, and
genimg's note of what the run trains on, read back on --resume)."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, TypedDict, cast
from urllib.parse import urlparse

from genimg.models.base import load_model, save_model
from genimg.store import ObjectStore, local_path


def run_storage(store: ObjectStore) -> tuple[str, Any]:
    """(storage_path, storage_filesystem) for RunConfig: checkpoints live in the store."""
    parsed = urlparse(store.uri)
    if parsed.scheme == "file":
        return str(local_path(store.uri) / "runs"), None
    import pyarrow.fs

    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    path = f"{parsed.netloc}{parsed.path.rstrip('/')}/runs"
    if endpoint:
        # pyarrow does not read AWS_ENDPOINT_URL_S3; credentials still come from the usual chain.
        return path, pyarrow.fs.S3FileSystem(endpoint_override=endpoint)
    return f"s3://{path}", None


class RunRecord(TypedDict):
    """The content of `genimg-run.json`."""

    model: str
    dataset: str


def run_record_key(run_name: str) -> str:
    """genimg's note beside Ray's files of a run: what it trains (read back on --resume)."""
    return f"runs/{run_name}/genimg-run.json"


def write_run_record(store: ObjectStore, run_name: str, model_name: str, dataset: str) -> None:
    record: RunRecord = {"model": model_name, "dataset": dataset}
    store.put_bytes(run_record_key(run_name), json.dumps(record).encode())


def recorded_dataset(store: ObjectStore, run_name: str) -> str | None:
    if not store.exists(run_record_key(run_name)):
        return None
    try:
        record = cast(RunRecord, json.loads(store.get_bytes(run_record_key(run_name))))
        return record.get("dataset")
    except ValueError:
        return None


def run_has_checkpoints(store: ObjectStore, run_name: str) -> bool:
    return any("/checkpoint_" in key for key in store.list(f"runs/{run_name}/"))


def latest_checkpoint_uri(store: ObjectStore, run_name: str) -> str | None:
    """The run's newest Ray checkpoint folder in the store (Ray names them by date), if any."""
    keys = (key.split("/") for key in store.list(f"runs/{run_name}/"))
    latest = max((parts[2] for parts in keys if len(parts) > 3 and parts[2].startswith("checkpoint_")), default=None)
    return store.uri_for(f"runs/{run_name}/{latest}") if latest else None


def checkpoint_uri(store: ObjectStore, path: str) -> str:
    if urlparse(store.uri).scheme == "file":
        return Path(path).as_uri()
    return path if path.startswith("s3://") else f"s3://{path}"


def export_model(checkpoint: Any, export_dir: Path) -> Path:
    """Copy the model files (model.json + model.safetensors) of a Ray checkpoint."""
    with tempfile.TemporaryDirectory(prefix="genimg-export-") as tmp:
        local = Path(checkpoint.to_directory(tmp))
        return save_model(load_model(local), export_dir)
