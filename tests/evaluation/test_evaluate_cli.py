"""`genimg evaluate` on runs, registry URIs and folders, and the evaluation at the end of train."""

import json

import pytest
from typer.testing import CliRunner

from genimg.cli import app

runner = CliRunner()
TINY_VAE = [
    "--model",
    "vae",
    "--workers",
    "0",
    "--set",
    "model.width=4",
    "--set",
    "model.latent_dim=4",
    "--batch-size",
    "16",
    "--set",
    "eval.extractor_steps=100",
    "--set",
    "eval.samples=40",
    "--set",
    "eval.nll_k=4",
]


def cli(*args):
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, (result.output, result.exception)
    return json.loads(result.stdout) if "--json" in args else result


def mlflow_client():
    from mlflow.tracking import MlflowClient

    from genimg.tracking.runs import tracking_uri

    return MlflowClient(tracking_uri())


@pytest.fixture
def trained_run(tmp_path):
    cli("ingest", "builtin:digits", "--name", "digits")
    return cli(
        "train",
        *TINY_VAE,
        "--dataset",
        "digits",
        "--steps",
        "30",
        "--run-name",
        "small",
        "-o",
        str(tmp_path / "export"),
        "--json",
    )


def test_train_evaluates_on_the_validation_split_and_logs_to_its_run(trained_run):
    evaluation = trained_run["evaluation"]
    assert evaluation["split"] == "val" and evaluation["dataset"].startswith("digits@")
    assert evaluation["num_samples"] == 40 and evaluation["settings"]["nll_k"] == 4
    run = mlflow_client().get_run(trained_run["run_id"])
    assert {"val/fid", "val/nll", "val/precision"} <= set(run.data.metrics)
    assert run.data.tags["genimg.eval.val.features_sha256"] == evaluation["features"]["weights_sha256"]
    artifacts = [
        a.path
        for a in mlflow_client().list_artifacts(
            trained_run["run_id"], evaluation["artifacts"].rsplit("/artifacts/", 1)[1]
        )
    ]
    assert any(path.endswith("report.md") for path in artifacts) and any(
        path.endswith("loss_curves.png") for path in artifacts
    )


def test_evaluate_a_run_by_id_on_its_test_split(trained_run, tmp_path):
    payload = cli(
        "evaluate",
        trained_run["run_id"],
        "--samples",
        "60",
        "--nll-k",
        "5",
        "--seed",
        "3",
        "--out",
        str(tmp_path / "report"),
        "--json",
    )
    assert payload["dataset"] == trained_run["evaluation"]["dataset"]  # the run's own dataset
    assert payload["split"] == "test" and payload["seed"] == 3 and payload["num_samples"] == 60
    assert {
        "fid",
        "fid_std",
        "kid_mean",
        "kid_std",
        "precision",
        "precision_se",
        "recall",
        "recall_se",
        "density",
        "density_se",
        "coverage",
        "coverage_se",
        "nll",
        "nll_se",
        "bits_per_dim",
        "bits_per_dim_se",
    } == set(payload["metrics"])
    assert payload["reliability"]["fid"] == {
        "reliable": False,
        "n_real": payload["num_real"],
        "n_generated": 60,
        "floor": 2000,
        "spread": payload["metrics"]["fid_std"],
        "reason": payload["reliability"]["fid"]["reason"],
    }
    assert payload["reliability"]["nll"]["reliable"] and payload["reliability"]["nll"]["floor"] is None
    assert payload["features"]["name"] == "classifier" and "note" in payload["features"]
    assert payload["run_id"] == trained_run["run_id"]
    assert {p.name for p in (tmp_path / "report").iterdir()} >= {
        "report.md",
        "report.html",
        "samples.png",
        "loss_curves.png",
        "metrics.json",
    }
    report = (tmp_path / "report" / "report.md").read_text()
    fid_row = next(line for line in report.splitlines() if line.startswith("| fid |"))
    assert "UNRELIABLE: below the floor of 2000" in fid_row and "60 generated" in fid_row
    assert "UNRELIABLE" not in next(line for line in report.splitlines() if line.startswith("| nll |"))
    metrics = mlflow_client().get_run(trained_run["run_id"]).data.metrics
    assert metrics["test/fid"] == pytest.approx(payload["metrics"]["fid"])
    again = cli("evaluate", trained_run["run_id"], "--samples", "60", "--nll-k", "5", "--seed", "3", "--json")
    # The same key (weights, dataset version, split, settings): the recorded result, not a new one.
    assert again["reused"] is True and again["key"] == payload["key"] and not payload["reused"]
    assert again["metrics"] == pytest.approx(payload["metrics"]) and again["reliability"] == payload["reliability"]
    human = cli("evaluate", trained_run["run_id"], "--samples", "60", "--nll-k", "5")
    assert "note: Inception weights unavailable" in human.stdout
    fid_line = next(line for line in human.stdout.splitlines() if line.split()[0] == "fid")
    assert "±" in fid_line and "real /" in fid_line and "UNRELIABLE: below the floor of 2000" in fid_line


