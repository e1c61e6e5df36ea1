"""Bad input is refused before anything is created; non-finite values and diverging runs stop
with one line; a run's dataset is pinned to a version and a resume keeps to it."""

import json
import subprocess
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

from genimg.cli import app
from tests.test_cli import TINY_VAE

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args))


def mlflow_runs() -> list:
    from genimg.tracking.runs import client, experiment_name

    mlflow = client()
    experiment = mlflow.get_experiment_by_name(experiment_name())
    return [] if experiment is None else mlflow.search_runs([experiment.experiment_id])


def one_line_error(result, message: str) -> None:
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("error: ") and message in lines[-1], result.stderr
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--dataset", "no-such-dataset"], "dataset 'no-such-dataset' not found"),
        (["--dataset", "builtin:digits", "--set", "train.stepz=3"], "unknown config key train.stepz"),
        (["--dataset", "builtin:digits", "--set", "train.lr=abc"], "invalid value for train.lr"),
        (["--dataset", "builtin:digits", "--set", "model.image_shape=[1,8,8]"], "does not match the dataset"),
        (["--dataset", "builtin:digits", "--gpu"], "no CUDA device"),
    ],
)
def test_bad_input_with_workers_0_leaves_no_mlflow_run(args, message):
    result = invoke("train", "--model", "vae", "--workers", "0", "--steps", "2", *args)
    one_line_error(result, message)
    assert mlflow_runs() == []


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("train.lr=inf", "train.lr"),
        ("train.lr=nan", "train.lr"),
        ("model.beta=nan", "model.beta"),
        ("train.betas=[0.5,inf]", "train.betas[1]"),
        ("train.grad_clip=-inf", "train.grad_clip"),
    ],
)
def test_non_finite_config_values_are_refused_in_one_line(override, key):
    result = invoke("train", "--model", "vae", "--dataset", "builtin:digits", "--workers", "0", "--set", override)
    one_line_error(result, f"invalid value for {key}")
    assert "finite" in result.stderr


def test_non_finite_values_in_a_config_file_are_refused(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("train:\n  lr: .nan\n")
    one_line_error(
        invoke("train", "--model", "vae", "--dataset", "builtin:digits", "--config", str(config)),
        "invalid value for train.lr",
    )


@pytest.mark.parametrize(
    "command",
    [
        ["train", "--model", "vae", "--dataset", "builtin:digits", "--config"],
        ["tune", "--model", "vae", "--dataset", "builtin:digits", "--space"],
        ["retrain", "--config"],
    ],
)
def test_a_yaml_that_is_not_utf8_is_one_line(tmp_path, command):
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes("train:\n  steps: 3 # réglage\n".encode("latin-1"))
    one_line_error(invoke(*command, str(bad)), f"{bad}: not UTF-8 text")


def test_a_diverging_run_stops_and_its_mlflow_run_is_failed_with_the_reason():
    result = invoke(
        "train",
        "--model",
        "vae",
        "--dataset",
        "builtin:digits",
        *TINY_VAE,
        "--steps",
        "30",
        "--set",
        "train.lr=1e30",
        "--set",
        "train.log_every=5",
        "--run-name",
        "boom",
    )
    one_line_error(result, "training diverged at step")
    [run] = mlflow_runs()
    assert run.info.status == "FAILED"
    assert run.data.tags["genimg.error"].startswith("training diverged at step")


def test_evaluating_a_model_with_nan_weights_is_a_clear_error_not_a_crash(tmp_path):
    """A model whose weights are NaN (what a diverged run leaves) used to end in SIGSEGV inside
    FID's linear algebra. Run as the user would, in a process of its own."""
    import torch

    from genimg.models import build_model
    from genimg.models.base import save_model
    from tests.conftest import tiny_config

    model = build_model("vae", tiny_config("vae", (1, 16, 16)))
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.fill_(float("nan"))
    save_model(model, tmp_path / "nan-model")
    command = [
        sys.executable,
        "-m",
        "genimg.cli",
        "evaluate",
        str(tmp_path / "nan-model"),
        "--dataset",
        "builtin:digits",
        "--samples",
        "20",
        "--nll-k",
        "2",
        "--features",
        "classifier",
    ]
    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=300,
        env={**__import__("os").environ, "GENIMG_HOME": str(tmp_path / "home")},
    )
    assert done.returncode == 1, (done.returncode, done.stderr[-2000:])
    assert done.stderr.strip().splitlines()[-1].startswith("error: model vae generates non-finite values")


