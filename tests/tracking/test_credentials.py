"""A tracking URI's password is never shown: an unreachable server or database is one line
(credentials redacted, after a bounded wait that genimg announces), and MLflow's own "View run …
at: <URI>" lines are not printed, in this process or in a Ray worker's log."""

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from genimg.cli import app
from tests.conftest import STARTS_RAY, free_port, wait_until_healthy
from tests.test_cli import TINY_EVAL

SECRET = "S3cretPW"
runner = CliRunner()
TINY_TRAIN = [
    "--model",
    "vae",
    "--dataset",
    "builtin:digits",
    "--steps",
    "2",
    "--batch-size",
    "16",
    "--set",
    "model.width=4",
    "--set",
    "model.latent_dim=4",
    *TINY_EVAL,
]


def one_line_without_secret(result, *expected: str) -> str:
    """The command failed with one `error:` line holding `expected`, and no secret anywhere."""
    assert result.exit_code == 1, (result.output, result.exception)
    assert SECRET not in result.output and "alice" not in result.output, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr
    assert all(text in errors[0] for text in expected), errors[0]
    return errors[0]


@pytest.fixture
def model_folder(tmp_path):
    from genimg.models import build_model
    from genimg.models.base import save_model
    from tests.conftest import tiny_config

    return save_model(build_model("vae", tiny_config("vae", (1, 16, 16))), tmp_path / "model")


