"""Team mode: an `mlflow server` backed by this machine's PostgreSQL (a database of the test's
own) with artifacts in S3 (the moto server), used only through MLFLOW_TRACKING_URI=http://…
Slow: marked, still run by make test."""

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from typer.testing import CliRunner

from genimg.cli import app
from tests.conftest import S3_CREDENTIALS, STARTS_RAY, free_port, wait_until_healthy

pytestmark = [pytest.mark.slow, STARTS_RAY, pytest.mark.timeout(600)]
runner = CliRunner()
POSTGRES = "postgresql://postgres@127.0.0.1:5432"  # the plain scheme (psycopg 3)


def postgres(statement):
    import psycopg2

    connection = psycopg2.connect("postgresql://postgres@127.0.0.1:5432/postgres")
    connection.autocommit = True
    try:
        with connection.cursor() as cursor:
            cursor.execute(statement)
    finally:
        connection.close()


@pytest.fixture
def mlflow_server(s3_env, tmp_path):
    database = f"genimg_test_{uuid.uuid4().hex[:10]}"
    postgres(f"CREATE DATABASE {database}")
    port = free_port()
    env = {**os.environ, **S3_CREDENTIALS, "MLFLOW_S3_ENDPOINT_URL": os.environ["AWS_ENDPOINT_URL_S3"]}
    log = open(tmp_path / "mlflow-server.log", "w")
    server = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "mlflow"),
            "server",
            "--backend-store-uri",
            f"{POSTGRES}/{database}",
            "--artifacts-destination",
            f"s3://{s3_env}/mlflow",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=tmp_path,
    )
    uri = f"http://127.0.0.1:{port}"
    wait_until_healthy(f"{uri}/health", server, "mlflow server", log_path=tmp_path / "mlflow-server.log")
    try:
        yield uri, s3_env
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()
        postgres(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{database}'")
        postgres(f"DROP DATABASE IF EXISTS {database}")


def cli(*args):
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, (result.output, result.exception)
    return result


def test_train_evaluate_register_promote_and_load_through_an_mlflow_server(mlflow_server, monkeypatch, tmp_path):
    uri, bucket = mlflow_server
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("GENIMG_STORE", f"s3://{bucket}/store")
    outputs = [cli("ingest", "builtin:digits", "--name", "digits", "--json").stdout]
    trained = cli(
        "train",
        "--model",
        "vae",
        "--dataset",
        "digits",
        "--workers",
        "0",
        "--steps",
        "60",
        "--set",
        "model.width=8",
        "--set",
        "eval.samples=60",
        "--set",
        "eval.nll_k=4",
        "--json",
    )
    run_id = json.loads(trained.stdout)["run_id"]
    evaluated = cli("evaluate", run_id, "--samples", "100", "--nll-k", "5", "--json")
    registered = cli("register", run_id, "--json")
    promoted = cli("promote", "genimg-digits-vae", "--json")
    outputs += [trained.stdout, trained.stderr, evaluated.stdout, registered.stdout, promoted.stdout]
    assert json.loads(promoted.stdout)["promoted"]

    # The champion loads by alias in a fresh process that knows only the server's address:
    # artifacts come through the server (no S3 credentials on this side).
    code = (
        "import mlflow; m = mlflow.pyfunc.load_model('models:/genimg-digits-vae@champion'); "
        "print(m.predict({'num_samples': 2, 'seed': 0}).shape)"
    )
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "MLFLOW_TRACKING_URI": uri}
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300
    )
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    assert loaded.stdout.strip().splitlines()[-1] == "(2, 1, 16, 16)"

    import boto3

    keys = [o["Key"] for o in boto3.client("s3").list_objects_v2(Bucket=bucket, Prefix="mlflow/")["Contents"]]
    assert any(k.endswith("model.safetensors") for k in keys) and any(k.endswith("report.md") for k in keys)

    # No credentials anywhere in what was tracked or printed.
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    secrets = [S3_CREDENTIALS["AWS_SECRET_ACCESS_KEY"], S3_CREDENTIALS["AWS_ACCESS_KEY_ID"]]
    tracked = []
    for run in client.search_runs([e.experiment_id for e in client.search_experiments()]):
        tracked += [*run.data.params.items(), *run.data.tags.items()]
    for version in client.search_model_versions("name = 'genimg-digits-vae'"):
        tracked += list(version.tags.items())
    text = json.dumps(tracked) + "".join(outputs)
    assert not [secret for secret in secrets if secret in text]
