"""MLflow runs for training: params, batched metrics, artifacts, tags.

Tracking URI: `MLFLOW_TRACKING_URI`, else SQLite in `$GENIMG_HOME/mlflow.db`. Only the driver
process logs (workers send what it needs), so a SQLite database is never opened by two
processes at once during a run.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from genimg.data.sources import pinned_version
from genimg.errors import USERINFO, GenimgError, first_line, redact_credentials
from genimg.settings import genimg_home
from genimg.tracking import tags as tag_names
from genimg.tracking.connection import wait_for_tracking

DEFAULT_EXPERIMENT = "genimg"
MAX_BATCH = 900  # MLflow accepts up to 1,000 metrics per log_batch call
FLUSH_SECONDS = 10.0  # buffered metrics reach the server at least this often


def tracking_uri() -> str:
    configured = os.environ.get("MLFLOW_TRACKING_URI")
    if configured:
        return configured
    home = genimg_home()
    home.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{home / 'mlflow.db'}"


def hide_run_links(uri: str) -> None:
    """MLflow prints "🏃 View run … at: <tracking URI>" on stdout whenever a run ends (in this
    process, a Tune trial's or a Ray worker's): with a user and password in the URI, it would print
    them. Its own switch turns the line off (read at each print, so this covers later runs)."""
    if USERINFO.search(uri):
        os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"


def client(doing: str = "connecting to it") -> Any:
    """An MLflow client of genimg's tracking URI, once the server answers (see
    tracking.connection; `doing` says what for, in the error if it does not)."""
    import logging

    from mlflow.tracking import MlflowClient

    # MLflow announces creating and migrating its database at INFO on every new GENIMG_HOME;
    # genimg's own lines say what happens.
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)

    uri = tracking_uri()
    hide_run_links(uri)
    wait_for_tracking(uri, doing)
    # A client bound to the URI, not mlflow.set_tracking_uri, which would export
    # MLFLOW_TRACKING_URI to the whole process (and to every later run in it).
    return MlflowClient(tracking_uri=uri)


def experiment_name() -> str:
    """MLflow's own MLFLOW_EXPERIMENT_NAME, else GENIMG_EXPERIMENT (older name), else genimg."""
    return os.environ.get("MLFLOW_EXPERIMENT_NAME") or os.environ.get("GENIMG_EXPERIMENT") or DEFAULT_EXPERIMENT


def experiment_id(mlflow_client: Any) -> str:
    from mlflow.exceptions import MlflowException

    name = experiment_name()
    try:
        experiment = mlflow_client.get_experiment_by_name(name)
        if experiment is not None:
            return str(experiment.experiment_id)
        # With the default SQLite store, artifacts would land in ./mlruns of whatever folder the
        # command runs in; keep them beside the database in GENIMG_HOME instead.
        user_configured = bool(os.environ.get("MLFLOW_TRACKING_URI"))
        location = None if user_configured else (genimg_home() / "mlartifacts").as_uri()
        return str(
            mlflow_client.create_experiment(
                name, artifact_location=location, tags={tag_names.EXPERIMENT_KIND: tag_names.MODEL_DEVELOPMENT}
            )
        )
    except MlflowException as exc:
        # A server that answers but refuses (authentication, permissions) or fails: its message
        # names the request with the full URI, password included.
        raise GenimgError(
            f"looking up experiment {name!r} at the tracking server {redact_credentials(tracking_uri())} "
            f"failed: {first_line(str(exc.message), type(exc).__name__)}"
        ) from None


def flatten_params(prefix: str, values: Any, out: dict[str, str]) -> dict[str, str]:
    if isinstance(values, dict):
        for key, value in values.items():
            flatten_params(f"{prefix}.{key}" if prefix else str(key), value, out)
    else:
        out[prefix] = json.dumps(values) if isinstance(values, (list, tuple)) else str(values)
    return out


def lineage_tags(run_name: str) -> dict[str, str]:
    """What links a run to what launched it: its Ray run name (checkpoints live under it), and,
    when a retrain flow or a Ray Job started it, the Prefect flow-run id and the job's id."""
    found = {tag_names.RUN_NAME: run_name} if run_name else {}
    for tag, variable in ((tag_names.FLOW_RUN_ID, "GENIMG_FLOW_RUN_ID"), (tag_names.RAY_JOB, "GENIMG_RAY_JOB")):
        if os.environ.get(variable):
            found[tag] = os.environ[variable]
    return found


