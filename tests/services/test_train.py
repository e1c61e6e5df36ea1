"""The training service and the dataset handle: one decision of defaults for every entry point,
a raw source read once per command, the train split only."""

import json

import pytest
from typer.testing import CliRunner

import genimg
import genimg.data.handle as handle_module
from genimg.cli import app
from genimg.data.handle import resolve_dataset
from genimg.errors import ConfigError
from genimg.models import model_spec
from genimg.services.train import TrainOutcome, TrainRequest, training_sections
from genimg.training.config import gpu_defaults

runner = CliRunner()
TINY_VAE = {"model.width": 4, "model.latent_dim": 4}
TINY_EVAL = ["--set", "eval.extractor_steps=50", "--set", "eval.samples=40", "--set", "eval.nll_k=2"]


def count_reads(monkeypatch) -> list[str]:
    reads: list[str] = []
    real = handle_module.read_source

    def counting(source, *args, **kwargs):
        reads.append(source)
        return real(source, *args, **kwargs)

    monkeypatch.setattr(handle_module, "read_source", counting)
    return reads


@pytest.mark.parametrize(
    ("model", "shape", "expected"),
    [
        ("gan", (3, 64, 64), {"precision": "bf16", "channels_last": True}),
        ("vae", (3, 128, 96), {"precision": "bf16", "channels_last": True}),
        ("rvae", (20, 1, 64, 64), {"precision": "bf16", "channels_last": True}),
        ("gan", (3, 32, 32), {}),  # measured slower in bf16 below 64 px
        ("vae", (1, 16, 16), {}),
        ("gan-mlp", (3, 64, 64), {}),  # not convolutional
    ],
)
def test_gpu_defaults_are_decided_once_for_every_entry_point(model, shape, expected):
    assert gpu_defaults(model_spec(model).convolutional, shape) == expected
    sections = training_sections(TrainRequest(model, "builtin:digits", {"train": {"steps": 2}}, gpu=True), shape)
    assert {
        key: sections["train"][key] for key in ("precision", "channels_last") if key in sections["train"]
    } == expected
    explicit = training_sections(
        TrainRequest(model, "builtin:digits", {"train": {"precision": "fp32"}}, gpu=True), shape
    )
    assert explicit["train"]["precision"] == "fp32"  # a config's own choice wins over the default
    assert "precision" not in training_sections(TrainRequest(model, "builtin:digits"), shape)["train"]
    # Before the dataset is resolved (a request checked, or sent on as a Ray Job) nothing is added.
    assert "precision" not in training_sections(TrainRequest(model, "builtin:digits", gpu=True))["train"]


def test_a_raw_source_is_read_once_by_training_and_its_evaluation(monkeypatch):
    reads = count_reads(monkeypatch)
    args = [
        "train",
        "--model",
        "vae",
        "--dataset",
        "builtin:digits",
        "--workers",
        "0",
        "--steps",
        "3",
        *[item for key, value in TINY_VAE.items() for item in ("--set", f"{key}={value}")],
        *TINY_EVAL,
        "--json",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["evaluation"] and "error" not in payload["evaluation"], payload["evaluation"]
    assert payload["evaluation"]["split"] == "val"
    assert reads == ["builtin:digits"]


def test_a_store_dataset_is_resolved_without_reading_records(tmp_path, monkeypatch):
    monkeypatch.setenv("GENIMG_STORE", (tmp_path / "store").as_uri())
    ingested = genimg.ingest("builtin:digits", name="digits")
    reads = count_reads(monkeypatch)
    handle = resolve_dataset("digits", "images")
    assert reads == [] and handle.ref == f"digits@{ingested.version}"
    assert handle.counts == ingested.counts and handle.lineage() != handle_module.RAW_LINEAGE
    assert handle.load("val").data.shape[0] == ingested.counts["val"]


def test_the_python_api_trains_on_the_train_split_only():
    handle = resolve_dataset("builtin:digits")
    outcome = genimg.train(
        "vae", "builtin:digits", steps=2, workers=0, overrides={**TINY_VAE, "eval.at_end_of_training": False}
    )
    assert isinstance(outcome, TrainOutcome)
    assert outcome.records == handle.count(("train",)) < sum(handle.counts.values())
    assert outcome.dataset == handle.ref and outcome.evaluation is None
    assert outcome.as_dict()["metrics"]["step"] == 2


def test_bad_api_input_names_the_bad_item():
    with pytest.raises(ConfigError, match="model.nonsense"):
        genimg.train("vae", "builtin:digits", steps=2, workers=0, overrides={"model.nonsense": 1})
    with pytest.raises(ConfigError, match="latent_dim"):
        genimg.train("vae", "builtin:digits", steps=2, workers=0, overrides={"latent_dim": 1})


def test_an_in_process_run_logs_a_sample_grid_per_checkpoint_as_mlflow_s_image_series():
    """MLflow's image slider steps through them: key `samples`, one per checkpoint step."""
    from mlflow.tracking import MlflowClient

    from genimg.tracking.runs import tracking_uri

    args = ["train", "--model", "vae", "--dataset", "builtin:digits", "--workers", "0", "--steps", "4", "--json"]
    args += ["--set", "train.checkpoint_every=2", "--set", "eval.at_end_of_training=false"]
    args += [item for key, value in TINY_VAE.items() for item in ("--set", f"{key}={value}")]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    run_id = json.loads(result.stdout)["run_id"]
    images = [a.path for a in MlflowClient(tracking_uri()).list_artifacts(run_id, "images")]
    steps = sorted({int(path.split("+step+")[1].split("+")[0]) for path in images if path.endswith(".png")})
    assert steps == [2, 4] and all("/samples+step+" in path for path in images), images
