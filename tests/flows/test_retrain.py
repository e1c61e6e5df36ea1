"""The retrain flow on Prefect's test harness, training in process (workers: 0)."""

import json

import pytest
from typer.testing import CliRunner

from genimg.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def prefect_harness():
    from prefect.logging.configuration import setup_logging
    from prefect.testing.utilities import prefect_test_harness

    # Rebind Prefect's console handlers to this session's streams: a command run earlier through
    # a CliRunner may have imported Prefect while stderr was its (since closed) stream.
    setup_logging(incremental=False)
    with prefect_test_harness():
        yield


def write_config(tmp_path, families, **extra):
    path = tmp_path / "retrain.yaml"
    path.write_text(
        json.dumps(
            {
                "datasets": {"digits": "builtin:digits"},
                "families": families,
                "workers": 0,
                "evaluation": {"samples": 150, "seed": 0, "extractor_steps": 200},
                **extra,
            }
        )
    )
    return path


TINY_SET = {"gan": ["model.width=4", "model.latent_dim=8"], "vae": ["model.width=8", "model.latent_dim=8"]}


@pytest.mark.slow
def test_retrain_ingests_trains_registers_and_promotes_and_a_rerun_reuses_the_data(
    prefect_harness, tmp_path, monkeypatch
):
    monkeypatch.setenv("GENIMG_STORE", (tmp_path / "store").as_uri())
    config = write_config(
        tmp_path,
        [
            {
                "model": "gan",
                "dataset": "digits",
                "steps": 20,
                "set": TINY_SET["gan"] + ["eval.at_end_of_training=false"],
            },
            {
                "model": "vae",
                "dataset": "digits",
                "steps": 40,
                "set": TINY_SET["vae"] + ["eval.at_end_of_training=false"],
            },
            {"model": "rvae", "dataset": "digits", "steps": 2},  # sequences model on images: fails alone
        ],
    )
    # The first run calls the flow itself, the second goes through the command line. (In this
    # order: Prefect's log handlers bind the streams of the first caller, and CliRunner closes
    # its streams after each command.)
    from genimg.flows.retrain import retrain

    first = retrain(str(config))
    assert first["flow_run_id"] and first["datasets"][0]["name"] == "digits" and not first["datasets"][0]["reused"]
    by_model = {m["model"]: m for m in first["models"]}
    assert by_model["rvae"]["error"] and "sequences" in by_model["rvae"]["error"]
    for model in ("gan", "vae"):
        outcome = by_model[model]
        assert outcome["error"] is None and outcome["name"] == f"genimg-digits-{model}" and outcome["version"] == 1
        assert outcome["promoted"] and outcome["reason"].startswith("first champion")
    assert "fid" in by_model["gan"]["metrics"] and "nll" in by_model["vae"]["metrics"]
    assert first["dataset"] == first["datasets"][0]
    # The flow run's summary artifact links to each run and model version.
    from prefect.artifacts import Artifact

    summary = Artifact.get("retrain-summary")
    assert summary is not None and str(summary.flow_run_id) == first["flow_run_id"]
    assert by_model["gan"]["run_id"] in summary.data and "models:/genimg-digits-vae/1" in summary.data

    from mlflow.tracking import MlflowClient

    from genimg.tracking.runs import tracking_uri

    version = MlflowClient(tracking_uri()).get_model_version("genimg-digits-gan", "1")
    assert version.tags["genimg.flow_run_id"] == first["flow_run_id"]
    training_run = MlflowClient(tracking_uri()).get_run(by_model["gan"]["run_id"])
    assert training_run.data.tags["genimg.flow_run_id"] == first["flow_run_id"]
    assert training_run.data.tags["genimg.run_name"] == by_model["gan"]["run_name"]
    assert version.tags["genimg.dataset"] == f"digits@{first['datasets'][0]['version']}"

    # genimg's phase lines are in the flow run's logs, beside Prefect's own.
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    async def flow_run_logs() -> list[str]:
        async with get_client() as prefect:
            logs = await prefect.read_logs(
                log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[first["flow_run_id"]]))
            )
            return [log.message for log in logs if log.name == "genimg"]

    import asyncio

    messages = asyncio.run(flow_run_logs())
    assert any("own classifier feature network" in m and m.endswith(" …") for m in messages), messages

    rerun = runner.invoke(app, ["retrain", "--config", str(config), "--json"])
    assert rerun.exit_code == 0, (rerun.output[-3000:], rerun.exception)
    again = json.loads(rerun.stdout)
    assert again["datasets"][0]["reused"] and again["datasets"][0]["version"] == first["datasets"][0]["version"]
    second = {m["model"]: m for m in again["models"]}
    for model in ("gan", "vae"):
        assert second[model]["version"] == 2 and second[model]["reason"]  # the decision says why
    sample = runner.invoke(
        app, ["sample", "models:/genimg-digits-gan@champion", "-n", "4", "-o", str(tmp_path / "g.png")]
    )
    assert sample.exit_code == 0 and (tmp_path / "g.png").is_file()