def test_evaluate_registry_uris_and_folders_in_new_evaluation_runs(trained_run, tmp_path):
    client = mlflow_client()
    cli("evaluate", trained_run["run_id"], "--samples", "50", "--nll-k", "3", "--json")
    version = cli("register", trained_run["run_id"], "--json")["version"]
    client.set_registered_model_alias("genimg-digits-vae", "champion", str(version))
    # The version, its alias and the exported folder hold the run's final weights: with the same
    # settings, the run's recorded evaluation is theirs.
    for target in (
        f"models:/genimg-digits-vae/{version}",
        "models:/genimg-digits-vae@champion",
        str(tmp_path / "export"),
    ):
        same = cli("evaluate", target, "--dataset", "digits", "--samples", "50", "--nll-k", "3", "--json")
        assert same["reused"] and same["run_id"] == trained_run["run_id"]
    by_version = cli("evaluate", f"models:/genimg-digits-vae/{version}", "--samples", "40", "--nll-k", "3", "--json")
    by_alias = cli("evaluate", "models:/genimg-digits-vae@champion", "--samples", "40", "--nll-k", "3", "--json")
    assert not by_version["reused"] and by_alias["reused"] and by_version["metrics"] == by_alias["metrics"]
    assert by_version["run_id"] != trained_run["run_id"] and by_alias["run_id"] == by_version["run_id"]
    tags = client.get_run(by_version["run_id"]).data.tags
    assert tags["genimg.kind"] == "evaluation" and tags["genimg.model_version"] == f"genimg-digits-vae/{version}"
    folder = cli(
        "evaluate",
        str(tmp_path / "export"),
        "--dataset",
        "digits",
        "--samples",
        "40",
        "--nll-k",
        "3",
        "--out",
        str(tmp_path / "folder-report"),
        "--json",
    )  # --out: computed again, for its files
    assert not folder["reused"] and folder["metrics"] == by_version["metrics"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nothing-here"], "'nothing-here' is not an MLflow run id, a models:/ URI or a model folder"),
        (["0" * 32], "no MLflow run 00000000000000000000000000000000"),
        (["models:/genimg-none-vae/1"], "models:/genimg-none-vae/1: not found in the registry"),
        (["models:/bad/uri/x"], "invalid model URI"),
    ],
)
def test_bad_targets_get_a_one_line_reason(args, message):
    result = runner.invoke(app, ["evaluate", *args])
    assert result.exit_code == 1 and message in result.stderr, result.output


def test_a_folder_without_a_dataset_and_a_bad_split_are_refused(trained_run, tmp_path):
    result = runner.invoke(app, ["evaluate", str(tmp_path / "export")])
    assert result.exit_code == 1 and "give --dataset" in result.stderr
    result = runner.invoke(app, ["evaluate", trained_run["run_id"], "--split", "holdout"])
    assert result.exit_code == 1 and "--split must be train, val or test" in result.stderr
    result = runner.invoke(app, ["evaluate", trained_run["run_id"], "--samples", "0"])
    assert result.exit_code == 1 and "eval.samples must be ≥ 1" in result.stderr


def test_evaluation_can_be_turned_off_and_its_failure_does_not_lose_the_run(tmp_path, digits):
    from PIL import Image

    (tmp_path / "few").mkdir()
    for index in range(4):  # too few for a validation split
        Image.fromarray(digits[index, 0]).save(tmp_path / "few" / f"{index}.png")
    payload = cli("train", *TINY_VAE, "--dataset", str(tmp_path / "few"), "--steps", "2", "--json")
    assert payload["metrics"]["step"] == 2 and payload["checkpoint"]
    assert "evaluation needs ≥ 2" in payload["evaluation"]["error"]

    off = cli(
        "train",
        *TINY_VAE,
        "--dataset",
        "builtin:digits",
        "--steps",
        "2",
        "--set",
        "eval.at_end_of_training=false",
        "--json",
    )
    assert off["evaluation"] is None
    result = runner.invoke(
        app, ["train", *TINY_VAE, "--dataset", "builtin:digits", "--steps", "2", "--set", "eval.context_frames=0"]
    )
    assert result.exit_code == 1 and "eval.context_frames must be ≥ 1" in result.stderr  # checked before training
