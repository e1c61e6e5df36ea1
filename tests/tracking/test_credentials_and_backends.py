"""Credentials in a tracking URI are never shown nor sent to a Ray Job; MLflow's own settings
(a plain postgresql:// URI, MLFLOW_EXPERIMENT_NAME, its context tags) are honoured."""

import uuid

import pytest
from typer.testing import CliRunner

from genimg.cli import app

SECRET = "s3cret-Pa55"


def test_errors_never_print_the_password_of_a_tracking_uri(monkeypatch):
    from tests.conftest import free_port

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://alice:{SECRET}@127.0.0.1:{free_port()}")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    result = CliRunner().invoke(app, ["evaluate", "0" * 32])
    assert result.exit_code == 1
    assert SECRET not in result.output and "alice" not in result.output
    assert "http://***@127.0.0.1:" in result.stderr


def test_a_ray_job_gets_the_tracking_uri_without_its_credentials(monkeypatch):
    from genimg.distributed.jobs import RayJobsTarget, job_runtime_env

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"https://alice:{SECRET}@mlflow.internal:5000/base")
    env = job_runtime_env(RayJobsTarget("http://head:8265"), "genimg-run-1")["env_vars"]
    assert env["MLFLOW_TRACKING_URI"] == "https://mlflow.internal:5000/base"
    assert SECRET not in repr(env)


def test_redaction_covers_every_uri_in_a_text():
    from genimg.errors import redact_credentials, without_userinfo

    text = f"a http://u:{SECRET}@h:1/x and s3://k:{SECRET}@bucket/p, not mail@example.com"
    assert redact_credentials(text) == "a http://***@h:1/x and s3://***@bucket/p, not mail@example.com"
    assert without_userinfo("postgresql://postgres:pw@db:5432/mlflow") == "postgresql://db:5432/mlflow"


def test_mlflow_experiment_name_is_honoured_and_runs_carry_mlflow_context_tags(monkeypatch):
    from genimg.tracking.runs import TrainingRun, client

    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "team-experiment")
    run = TrainingRun("tagged", tags={"genimg.model": "vae"})
    run.finish()
    stored = client().get_run(run.run_id)
    assert client().get_experiment(stored.info.experiment_id).name == "team-experiment"
    assert stored.data.tags["mlflow.user"] and stored.data.tags["mlflow.source.type"] == "LOCAL"
    assert "mlflow.source.name" in stored.data.tags


@pytest.mark.slow
def test_a_plain_postgresql_tracking_uri_works(monkeypatch):
    """SQLAlchemy 2.1 reads postgresql:// as psycopg 3: the `postgres` extra installs it."""
    import psycopg

    database = f"genimg_uri_{uuid.uuid4().hex[:10]}"
    with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {database}")
    try:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", f"postgresql://postgres@127.0.0.1:5432/{database}")
        from genimg.tracking.runs import TrainingRun, client

        run = TrainingRun("on-postgres", tags={"genimg.model": "vae"})
        run.add_metrics(1, {"loss": 0.5}, 0)
        run.finish()
        assert client().get_run(run.run_id).data.metrics == {"loss": 0.5}
    finally:
        with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True) as admin:
            admin.execute(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{database}'")
            admin.execute(f"DROP DATABASE IF EXISTS {database}")