@pytest.mark.slow
def test_a_cached_ingest_whose_version_left_the_store_is_ingested_again(prefect_harness, tmp_path, monkeypatch):
    """`make clean && make run`: Prefect's cache remembers the ingest, the store no longer has it."""
    import shutil

    from genimg.flows.retrain import retrain

    monkeypatch.setenv("GENIMG_STORE", (tmp_path / "store").as_uri())
    config = write_config(
        tmp_path,
        [{"model": "vae", "dataset": "digits", "steps": 2, "set": TINY_SET["vae"] + ["eval.at_end_of_training=false"]}],
        evaluation={"samples": 20, "seed": 0, "extractor_steps": 20, "nll_k": 2},
    )
    first = retrain(str(config))
    assert first["models"][0]["error"] is None, first
    shutil.rmtree(tmp_path / "store")
    again = retrain(str(config))
    assert again["models"][0]["error"] is None, again
    assert again["datasets"][0]["version"] == first["datasets"][0]["version"]
    assert (tmp_path / "store" / "datasets" / "digits" / first["datasets"][0]["version"] / "manifest.json").is_file()


@pytest.mark.slow
def test_retrain_takes_a_photo_folder_at_a_resolution_and_a_conditional_gan_resnet(
    prefect_harness, tmp_path, monkeypatch
):
    """An RGB folder with two classes, made 16×16 at ingest; gan-resnet with DiffAugment and
    class conditioning trained, evaluated, registered and promoted by the flow."""
    import numpy as np
    from PIL import Image

    from genimg.flows.retrain import retrain

    rng = np.random.default_rng(0)
    for label, colour in (("red", (200, 30, 30)), ("blue", (30, 30, 200))):
        (tmp_path / "photos" / label).mkdir(parents=True)
        for i in range(24):
            pixels = np.clip(np.array(colour) + rng.integers(-20, 20, (30 + i % 3, 22, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(tmp_path / "photos" / label / f"{i}.png")
    monkeypatch.setenv("GENIMG_STORE", (tmp_path / "store").as_uri())
    config = tmp_path / "retrain.yaml"
    config.write_text(
        json.dumps(
            {
                "datasets": {"pets": {"source": str(tmp_path / "photos"), "resolution": 16, "resize": "center-crop"}},
                "families": [
                    {
                        "model": "gan-resnet",
                        "dataset": "pets",
                        "steps": 3,
                        "set": [
                            "model.width=1",
                            "model.latent_dim=8",
                            "model.conditional=true",
                            "model.augment=color,translation,cutout",
                            "train.batch_size=8",
                            "eval.at_end_of_training=false",
                        ],
                    }
                ],
                "workers": 0,
                "evaluation": {"samples": 20, "seed": 0, "extractor_steps": 20},
            }
        )
    )
    result = retrain(str(config))
    [outcome] = result["models"]
    assert outcome["error"] is None, outcome
    assert outcome["name"] == "genimg-pets-gan-resnet" and outcome["promoted"]
    from genimg.models import load_model

    model = load_model(outcome_checkpoint(outcome))
    assert model.num_classes == 2 and model.class_names == ("blue", "red") and model.config.image_shape == (3, 16, 16)


def outcome_checkpoint(outcome):
    from urllib.parse import urlparse

    from mlflow.tracking import MlflowClient

    from genimg.tracking.runs import tracking_uri

    checkpoint = MlflowClient(tracking_uri()).get_run(outcome["run_id"]).data.tags["genimg.checkpoint"]
    return urlparse(checkpoint).path


@pytest.mark.parametrize(
    ("extra", "family", "message"),
    [
        ({}, "{model: vae, dataset: mnist}", "families[0].dataset 'mnist' is not in datasets"),
        ({}, "{model: vae, dataset: digits, tune: {trials: 0}}", "families[0].tune.trials must be ≥ 1"),
        ({}, "{model: vae, dataset: digits, tune: {budget: 3}}", "families[0].tune takes only"),
        ({"evaluation": "{sampels: 10}"}, "{model: vae, dataset: digits}", "unknown config key"),
        (
            {"ray_jobs": "{address: 'head:8265'}"},
            "{model: vae, dataset: digits}",
            "must be the dashboard's http(s):// URL",
        ),
        ({"tune": "yes please"}, "{model: vae, dataset: digits}", "tune: must be true or false"),
        ({"schedule": "daily"}, "{model: vae, dataset: digits}", "unknown top-level key(s) ['schedule']"),
    ],
)
def test_a_bad_retrain_config_is_refused_before_prefect_starts(tmp_path, extra, family, message):
    path = tmp_path / "retrain.yaml"
    lines = ["datasets: {digits: builtin:digits}", "families:", f"  - {family}"]
    lines += [f"{key}: {value}" for key, value in extra.items()]
    path.write_text("\n".join(lines) + "\n")
    result = runner.invoke(app, ["retrain", "--config", str(path)])
    assert result.exit_code == 1 and message in result.stderr, result.stderr
    assert "\n" not in result.stderr.strip()  # one line


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("{resolution: 64}", "a source, or a mapping of ['resize', 'resolution', 'source'] with a source"),
        ("{source: builtin:digits, resolution: 3}", "invalid --resolution 3 (must be 4–4096)"),
        ("{source: builtin:digits, resolution: 32, resize: squash}", "invalid --resize 'squash'"),
        ("{source: builtin:digits, resize: pad}", "resize needs resolution"),
    ],
)
def test_a_bad_dataset_entry_is_refused_naming_it(tmp_path, entry, message):
    path = tmp_path / "retrain.yaml"
    path.write_text(f"datasets: {{digits: {entry}}}\nfamilies:\n  - {{model: vae, dataset: digits}}\n")
    result = runner.invoke(app, ["retrain", "--config", str(path)])
    assert result.exit_code == 1 and message in result.stderr and "datasets.digits" in result.stderr, result.stderr


def test_the_shipped_retrain_config_names_presets_that_resolve():
    from genimg.flows.settings import load_retrain_config
    from genimg.training.run import load_config_file, merge_sections, resolve_run_config

    config = load_retrain_config()
    assert [plan.model for plan in config.families] == ["gan", "vae", "rvae"]
    for plan in config.families:
        resolve_run_config(plan.model, merge_sections(load_config_file(plan.config)))


def test_a_moving_mnist_entry_is_planned_and_its_fingerprint_follows_the_digits_file(tmp_path):
    import os

    from genimg.flows.retrain import source_fingerprint
    from genimg.flows.settings import load_retrain_config

    digits = tmp_path / "digits-idx3-ubyte"
    digits.write_bytes(b"first")
    source = f"moving-mnist:{digits}?count=10"
    path = tmp_path / "retrain.yaml"
    path.write_text(
        f"datasets:\n  mmnist: '{source}'\nfamilies:\n  - model: rvae\n    dataset: mmnist\n"
        "    config: configs/rvae-moving-mnist.yaml\n"
    )
    assert load_retrain_config(path).datasets["mmnist"].source == source
    before = source_fingerprint(source)
    assert source_fingerprint(f"moving-mnist:{digits}?count=20") != before  # another query
    digits.write_bytes(b"second, longer")
    os.utime(digits, ns=(1, 1))
    assert source_fingerprint(source) != before  # another digits file
