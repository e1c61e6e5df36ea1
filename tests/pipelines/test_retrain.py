"""The retrain flow on Prefect's test harness, training in process (workers: 0)."""

import json

import pytest
from typer.testing import CliRunner

from genimg.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def prefect_harness():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness():
        yield


def write_config(tmp_path, families):
    path = tmp_path / "retrain.yaml"
    path.write_text(json.dumps({
        "datasets": {"digits": "builtin:digits"},
        "families": families,
        "workers": 0,
        "evaluation": {"samples": 150, "seed": 0},
    }))
    return path


TINY_SET = {"gan": ["model.width=4", "model.latent_dim=8"], "vae": ["model.width=8", "model.latent_dim=8"]}


def test_retrain_ingests_trains_registers_and_promotes_and_a_rerun_reuses_the_data(prefect_harness, tmp_path, monkeypatch):
    monkeypatch.setenv("GENIMG_STORE", (tmp_path / "store").as_uri())
    config = write_config(tmp_path, [
        {"model": "gan", "dataset": "digits", "steps": 20, "set": TINY_SET["gan"] + ["eval.at_end_of_training=false"]},
        {"model": "vae", "dataset": "digits", "steps": 40, "set": TINY_SET["vae"] + ["eval.at_end_of_training=false"]},
        {"model": "rvae", "dataset": "digits", "steps": 2},  # sequences model on images: fails alone
    ])
    # The first run calls the flow itself, the second goes through the command line. (In this
    # order: Prefect's log handlers bind the streams of the first caller, and CliRunner closes
    # its streams after each command.)
    from pipelines.retrain import retrain

    first = retrain(str(config))
    assert first["flow_run_id"] and first["datasets"][0]["name"] == "digits" and not first["datasets"][0]["reused"]
    by_model = {m["model"]: m for m in first["models"]}
    assert by_model["rvae"]["error"] and "sequences" in by_model["rvae"]["error"]
    for model in ("gan", "vae"):
        outcome = by_model[model]
        assert outcome["error"] is None and outcome["name"] == f"genimg-digits-{model}" and outcome["version"] == 1
        assert outcome["promoted"] and outcome["reason"].startswith("first champion")
    assert "fid" in by_model["gan"]["metrics"] and "nll" in by_model["vae"]["metrics"]

    from mlflow.tracking import MlflowClient

    from genimg.tracking.runs import tracking_uri

    version = MlflowClient(tracking_uri()).get_model_version("genimg-digits-gan", "1")
    assert version.tags["genimg.flow_run_id"] == first["flow_run_id"]
    assert version.tags["genimg.dataset"] == f"digits@{first['datasets'][0]['version']}"

    rerun = runner.invoke(app, ["retrain", "--config", str(config), "--json"])
    assert rerun.exit_code == 0, (rerun.output[-3000:], rerun.exception)
    again = json.loads(rerun.stdout)
    assert again["datasets"][0]["reused"] and again["datasets"][0]["version"] == first["datasets"][0]["version"]
    second = {m["model"]: m for m in again["models"]}
    for model in ("gan", "vae"):
        assert second[model]["version"] == 2 and second[model]["reason"]  # the decision says why
    sample = runner.invoke(app, ["sample", "models:/genimg-digits-gan@champion", "-n", "4", "-o", str(tmp_path / "g.png")])
    assert sample.exit_code == 0 and (tmp_path / "g.png").is_file()


def test_a_bad_retrain_config_is_refused_before_prefect_starts(tmp_path):
    path = tmp_path / "retrain.yaml"
    path.write_text("datasets: {digits: builtin:digits}\nfamilies:\n  - {model: vae, dataset: mnist}\n")
    result = runner.invoke(app, ["retrain", "--config", str(path)])
    assert result.exit_code == 1 and "families[0].dataset 'mnist' is not in datasets" in result.stderr


def test_the_shipped_retrain_config_names_presets_that_resolve():
    from genimg.training.run import load_config_file, merge_sections, resolve_run_config
    from pipelines.retrain import load_retrain_config

    config = load_retrain_config()
    assert [plan.model for plan in config.families] == ["gan", "vae", "rvae"]
    for plan in config.families:
        resolve_run_config(plan.model, merge_sections(load_config_file(plan.config)))