@pytest.mark.parametrize(
    "command",
    [
        ["train", "--workers", "0", *TINY_TRAIN],
        ["evaluate", "MODEL", "--dataset", "builtin:digits"],
        ["evaluate", "0" * 32],
        ["register", "0" * 32],
        ["promote", "genimg-digits-vae"],
        ["sample", "models:/genimg-digits-vae@champion", "-n", "2", "-o", "GRID"],
    ],
    ids=["train", "evaluate-folder", "evaluate-run", "register", "promote", "sample"],
)
def test_an_unreachable_tracking_server_is_one_line_without_its_password(command, model_folder, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://alice:{SECRET}@127.0.0.1:{free_port()}")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    paths = {"MODEL": str(model_folder), "GRID": str(model_folder.parent / "grid.png")}
    result = runner.invoke(app, [paths.get(arg, arg) for arg in command])
    one_line_without_secret(result, "cannot reach the tracking server at http://***@127.0.0.1:", "Connection refused")


@pytest.mark.timeout(60)  # MLflow's SQL store alone retried a closed port for 100 s
def test_an_unreachable_tracking_database_is_one_line_after_a_bounded_wait(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"postgresql://alice:{SECRET}@127.0.0.1:{free_port()}/mlflow")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    result = runner.invoke(app, ["train", "--workers", "0", *TINY_TRAIN])
    line = one_line_without_secret(result, "cannot reach the tracking server at postgresql://***@127.0.0.1:")
    assert "Connection refused" in line
    assert "genimg: waiting for the tracking server at postgresql://***@127.0.0.1:" in result.stderr


def test_genimg_says_what_it_waits_for_while_a_tracking_server_is_unreachable(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://alice:{SECRET}@127.0.0.1:{free_port()}")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    result = runner.invoke(app, ["evaluate", "0" * 32])
    one_line_without_secret(result, "cannot reach the tracking server at http://***@127.0.0.1:")
    waiting = [line for line in result.stderr.splitlines() if line.startswith("genimg: waiting for")]
    assert waiting and "http://***@127.0.0.1:" in waiting[0] and "up to 1.0 s" in waiting[0], result.stderr


@pytest.fixture
def ray_logs(monkeypatch):
    """A local Ray started by the command keeps its session (logs included) here."""
    folder = Path(tempfile.mkdtemp(prefix="rc-", dir="/tmp"))  # short: Ray's socket paths are bounded
    monkeypatch.setenv("RAY_TMPDIR", str(folder))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def files_holding(folder: Path, text: str) -> list[str]:
    return [str(path) for path in folder.rglob("*") if path.is_file() and text.encode() in path.read_bytes()]


@STARTS_RAY
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_on_ray_an_unreachable_tracking_server_is_one_line_and_stays_out_of_ray_logs(ray_logs, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://alice:{SECRET}@127.0.0.1:{free_port()}")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    result = runner.invoke(app, ["train", "--workers", "1", *TINY_TRAIN])
    one_line_without_secret(result, "cannot reach the tracking server at http://***@127.0.0.1:")
    assert files_holding(ray_logs, SECRET) == []


@pytest.fixture(scope="module")
def mlflow_server_with_credentials(tmp_path_factory):
    """A real `mlflow server` (SQLite, local artifacts); its URI carries a user and password,
    which a server without authentication ignores, as MLflow's client sends them along."""
    tmp_path = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    log_path = tmp_path / "mlflow-server.log"
    with open(log_path, "w") as log:
        server = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "mlflow"),
                "server",
                "--backend-store-uri",
                f"sqlite:///{tmp_path / 'server.db'}",
                "--artifacts-destination",
                str(tmp_path / "artifacts"),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                "1",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
        )
    try:
        wait_until_healthy(f"http://127.0.0.1:{port}/health", server, "mlflow server", log_path=log_path)
        yield f"http://alice:{SECRET}@127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(timeout=30)


def tracked_text(uri: str) -> str:
    """Every param and tag of every run and model version on the server."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    tracked = []
    for run in client.search_runs([e.experiment_id for e in client.search_experiments()]):
        tracked += [*run.data.params.items(), *run.data.tags.items()]
    for version in client.search_model_versions():
        tracked += list(version.tags.items())
    return json.dumps(tracked)


@pytest.mark.slow
def test_train_evaluate_and_register_print_no_mlflow_link_with_the_password(
    mlflow_server_with_credentials, monkeypatch
):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server_with_credentials)
    monkeypatch.delenv("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", raising=False)
    trained = runner.invoke(
        app, ["train", "--workers", "0", *TINY_TRAIN, "--set", "eval.at_end_of_training=false", "--json"]
    )
    assert trained.exit_code == 0, (trained.output, trained.exception)
    run_id = json.loads(trained.stdout)["run_id"]
    evaluated = runner.invoke(app, ["evaluate", run_id, "--samples", "20", "--nll-k", "2", "--extractor-steps", "5"])
    registered = runner.invoke(app, ["register", run_id])
    assert evaluated.exit_code == 0 and registered.exit_code == 0, (evaluated.output, registered.output)
    for result in (trained, evaluated, registered):
        assert SECRET not in result.output and "View run" not in result.output, result.output
    assert SECRET not in tracked_text(mlflow_server_with_credentials)


@STARTS_RAY
@pytest.mark.slow
@pytest.mark.timeout(600)
def test_tune_trials_on_ray_print_no_mlflow_link_with_the_password(
    mlflow_server_with_credentials, ray_logs, tmp_path, monkeypatch
):
    monkeypatch.setenv("GENIMG_STORE", (tmp_path / "store").as_uri())
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server_with_credentials)
    monkeypatch.delenv("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", raising=False)
    space = tmp_path / "space.yaml"
    space.write_text("metric: val_nll_bound\nmode: min\nspace:\n  train.lr: {grid: [0.001]}\n")
    result = runner.invoke(
        app,
        [
            "tune",
            "--model",
            "vae",
            "--dataset",
            "builtin:digits",
            "--space",
            str(space),
            "--trials",
            "1",
            "--steps",
            "2",
            "--name",
            "credentials",
            "--set",
            "model.width=4",
            "--set",
            "train.batch_size=16",
            *TINY_EVAL,
        ],
    )
    assert result.exit_code == 0, (result.output, result.exception)
    assert SECRET not in result.output and "View run" not in result.output
    assert files_holding(ray_logs, SECRET) == []
    assert SECRET not in tracked_text(mlflow_server_with_credentials)
