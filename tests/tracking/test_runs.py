"""MLflow runs as the driver writes them (SQLite under GENIMG_HOME by default)."""

import os

from mlflow.tracking import MlflowClient

from genimg.tracking.runs import TrainingRun, flatten_params, tracking_uri


def test_default_tracking_uri_is_sqlite_in_genimg_home(monkeypatch, tmp_path):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("GENIMG_HOME", str(tmp_path))
    assert tracking_uri() == f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert tracking_uri() == "http://127.0.0.1:5000"


def test_params_metrics_and_artifacts_land_in_one_run(monkeypatch, tmp_path):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    run = TrainingRun("unit", tags={"genimg.model": "vae"})
    run.log_params({"model": {"latent_dim": 8, "image_shape": [1, 16, 16]}, "train": {"lr": 0.001}})
    for step in range(1, 4):
        run.add_metrics(step * 10, {"loss": 1.0 / step, "step": float(step * 10)}, 1_000 * step)
    run.log_bytes(b"\x89PNG fake", "samples/step-00000010.png")
    run.finish()
    client = MlflowClient(tracking_uri())
    stored = client.get_run(run.run_id)
    assert stored.info.status == "FINISHED" and stored.data.tags["genimg.model"] == "vae"
    assert stored.data.params["model.image_shape"] == "[1, 16, 16]"
    history = client.get_metric_history(run.run_id, "loss")
    assert [m.step for m in history] == [10, 20, 30] and "step" not in stored.data.metrics
    assert [a.path for a in client.list_artifacts(run.run_id, "samples")] == ["samples/step-00000010.png"]
    assert stored.info.artifact_uri.startswith(f"file://{os.environ['GENIMG_HOME']}/mlartifacts/")
    # The experiment opens on its runs in MLflow's UI, not on the GenAI traces page.
    experiment = client.get_experiment(stored.info.experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"


def test_nested_params_flatten_with_dotted_keys():
    assert flatten_params("", {"a": {"b": 1, "c": [1, 2]}}, {}) == {"a.b": "1", "a.c": "[1, 2]"}
