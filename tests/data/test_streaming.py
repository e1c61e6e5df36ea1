"""Streaming a store version's shards: every record once per epoch, exact restarts, bounded buffer."""

import hashlib

import numpy as np
import pytest

import genimg.data.versions as versions
from genimg.data.dataset import Dataset
from genimg.data.streaming import RecordStream, StreamPlan, emission_order
from genimg.data.versions import ingest_dataset, resolve_version
from genimg.store import open_store


def digest(record: np.ndarray) -> str:
    return hashlib.sha256(record.tobytes()).hexdigest()


@pytest.fixture
def sharded_version(tmp_path, monkeypatch):
    """600 distinct 3×4×4 records with labels, in shards of about 40 records."""
    monkeypatch.setattr(versions, "SHARD_BYTES", 40 * 48)
    rng = np.random.default_rng(7)
    data = rng.integers(0, 256, (600, 3, 4, 4), dtype=np.uint8)
    labels = np.arange(600) % 5
    labels[::7] = -1  # some records without a label
    store = open_store((tmp_path / "store").as_uri())
    ingest_dataset(Dataset(kind="images", data=data, source="synthetic", labels=labels), "noise", store=store)
    version = resolve_version("noise", store)
    assert len(version.shards(("train",))) > 8
    return version


def train_digests(version, labelled_only=False) -> list[str]:
    loaded = version.load(("train",))
    keep = loaded.labels >= 0 if labelled_only else np.ones(len(loaded.data), bool)
    return sorted(digest(record) for record in loaded.data[keep])


def first_records(stream: RecordStream, start_step: int, count: int) -> list[np.ndarray]:
    out = []
    batches = stream.batches(start_step)
    try:
        while len(out) < count:
            data, _ = next(batches)
            out.extend(data)
    finally:
        batches.close()
    return out[:count]


def test_the_emission_order_is_a_permutation_that_holds_at_most_the_buffer():
    order = emission_order(1000, 64, np.random.default_rng(0))
    assert sorted(order.tolist()) == list(range(1000))
    # a record can only come out once it was read: at most 64 records are read ahead of the output
    assert all(order[i] < i + 64 for i in range(1000))
    assert order[:64].tolist() != list(range(64))  # shuffled


@pytest.mark.parametrize("world", [1, 2, 3])
def test_every_training_record_once_per_epoch_across_ranks(sharded_version, world):
    for epoch in (0, 1):
        seen = []
        for rank in range(world):
            stream = RecordStream(
                sharded_version, ("train",), rank=rank, world=world, seed=3, batch_size=16, shuffle_buffer=50
            )
            before = sum(stream.plan.epoch_size(e) for e in range(epoch))
            seen += [digest(r) for r in first_records(stream, 0, before + stream.plan.epoch_size(epoch))[before:]]
        assert sorted(seen) == train_digests(sharded_version), (world, epoch)


def test_with_fewer_shards_than_ranks_each_rank_keeps_every_world_th_row(sharded_version):
    plan = StreamPlan(sharded_version.shards(("train",))[:2], rank=1, world=3, seed=0)
    parts = plan.parts(0)
    assert [(p.first, p.stride) for p in parts] == [(1, 3), (1, 3)]


def test_a_restart_at_any_step_gives_the_same_records_as_an_uninterrupted_stream(sharded_version):
    stream = RecordStream(sharded_version, ("train",), rank=1, world=2, seed=5, batch_size=24, shuffle_buffer=40)
    whole = first_records(stream, 0, 24 * 40)  # several epochs
    for step in (1, 7, 11, 12, 25):
        resumed = first_records(stream, step, 24 * (40 - step))
        assert all(np.array_equal(a, b) for a, b in zip(whole[24 * step :], resumed, strict=True)), step


