"""Class-conditional models end to end: train on a labelled folder, evaluate (class consistency),
register, promote, sample a class by name from the registry and through the pyfunc."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from genimg.cli import app

runner = CliRunner()
pytestmark = pytest.mark.slow


def cli(*args):
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, (result.output, result.exception)
    return json.loads(result.stdout) if "--json" in args else result


@pytest.fixture
def two_classes(tmp_path, monkeypatch):
    """`pets`: dark 'cat' images and bright 'dog' images, 16×16 RGB, in class folders."""
    rng = np.random.default_rng(0)
    for label, level in (("cat", 40), ("dog", 215)):
        (tmp_path / "pets" / label).mkdir(parents=True)
        for i in range(48):
            pixels = np.clip(level + rng.integers(-25, 25, (16, 16, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(tmp_path / "pets" / label / f"{i}.png")
    monkeypatch.setenv("GENIMG_STORE", (tmp_path / "store").as_uri())
    cli("ingest", str(tmp_path / "pets"), "--name", "pets")
    return tmp_path


def test_a_conditional_gan_resnet_from_training_to_a_sampled_class(two_classes):
    tmp_path = two_classes
    trained = cli(
        "train",
        "--model",
        "gan-resnet",
        "--dataset",
        "pets",
        "--workers",
        "0",
        "--steps",
        "20",
        "--batch-size",
        "16",
        "--set",
        "model.conditional=true",
        "--set",
        "model.width=2",
        "--set",
        "model.latent_dim=16",
        "--set",
        "eval.at_end_of_training=false",
        "--json",
    )
    run_id = trained["run_id"]
    evaluated = cli("evaluate", run_id, "--samples", "40", "--extractor-steps", "100", "--json")
    assert "class_consistency" in evaluated["metrics"] and "class_consistency_cat" in evaluated["metrics"]
    registered = cli("register", run_id, "--json")
    assert registered["name"] == "genimg-pets-gan-resnet"
    cli("promote", "genimg-pets-gan-resnet", "--json")
    sampled = cli(
        "sample",
        "models:/genimg-pets-gan-resnet@champion",
        "--class",
        "cat",
        "-n",
        "4",
        "-o",
        str(tmp_path / "cats.png"),
        "--json",
    )
    assert sampled["classes"] == ["cat"] * 4 and (tmp_path / "cats.png").is_file()
    mixed = cli(
        "sample",
        "models:/genimg-pets-gan-resnet@champion",
        "--class",
        "cat",
        "--class",
        "1",
        "-n",
        "4",
        "-o",
        str(tmp_path / "both.png"),
        "--json",
    )
    assert mixed["classes"] == ["cat", "cat", "dog", "dog"]
    unknown = runner.invoke(
        app, ["sample", "models:/genimg-pets-gan-resnet@champion", "--class", "horse", "-o", str(tmp_path / "x.png")]
    )
    assert unknown.exit_code == 1 and "unknown class 'horse'" in unknown.stderr and "cat, dog" in unknown.stderr

    # The registered pyfunc takes class_labels (names or indices), in a process of its own.
    from genimg.tracking.runs import tracking_uri

    code = (
        "import mlflow, numpy as np; m = mlflow.pyfunc.load_model('models:/genimg-pets-gan-resnet@champion'); "
        "a = m.predict({'num_samples': 3, 'seed': 1, 'class_labels': 'dog'}); "
        "b = m.predict({'num_samples': 3, 'seed': 1, 'class_labels': '1,1,1'}); "
        "print(a.shape, bool((a == b).all()))"
    )
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "MLFLOW_TRACKING_URI": tracking_uri()}
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300
    )
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    assert loaded.stdout.strip().splitlines()[-1] == "(3, 3, 16, 16) True"


def test_an_unlabelled_dataset_is_refused_for_a_conditional_model(tmp_path, monkeypatch):
    result = runner.invoke(
        app,
        [
            "train",
            "--model",
            "gan",
            "--dataset",
            "builtin:moving-digits",
            "--workers",
            "0",
            "--set",
            "model.conditional=true",
        ],
    )
    assert result.exit_code == 1
    (tmp_path / "flat").mkdir()
    for i in range(12):
        Image.fromarray(np.full((16, 16), i * 20, np.uint8)).save(tmp_path / "flat" / f"{i}.png")
    result = runner.invoke(
        app,
        [
            "train",
            "--model",
            "gan",
            "--dataset",
            str(tmp_path / "flat"),
            "--workers",
            "0",
            "--set",
            "model.conditional=true",
            "--steps",
            "1",
        ],
    )
    assert result.exit_code == 1
    assert "model.conditional=true needs a labelled dataset" in result.stderr and "has no labels" in result.stderr


@pytest.mark.parametrize(
    ("name", "options", "steps"),
    [
        ("gan", ["--set", "model.width=8", "--set", "model.latent_dim=16", "--set", "train.lr=0.001"], 300),
        ("vae", ["--set", "model.width=8", "--set", "model.latent_dim=4", "--set", "model.likelihood=gaussian"], 300),
    ],
)
def test_a_briefly_trained_conditional_model_draws_classes_the_classifier_recovers(two_classes, name, options, steps):
    """Two very different classes (dark cats, bright dogs): the dataset's classifier labels the
    model's samples of each class as that class far more often than chance (0.5)."""
    trained = cli(
        "train",
        "--model",
        name,
        "--dataset",
        "pets",
        "--workers",
        "0",
        "--steps",
        str(steps),
        "--batch-size",
        "16",
        "--set",
        "model.conditional=true",
        *options,
        "--set",
        "eval.at_end_of_training=false",
        "--json",
    )
    evaluated = cli(
        "evaluate", trained["run_id"], "--samples", "100", "--nll-k", "2", "--extractor-steps", "100", "--json"
    )
    metrics = evaluated["metrics"]
    assert metrics["class_consistency"] >= 0.8, metrics
    assert metrics["class_consistency_cat"] >= 0.6 and metrics["class_consistency_dog"] >= 0.6, metrics