class TrainingRun:
    """One MLflow run; metrics are buffered and sent in batches (one call per flush)."""

    def __init__(self, run_name: str, tags: dict[str, str] | None = None, *, run_id: str | None = None) -> None:
        """A new run in the genimg experiment, or (with `run_id`) an existing run of any."""
        self.client = client(f"starting MLflow run {run_name!r}" if run_id is None else f"opening MLflow run {run_id}")
        if run_id is None:
            from mlflow.tracking.context.registry import resolve_tags

            # MLflow's own context tags (mlflow.user, mlflow.source.*, the git commit), which its
            # fluent API adds and a bare client does not.
            run = self.client.create_run(
                experiment_id(self.client),
                run_name=run_name,
                tags=resolve_tags({**lineage_tags(run_name), **(tags or {})}),
            )
            run_id = run.info.run_id
        self.run_id: str = run_id
        self.pending: list[Any] = []
        self.flushed_at = time.monotonic()

    @classmethod
    def existing(cls, run_id: str) -> TrainingRun:
        return cls("", run_id=run_id)

    def log_dataset(
        self, ref: str, location: str, records: int, record_shape: tuple[int, ...], context: str = "training"
    ) -> None:
        """The run's data as an MLflow dataset input (shown in the run's Datasets panel)."""
        from mlflow.entities import Dataset, DatasetInput, InputTag

        version = pinned_version(ref)
        source_type = location.split("://", 1)[0] if "://" in location else "local"
        profile = json.dumps({"num_records": records, "record_shape": list(record_shape)})
        dataset = Dataset(
            name=ref,
            digest=version or "unversioned",
            source_type=source_type,
            source=json.dumps({"uri": location}),
            profile=profile,
        )
        inputs = [DatasetInput(dataset, tags=[InputTag("mlflow.data.context", context)])]
        for attempt in range(3):
            try:
                self.client.log_inputs(self.run_id, datasets=inputs)
                return
            except Exception as exc:
                # The SQL store looks the dataset up and inserts it when missing; two runs that
                # log the same dataset at once (Tune trials) race there, and the loser's insert
                # breaks the unique key. Its retry finds the winner's row and links to it.
                if attempt == 2 or "UNIQUE constraint" not in str(exc) and "duplicate key" not in str(exc):
                    raise

    def log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        flat = flatten_params("", params, {})
        items = [Param(key, value[:6000]) for key, value in flat.items()]
        for start in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[start : start + 100])

    def add_metrics(self, step: int, metrics: dict[str, float], timestamp_ms: int) -> None:
        from mlflow.entities import Metric

        self.pending += [
            Metric(key, float(value), timestamp_ms, step) for key, value in metrics.items() if key != "step"
        ]
        if len(self.pending) >= MAX_BATCH or time.monotonic() - self.flushed_at > FLUSH_SECONDS:
            self.flush()

    def flush(self) -> None:
        self.flushed_at = time.monotonic()
        while self.pending:
            batch, self.pending = self.pending[:MAX_BATCH], self.pending[MAX_BATCH:]
            self.client.log_batch(self.run_id, metrics=batch)

    def set_tags(self, values: dict[str, str]) -> None:
        for key, value in values.items():
            self.client.set_tag(self.run_id, key, value)

    def log_bytes(self, data: bytes, artifact_path: str) -> None:
        directory, _, name = artifact_path.rpartition("/")
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / name
            path.write_bytes(data)
            self.client.log_artifact(self.run_id, str(path), directory or None)

    def log_image(self, png: bytes, key: str, step: int) -> None:
        """An image in MLflow's image series `key` at `step`: the run page's slider steps through them."""
        from PIL import Image

        self.client.log_image(self.run_id, Image.open(io.BytesIO(png)), key=key, step=step)

    def log_folder(self, folder: Path, artifact_path: str) -> None:
        self.client.log_artifacts(self.run_id, str(folder), artifact_path)

    def finish(self, status: str = "FINISHED", reason: str | None = None) -> None:
        """End the run; a FAILED or KILLED one says why (tag `genimg.error`)."""
        self.flush()
        if reason:
            self.client.set_tag(self.run_id, tag_names.ERROR, redact_credentials(reason)[:5000])
        self.client.set_terminated(self.run_id, status=status)

    @contextmanager
    def failed_on_error(self) -> Iterator[None]:
        """Ends the run FAILED with the error as its reason (KILLED when interrupted) if the
        block raises, then re-raises."""
        try:
            yield
        except BaseException as exc:
            interrupted = isinstance(exc, KeyboardInterrupt)
            reason = str(exc) if isinstance(exc, GenimgError) else f"{type(exc).__name__}: {exc}"
            self.finish("KILLED" if interrupted else "FAILED", reason=None if interrupted else reason)
            raise


@contextmanager
def fluent_tracking(doing: str = "connecting to it") -> Iterator[None]:
    """MLflow's fluent API (log_model needs it) pointed at genimg's tracking URI for the block
    only: mlflow.set_tracking_uri also exports MLFLOW_TRACKING_URI, which is put back."""
    import mlflow

    uri = tracking_uri()
    hide_run_links(uri)
    wait_for_tracking(uri, doing)
    saved_env = os.environ.get("MLFLOW_TRACKING_URI")
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(previous)
        if saved_env is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = saved_env
