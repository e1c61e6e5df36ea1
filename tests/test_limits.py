"""Absurd sizes are refused in one line, before anything is allocated or any run exists: each
names the setting, its value, the bytes it would take and the limit (genimg.limits); seeds past
what the RNGs take and `--cpus-per-worker 0` likewise. Every packaged preset passes the checks."""

import json

import numpy as np
import pytest

from genimg.configs import CONFIGS_DIR
from genimg.data import read_source
from genimg.data.dataset import Dataset
from genimg.errors import DataError, GenimgError
from genimg.models.base import MODEL_CONFIG_FILE, build_model, load_model, save_model
from genimg.services.sample import sample
from genimg.training.run import load_config_file, resolve_run_config
from tests.conftest import write_idx
from tests.models.test_presets import model_of
from tests.test_cli_guards import invoke, mlflow_runs, one_line_error


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (f"train.seed={2**70}", f"train.seed must be from 0 to {2**32 - 1}"),
        ("train.seed=-1", "train.seed must be from 0"),
        ("train.batch_size=100000000", "train.batch_size=100000000 needs about"),
        ("model.width=100000", "model.width=100000"),
        ("model.latent_dim=1000000000", "model.latent_dim=1000000000"),
        ("train.shuffle_buffer=10000000000", "train.shuffle_buffer=10000000000 needs about"),
        ("train.prefetch_shards=5000", "train.prefetch_shards=5000 needs about"),
        ("train.prefetch_shards=1000000000", "train.prefetch_shards=1000000000 needs about"),
    ],
)
def test_absurd_training_settings_are_one_line_and_leave_no_run(override, message):
    result = invoke(
        "train", "--model", "vae", "--dataset", "builtin:digits", "--workers", "0", "--steps", "2", "--set", override
    )
    one_line_error(result, message)
    if "seed" not in override:
        assert "limit" in result.stderr
    assert mlflow_runs() == []


def test_the_limit_names_the_bytes_and_can_be_set(monkeypatch, tmp_path):
    monkeypatch.setenv("GENIMG_MEMORY_LIMIT", "1G")
    digits = tmp_path / "train-images-idx3-ubyte"
    write_idx(digits, np.full((4, 28, 28), 255, np.uint8), compress=False)
    # 300,000 sequences of 20 frames of 32×32 px: 5.7 GiB, under the static 16 GiB cap.
    with pytest.raises(DataError) as refused:
        read_source(f"moving-mnist:{digits}?count=300000&size=32")
    assert "count=300000" in str(refused.value)
    assert "5.7 GiB" in str(refused.value) and "1.0 GiB limit (set by GENIMG_MEMORY_LIMIT)" in str(refused.value)
    assert read_source(f"moving-mnist:{digits}?count=3&size=32&frames=2").data.shape == (3, 2, 1, 32, 32)


@pytest.fixture
def tiny_vae_folder(tmp_path):
    return save_model(build_model("vae", {"latent_dim": 4, "width": 4}), tmp_path / "vae")


def test_sample_n_is_bounded_before_drawing(tiny_vae_folder, tmp_path):
    with pytest.raises(GenimgError, match=r"^-n 100000000 needs about .* limit"):
        sample(str(tiny_vae_folder), tmp_path / "grid.png", n=100_000_000)
    with pytest.raises(GenimgError, match="--seed must be from 0"):
        sample(str(tiny_vae_folder), tmp_path / "grid.png", n=4, seed=2**70)
    assert sample(str(tiny_vae_folder), tmp_path / "grid.png", n=4).shape == (4, 1, 16, 16)


def test_a_model_json_claiming_an_absurd_width_is_refused_before_the_module_is_built(tiny_vae_folder):
    description = json.loads((tiny_vae_folder / MODEL_CONFIG_FILE).read_text())
    description["config"]["width"] = 200_000
    (tiny_vae_folder / MODEL_CONFIG_FILE).write_text(json.dumps(description))
    with pytest.raises(GenimgError) as refused:
        load_model(tiny_vae_folder)
    message = str(refused.value)
    assert message.startswith(f"{tiny_vae_folder / MODEL_CONFIG_FILE}: model vae with ")
    assert "model.width=200000" in message
    assert "limit" in message and "\n" not in message


def test_a_conditional_model_of_a_trillion_classes_is_refused_by_its_size():
    # Labels this large are refused at ingest now; a version ingested before still trains no such model.
    probe = Dataset(
        "images", np.zeros((2, 1, 16, 16), np.uint8), "labels-from-an-old-version", labels=np.array([0, 10**12])
    )
    with pytest.raises(GenimgError, match=r"model.num_classes=1000000000001 .* limit"):
        resolve_run_config("vae", {"model": {"conditional": True}}, probe)


def test_tune_refuses_cpus_per_worker_0_before_starting_anything():
    from genimg.distributed.search_space import load_space
    from genimg.distributed.tune import tune_search

    with pytest.raises(GenimgError, match="--cpus-per-worker must each be ≥ 1, got .* and 0"):
        tune_search(
            "vae", "builtin:digits", {}, space=load_space("vae"), trials=2, steps=2, search="s", cpus_per_worker=0
        )


# The records each packaged preset is for: (kind, record shape, labelled).
PRESET_DATA = {
    "cifar10-": ("images", (3, 32, 32), True),
    "cifar10-vae-64": ("images", (3, 64, 64), True),
    "gan-digits": ("images", (1, 16, 16), False),
    "gan-mlp-digits": ("images", (1, 16, 16), False),
    "vae-digits": ("images", (1, 16, 16), False),
    "rvae-moving-digits": ("sequences", (10, 1, 32, 32), False),
    "rvae-moving-mnist": ("sequences", (20, 1, 64, 64), False),
}
PRESETS = sorted(path for path in CONFIGS_DIR.glob("*.yaml") if not path.name.startswith(("tune-", "retrain")))


@pytest.mark.parametrize("path", PRESETS, ids=lambda path: path.name)
def test_every_packaged_preset_passes_the_limits_on_its_data(path):
    prefix = max((prefix for prefix in PRESET_DATA if path.stem.startswith(prefix)), key=len)
    kind, shape, labelled = PRESET_DATA[prefix]
    rows = 10
    probe = Dataset(
        kind,
        np.broadcast_to(np.zeros((1, *shape), np.uint8), (rows, *shape)),
        path.name,
        labels=np.arange(rows) if labelled else None,
    )
    run = resolve_run_config(model_of(path.name), load_config_file(path), probe)
    assert run.train.steps > 0
