import numpy as np
import pytest
import torch

from genimg.data.dataset import Dataset
from genimg.data.sources import open_splits
from genimg.data.versions import ingest_dataset
from genimg.errors import GenimgError
from genimg.evaluation import features as features_module
from genimg.evaluation.config import EvalConfig
from genimg.evaluation.features import choose_extractor
from genimg.store import sha256_file

QUICK = EvalConfig(extractor_steps=150)


def test_labelled_data_trains_a_classifier_once_and_later_evaluations_reuse_it(store, monkeypatch):
    ingest_dataset(Dataset("images", *load_digits()), "digits", store=store)
    source = open_splits("digits", store=store)
    first = choose_extractor(source, QUICK, store)
    assert first.name == "classifier" and first.details["reused"] is False
    assert first.details["accuracy"] > 0.5  # held out: the val split
    assert "inception weights not found" in first.details["note"]

    def no_training(*args, **kwargs):
        raise AssertionError("the cached feature network was trained again")

    monkeypatch.setattr(features_module, "train_feature_network", no_training)
    second = choose_extractor(open_splits("digits", store=store), QUICK, store)
    assert second.details["reused"] is True and second.weights_sha256 == first.weights_sha256
    images = torch.from_numpy(source.load("test").data[:20])
    assert torch.equal(first(images), second(images))
    assert first(images).shape == (20, 128)


def load_digits():
    from genimg.data.readers import read_source

    dataset = read_source("builtin:digits")
    return dataset.data, "builtin:digits", dataset.labels


def test_unlabelled_or_partly_labelled_data_trains_an_autoencoder(tmp_path):
    from genimg.store import open_store

    store = open_store(tmp_path.as_uri())
    data, _, labels = load_digits()
    labels = labels.copy()
    labels[: len(labels) // 4] = -1  # a quarter without labels: not a classification set
    dataset = Dataset("images", data, "partly-labelled", labels=labels)
    ingest_dataset(dataset, "partly", store=store)
    extractor = choose_extractor(open_splits("partly", store=store), QUICK, store)
    assert extractor.name == "autoencoder" and extractor.details["reconstruction_mse"] < 0.2


def test_the_inception_network_is_used_when_its_weights_file_is_present(tmp_path, monkeypatch):
    from genimg.evaluation.inception import FIDInceptionV3

    weights = tmp_path / "fid-weights.pth"
    torch.save(FIDInceptionV3().state_dict(), weights)
    monkeypatch.setenv("GENIMG_INCEPTION_WEIGHTS", str(weights))
    source = open_splits("builtin:digits")
    extractor = choose_extractor(source, EvalConfig(features="auto"), None)  # type: ignore[arg-type]
    assert extractor.name == "inception" and extractor.weights_sha256 == sha256_file(weights)
    assert extractor(torch.from_numpy(source.load("test").data[:2])).shape == (2, 2048)


def test_asking_for_inception_without_its_weights_says_where_to_put_them(monkeypatch):
    monkeypatch.delenv("GENIMG_INCEPTION_WEIGHTS", raising=False)
    with pytest.raises(GenimgError, match="GENIMG_INCEPTION_WEIGHTS.*never downloads"):
        choose_extractor(open_splits("builtin:digits"), EvalConfig(features="inception"), None)  # type: ignore[arg-type]


def test_a_raw_source_gets_the_version_and_splits_that_ingest_gives_it(tmp_path):
    from genimg.store import open_store

    store = open_store(tmp_path.as_uri())
    result = ingest_dataset(Dataset("images", *load_digits()), "digits", store=store)
    raw = open_splits("builtin:digits")
    stored = open_splits("digits", store=store)
    assert raw.version == stored.version == result.version
    assert raw.ref == f"builtin:digits@{result.version}" and stored.ref == f"digits@{result.version}"
    for split in ("train", "val", "test"):
        assert np.array_equal(np.sort(raw.load(split).data, axis=0), np.sort(stored.load(split).data, axis=0))