def test_fid_refuses_features_that_are_not_finite(tmp_path):
    import torch

    from genimg.errors import GenimgError
    from genimg.evaluation.config import EvalConfig
    from genimg.evaluation.evaluate import distances
    from genimg.evaluation.features import FeatureExtractor
    from genimg.store import open_store

    class Broken(torch.nn.Module):
        num_features = 4

        def forward(self, images):
            return torch.full((len(images), 4), float("nan"))

    extractor = FeatureExtractor("broken", Broken(), "0" * 64)
    images = torch.zeros(20, 1, 8, 8, dtype=torch.uint8)
    with pytest.raises(GenimgError, match="features of the real images are not finite"):
        distances(extractor, images, images.float(), EvalConfig(), open_store(tmp_path.as_uri()))


# --- the dataset a run trains on is pinned ------------------------------------------------------


def ingest_digits(name: str, records: slice) -> str:
    """A store dataset NAME of some of the builtin digits; returns its version."""
    from genimg.data import read_source
    from genimg.data.versions import ingest_dataset

    digits = read_source("builtin:digits")
    digits.data, digits.labels = digits.data[records], digits.labels[records]
    return ingest_dataset(digits, name).version


def test_a_run_records_its_dataset_version_and_register_keeps_it_after_a_reingest(tmp_path):
    first = ingest_digits("dg", slice(0, 600))
    trained = invoke(
        "train",
        "--model",
        "vae",
        "--dataset",
        "dg",
        *TINY_VAE,
        "--steps",
        "2",
        "--set",
        "eval.at_end_of_training=false",
        "--run-name",
        "pin",
        "--json",
    )
    assert trained.exit_code == 0, trained.output
    payload = json.loads(trained.stdout)
    assert payload["dataset"] == f"dg@{first}"
    [run] = mlflow_runs()
    assert run.data.tags["genimg.dataset"] == f"dg@{first}"
    [dataset_input] = run.inputs.dataset_inputs
    assert dataset_input.dataset.name == f"dg@{first}" and dataset_input.dataset.digest == first

    second = ingest_digits("dg", slice(0, 300))  # a newer version of the same name
    assert second != first
    from genimg.tracking.evaluations import resolve_target

    assert resolve_target(payload["run_id"]).dataset == f"dg@{first}"

    # --resume onto what `dg` now means is refused, naming both versions …
    refused = invoke(
        "train",
        "--model",
        "vae",
        "--dataset",
        "dg",
        *TINY_VAE,
        "--steps",
        "4",
        "--set",
        "eval.at_end_of_training=false",
        "--run-name",
        "pin",
        "--resume",
    )
    one_line_error(refused, f"cannot resume run pin on dg (now dg@{second}): it trained on dg@{first}")
    # … and the pinned version resumes.
    resumed = invoke(
        "train",
        "--model",
        "vae",
        "--dataset",
        f"dg@{first}",
        *TINY_VAE,
        "--steps",
        "4",
        "--set",
        "eval.at_end_of_training=false",
        "--run-name",
        "pin",
        "--resume",
        "--json",
    )
    assert resumed.exit_code == 0, resumed.output
    assert json.loads(resumed.stdout)["resumed_from_step"] == 2


def test_a_pinned_raw_source_is_accepted_back_and_a_changed_one_refused(tmp_path):
    from genimg.data.handle import resolve_dataset
    from genimg.errors import DataError
    from tests.conftest import write_idx

    digits = np.random.default_rng(0).integers(0, 255, (40, 8, 8), dtype=np.uint8)
    path = tmp_path / "few-idx3-ubyte"
    write_idx(path, digits, compress=False)
    pinned = resolve_dataset(str(path)).ref
    assert pinned.startswith(f"{path}@")
    assert resolve_dataset(pinned).ref == pinned
    write_idx(path, digits[:30], compress=False)
    with pytest.raises(DataError, match="content changed since"):
        resolve_dataset(pinned)


def test_resume_of_a_run_that_never_existed_says_it_starts_fresh():
    result = invoke(
        "train",
        "--model",
        "vae",
        "--dataset",
        "builtin:digits",
        *TINY_VAE,
        "--steps",
        "2",
        "--set",
        "eval.at_end_of_training=false",
        "--run-name",
        "NEVER-EXISTED",
        "--resume",
    )
    assert result.exit_code == 0, result.output
    assert "run NEVER-EXISTED has no checkpoints" in result.stderr and "starting it fresh" in result.stderr
