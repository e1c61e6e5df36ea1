"""The training loop on a RecordStream: every record once per epoch, exact resume, like in memory."""

import hashlib

import numpy as np
import pytest
import torch

import genimg.data.versions as versions
import genimg.training.loop as loop
from genimg.data.dataset import Dataset
from genimg.data.streaming import RecordStream
from genimg.data.versions import ingest_dataset, resolve_version
from genimg.models import build_model
from genimg.store import open_store
from genimg.training import TrainConfig, train_model
from tests.conftest import tiny_config


@pytest.fixture
def digits_version(tmp_path, monkeypatch, digits):
    monkeypatch.setattr(versions, "SHARD_BYTES", 60 * 256)  # shards of 60 records
    labels = np.arange(len(digits[:400])) % 10
    store = open_store((tmp_path / "store").as_uri())
    ingest_dataset(Dataset(kind="images", data=digits[:400], source="digits", labels=labels), "d", store=store)
    return resolve_version("d", store)


@pytest.fixture
def seen_batches(monkeypatch):
    """The uint8 records of every batch the loop trains on, as content hashes."""
    seen: list[str] = []
    real = loop.to_pixels

    def recording(records, device, channels_last):
        seen.extend(hashlib.sha256(r.numpy().tobytes()).hexdigest() for r in records)
        return real(records, device, channels_last)

    monkeypatch.setattr(loop, "to_pixels", recording)
    return seen


def hashes(records) -> list[str]:
    return sorted(hashlib.sha256(r.tobytes()).hexdigest() for r in records)


def test_in_memory_and_streamed_runs_see_every_training_record_once_per_epoch(digits_version, seen_batches):
    train = digits_version.load(("train",)).data
    model = build_model("vae", tiny_config("vae", (1, 16, 16)))
    # In memory: an epoch is len // batch steps (the partial batch is dropped); 16 divides 96.
    train_model(model, torch.from_numpy(train[:96]), TrainConfig(steps=12, batch_size=16, log_every=100))
    assert sorted(seen_batches[:96]) == hashes(train[:96]) and sorted(seen_batches[96:]) == hashes(train[:96])
    seen_batches.clear()
    stream = RecordStream(digits_version, ("train",), rank=0, world=1, seed=0, batch_size=16, shuffle_buffer=50)
    epoch = stream.records_per_epoch()
    train_model(model, stream, TrainConfig(steps=2 * epoch // 16 + 1, batch_size=16, log_every=100))
    assert sorted(seen_batches[:epoch]) == hashes(train)
    assert sorted(seen_batches[epoch : 2 * epoch]) == hashes(train)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["vae", "gan"])
def test_a_streamed_run_resumes_bit_for_bit(tmp_path, digits_version, name):
    def run(steps, checkpoint_dir=None, resume=False):
        torch.manual_seed(0)
        model = build_model(name, tiny_config(name, (1, 16, 16)))
        stream = RecordStream(digits_version, ("train",), rank=0, world=1, seed=3, batch_size=32, shuffle_buffer=40)
        config = TrainConfig(steps=steps, batch_size=32, checkpoint_every=100, seed=3)
        return model, train_model(model, stream, config, checkpoint_dir=checkpoint_dir, resume=resume)

    uninterrupted, _ = run(14)  # past the end of the first epoch (340 records)
    run(9, tmp_path)
    resumed, result = run(14, tmp_path, resume=True)
    assert result.resumed_from_step == 9
    for (key, a), b in zip(uninterrupted.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), key


def test_a_conditional_model_trains_on_streamed_labels(digits_version):
    model = build_model("gan", tiny_config("gan", (1, 16, 16), conditional=True, num_classes=10))
    stream = RecordStream(digits_version, ("train",), rank=0, world=1, seed=0, batch_size=16, labelled_only=True)
    result = train_model(model, stream, TrainConfig(steps=3, batch_size=16, log_every=1))
    assert result.step == 3
    too_few = build_model("gan", tiny_config("gan", (1, 16, 16), conditional=True, num_classes=3))
    with pytest.raises(Exception, match="labels in 0–2"):
        train_model(too_few, stream, TrainConfig(steps=3, batch_size=16))
