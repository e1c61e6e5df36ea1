"""What the Python API and the services refuse before anything starts: option values a CLI
would never pass (wrong types, NaN, bogus modes), and class names that look like indices."""

import json
import math
from pathlib import Path

import pytest
from typer.testing import CliRunner

import genimg
from genimg.cli import app
from genimg.errors import GenimgError

runner = CliRunner()
TINY_GAN = {"model.width": 4, "model.latent_dim": 8, "eval.at_end_of_training": False}


def mlflow_runs():
    from mlflow.tracking import MlflowClient

    from genimg.tracking.runs import tracking_uri

    client = MlflowClient(tracking_uri())
    return [run for experiment in client.search_experiments() for run in client.search_runs([experiment.experiment_id])]


@pytest.mark.parametrize(
    "mode, min_delta, message",
    [
        ("bogus", 0.0, "mode must be min or max, got 'bogus'"),
        (None, -1.0, "min_delta must be a finite number ≥ 0, got -1.0"),
        (None, math.nan, "min_delta must be a finite number ≥ 0, got nan"),
        (None, "0.1", "min_delta must be a finite number ≥ 0, got '0.1'"),
    ],
)
def test_promote_refuses_bad_options_from_the_api_before_reading_the_registry(mode, min_delta, message):
    with pytest.raises(GenimgError, match=message.replace("(", r"\(").replace(")", r"\)")):
        genimg.promote("genimg-none-gan", metric="fid" if mode else None, mode=mode, min_delta=min_delta)
    result = runner.invoke(app, ["promote", "genimg-none-gan", "--min-delta", "nan"])
    assert result.exit_code == 1 and "min_delta must be a finite number ≥ 0, got nan" in result.stderr


@pytest.mark.parametrize("workers", ["0", -1, (2, 1), 1.5, True, (0, 2), [1, 2]])
def test_train_refuses_workers_of_the_wrong_type_before_any_run_or_ray(workers):
    import ray

    with pytest.raises(GenimgError, match="workers must be 0"):
        genimg.train("gan", "builtin:digits", steps=1, workers=workers, overrides=TINY_GAN)
    assert not ray.is_initialized() and mlflow_runs() == []


@pytest.mark.parametrize("cpus", [0, -2, 1.5])
def test_train_refuses_cpus_per_worker_below_one_before_any_run_or_ray(cpus):
    import ray

    from genimg.services.train import TrainRequest, train

    request = TrainRequest("gan", "builtin:digits", {"train": {"steps": 1}}, workers=1, cpus_per_worker=cpus)
    with pytest.raises(GenimgError, match=r"--cpus-per-worker must be a whole number ≥ 1"):
        train(request)
    result = runner.invoke(app, ["train", "-m", "gan", "-d", "builtin:digits", "--cpus-per-worker", "0"])
    assert result.exit_code == 1 and "--cpus-per-worker must be a whole number ≥ 1, got 0" in result.stderr
    assert not ray.is_initialized() and mlflow_runs() == []


def test_classes_by_name_win_over_indices_and_one_class_is_a_name_not_its_letters(tmp_path, digits):
    from PIL import Image

    for name, label in (("1", 0), ("2", 1), ("3", 2), ("cat", 3)):  # folders that look like indices
        folder = tmp_path / "data" / name
        folder.mkdir(parents=True)
        for index, image in enumerate(digits[label::10][:12]):
            Image.fromarray(image[0]).save(folder / f"{index}.png")
    run = genimg.train(
        "gan",
        tmp_path / "data",
        steps=1,
        workers=0,
        export_dir=tmp_path / "model",
        overrides={**TINY_GAN, "model.conditional": True},
    )
    assert run.checkpoint
    by_name = genimg.sample(tmp_path / "model", tmp_path / "two.png", n=4, classes="2")
    assert by_name.classes == ("2", "2", "2", "2")  # the folder "2", not index 2 (the folder "3")
    cat = genimg.sample(tmp_path / "model", tmp_path / "cat.png", n=2, classes="cat")
    assert cat.classes == ("cat", "cat")
    index = genimg.sample(tmp_path / "model", tmp_path / "index.png", n=2, classes=["0", "cat"])
    assert index.classes == ("1", "cat")  # "0" is no folder name: index 0, the folder "1"
    result = runner.invoke(
        app, ["sample", str(tmp_path / "model"), "-n", "2", "--class", "²", "-o", str(tmp_path / "x.png")]
    )
    assert result.exit_code == 1 and "unknown class '²'" in result.stderr, result.output
    evaluated = genimg.evaluate(Path(tmp_path / "model"), Path(tmp_path / "data"), samples=20, extractor_steps=20)
    assert json.loads(json.dumps(evaluated))["split"] == "test"  # paths are accepted where strings are


@pytest.mark.parametrize("workers", [0, 2])
def test_a_cuda_graph_this_run_cannot_record_is_refused_before_the_run_exists(workers):
    from genimg.errors import ConfigError

    with pytest.raises(ConfigError, match="train.cuda_graph: true needs a CUDA device"):
        genimg.train(
            "gan", "builtin:digits", steps=1, workers=workers, overrides={**TINY_GAN, "train.cuda_graph": True}
        )
    result = runner.invoke(
        app,
        [
            "train",
            "--model",
            "gan",
            "--dataset",
            "builtin:digits",
            "--workers",
            "0",
            "--steps",
            "1",
            "--set",
            "train.cuda_graph=true",
        ],
    )
    assert result.exit_code == 1 and len(result.stderr.strip().splitlines()) == 1, result.output
    assert mlflow_runs() == []


def test_train_takes_the_cli_flags_and_a_run_samples_loads_and_lists_from_python(tmp_path, monkeypatch):
    """batch_size and seed as `--batch-size`/`--seed`; sample without an output is a uint8 array;
    a run id or runs:/ID is a model to sample or load (from Python and the CLI); datasets() lists."""
    import numpy as np
    import torch

    monkeypatch.setenv("GENIMG_STORE", (tmp_path / "store").as_uri())
    data = genimg.ingest("builtin:digits", name="digits")
    tiny = {"model.width": 4, "model.latent_dim": 4, "eval.at_end_of_training": False}
    run = genimg.train("vae", "digits", steps=2, workers=0, batch_size=8, seed=7, overrides=tiny)
    params = mlflow_runs()[0].data.params
    assert params["train.batch_size"] == "8" and params["train.seed"] == "7", params
    images = genimg.sample(run.run_id, n=4, seed=1)
    assert isinstance(images, np.ndarray) and images.dtype == np.uint8 and images.shape == (4, 1, 16, 16)
    assert (genimg.sample(f"runs:/{run.run_id}", n=4, seed=1) == images).all()
    model = genimg.load_model(run.run_id)
    assert isinstance(model, torch.nn.Module) and not model.training
    assert [(v.name, v.version) for v in genimg.datasets()] == [("digits", data.version)]
    result = CliRunner().invoke(app, ["sample", f"runs:/{run.run_id}", "-n", "2", "-o", str(tmp_path / "s.png")])
    assert result.exit_code == 0 and (tmp_path / "s.png").stat().st_size > 0, result.output


def test_the_python_api_shows_its_progress_unless_told_not_to(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("GENIMG_STORE", (tmp_path / "store").as_uri())
    try:
        genimg.ingest("builtin:digits", name="digits")
        assert "genimg: publishing" in capsys.readouterr().err
        genimg.show_progress(False)
        genimg.ingest("builtin:moving-digits", name="moving")
        assert capsys.readouterr().err == ""
    finally:
        genimg.show_progress(True)