def test_the_order_changes_between_epochs_and_seeds(sharded_version):
    a = RecordStream(sharded_version, ("train",), rank=0, world=1, seed=1, batch_size=10, shuffle_buffer=30)
    b = RecordStream(sharded_version, ("train",), rank=0, world=1, seed=2, batch_size=10, shuffle_buffer=30)
    size = a.records_per_epoch()
    run_a = [digest(r) for r in first_records(a, 0, 2 * size)]
    run_b = [digest(r) for r in first_records(b, 0, size)]
    assert run_a[:size] != run_a[size:] and run_a[:size] != run_b


def test_a_conditional_stream_keeps_only_labelled_records_with_their_labels(sharded_version):
    stream = RecordStream(
        sharded_version, ("train",), rank=0, world=1, seed=0, batch_size=20, shuffle_buffer=30, labelled_only=True
    )
    loaded = sharded_version.load(("train",))
    label_of = {digest(r): int(label) for r, label in zip(loaded.data, loaded.labels, strict=True)}
    batches = stream.batches(0)
    records, labels = [], []
    while len(records) < stream.records_per_epoch():
        data, batch_labels = next(batches)
        records.extend(data)
        labels.extend(batch_labels.tolist())
    batches.close()
    size = stream.records_per_epoch()
    assert sorted(digest(r) for r in records[:size]) == train_digests(sharded_version, labelled_only=True)
    assert all(label_of[digest(r)] == label for r, label in zip(records, labels, strict=True))


def test_a_shard_whose_records_disagree_with_the_manifest_is_refused(sharded_version):
    shards = sharded_version.manifest["shards"]["train"]
    shards[0] = {**shards[0], "records": shards[0]["records"] + 1}
    stream = RecordStream(sharded_version, ("train",), rank=0, world=1, seed=0, batch_size=8, shuffle_buffer=8)
    with pytest.raises(Exception, match="manifest says"):
        first_records(stream, 0, stream.records_per_epoch())


def test_auto_streams_a_store_dataset_from_the_threshold_on(sharded_version, monkeypatch):
    import genimg.data.handle as handle_module
    from genimg.data.handle import resolve_dataset

    handle = resolve_dataset("noise", store=sharded_version.store)
    train_bytes = handle.count() * 48
    monkeypatch.setattr(handle_module, "STREAM_THRESHOLD_BYTES", train_bytes)
    assert handle.streams("auto") and handle.worker_input(("train",), "auto").streaming
    monkeypatch.setattr(handle_module, "STREAM_THRESHOLD_BYTES", train_bytes + 1)
    assert not handle.streams("auto") and not handle.worker_input(("train",), "auto").streaming
    assert handle.streams("stream") and not handle.streams("memory")


def test_a_raw_source_cannot_be_streamed():
    from genimg.data.handle import resolve_dataset
    from genimg.errors import DataError

    handle = resolve_dataset("builtin:digits")
    assert not handle.streams("auto")
    with pytest.raises(DataError, match=r"builtin:digits: train.data_mode=stream .*genimg ingest"):
        handle.worker_input(("train",), "stream")


def test_stream_settings_are_checked_with_the_train_config():
    from genimg.config import config_from_dict
    from genimg.errors import ConfigError
    from genimg.training.config import TrainConfig

    assert config_from_dict(TrainConfig, {"data_mode": "stream"}, where="train").data_mode == "stream"
    with pytest.raises(ConfigError, match="data_mode"):
        config_from_dict(TrainConfig, {"data_mode": "disk"}, where="train")
    with pytest.raises(ConfigError, match="train.shuffle_buffer"):
        TrainConfig(shuffle_buffer=0)


def test_training_in_process_streams_a_store_dataset(sharded_version, tmp_path, monkeypatch):
    import genimg

    monkeypatch.setenv("GENIMG_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("GENIMG_STORE", sharded_version.store.uri)
    outcome = genimg.train(
        "vae",
        "noise",
        steps=3,
        workers=0,
        overrides={
            "train.data_mode": "stream",
            "train.batch_size": 8,
            "model.width": 4,
            "model.latent_dim": 4,
            "eval.at_end_of_training": False,
        },
    )
    assert outcome.metrics["step"] == 3 and outcome.records == sharded_version.count(("train",))
