import numpy as np
import pytest
import torch

from genimg.data.dataset import Dataset
from genimg.data.handle import resolve_dataset
from genimg.data.versions import ingest_dataset
from genimg.errors import ConfigError, GenimgError
from genimg.evaluation import features as features_module
from genimg.evaluation.config import MIN_EXTRACTOR_STEPS, EvalConfig, extractor_budget
from genimg.evaluation.features import Classifier, augment, choose_extractor, recipe_for, train_feature_network
from genimg.store import sha256_file

QUICK = EvalConfig(extractor_steps=150)


def test_labelled_data_trains_a_classifier_once_and_later_evaluations_reuse_it(store, monkeypatch):
    ingest_dataset(Dataset("images", *load_digits()), "digits", store=store)
    source = resolve_dataset("digits", store=store)
    first, skipped = choose_extractor(source, QUICK, store)
    assert first is not None and skipped is None
    assert first.name == "classifier" and first.details["reused"] is False
    assert first.details["accuracy"] > 0.9  # held out: the val split, after 150 steps
    assert "Inception weights unavailable" in first.details["note"]
    assert first.label_values == tuple(range(10)) and first.details["label_values"] == list(range(10))

    def no_training(*args, **kwargs):
        raise AssertionError("the cached feature network was trained again")

    monkeypatch.setattr(features_module, "train_feature_network", no_training)
    second, _ = choose_extractor(resolve_dataset("digits", store=store), QUICK, store)
    assert second is not None and second.details["reused"] is True and second.weights_sha256 == first.weights_sha256
    images = torch.from_numpy(source.load("test").data[:20])
    assert torch.equal(first(images), second(images))
    assert first(images).shape == (20, 128)
    # The cached classifier's head labels images as the trained one did, in label values.
    assert torch.equal(first.classify(images), second.classify(images))
    assert (first.classify(images) == torch.from_numpy(source.load("test").labels[:20])).float().mean() > 0.8


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
    extractor, _ = choose_extractor(resolve_dataset("partly", store=store), QUICK, store)
    assert extractor is not None and extractor.name == "autoencoder" and extractor.details["reconstruction_mse"] < 0.2


def test_the_inception_network_is_used_when_its_weights_file_is_present(tmp_path, monkeypatch):
    from genimg.evaluation.inception import FIDInceptionV3

    weights = tmp_path / "fid-weights.pth"
    torch.save(FIDInceptionV3().state_dict(), weights)
    monkeypatch.setenv("GENIMG_INCEPTION_WEIGHTS", str(weights))
    source = resolve_dataset("builtin:digits")
    extractor, _ = choose_extractor(source, EvalConfig(features="auto"), None)  # type: ignore[arg-type]
    assert extractor is not None and extractor.name == "inception" and extractor.weights_sha256 == sha256_file(weights)
    assert extractor(torch.from_numpy(source.load("test").data[:2])).shape == (2, 2048)


def test_asking_for_inception_without_its_weights_says_why_there_are_none(monkeypatch):
    monkeypatch.delenv("GENIMG_INCEPTION_WEIGHTS", raising=False)
    monkeypatch.setenv("GENIMG_INCEPTION_URL", "")
    with pytest.raises(GenimgError, match="features=inception: .*GENIMG_INCEPTION_URL"):
        choose_extractor(resolve_dataset("builtin:digits"), EvalConfig(features="inception"), None)  # type: ignore[arg-type]


def test_a_raw_source_gets_the_version_and_splits_that_ingest_gives_it(tmp_path):
    from genimg.store import open_store

    store = open_store(tmp_path.as_uri())
    result = ingest_dataset(Dataset("images", *load_digits()), "digits", store=store)
    raw = resolve_dataset("builtin:digits")
    stored = resolve_dataset("digits", store=store)
    assert raw.version == stored.version == result.version
    assert raw.ref == f"builtin:digits@{result.version}" and stored.ref == f"digits@{result.version}"
    for split in ("train", "val", "test"):
        assert np.array_equal(np.sort(raw.load(split).data, axis=0), np.sort(stored.load(split).data, axis=0))


def test_the_same_recipe_trains_the_same_weights():
    from safetensors.torch import save

    from genimg.evaluation.features import labelled_images
    from genimg.store import sha256_hex

    images, labels, values = labelled_images(resolve_dataset("builtin:digits").load("train"))
    recipe = recipe_for("classifier", (1, 16, 16), EvalConfig(extractor_steps=20), values)

    def weights_hash() -> str:
        network, steps = train_feature_network("classifier", images, labels, recipe)
        assert steps == 20
        return sha256_hex(save({key: value.contiguous() for key, value in network.state_dict().items()}))

    assert weights_hash() == weights_hash()


def test_colour_images_are_flipped_in_training_and_grey_ones_only_shifted():
    grey = recipe_for("classifier", (1, 16, 16), QUICK, (0, 1))
    colour = recipe_for("classifier", (3, 16, 16), QUICK, (0, 1))
    assert not grey["flip"] and colour["flip"] and grey["crop_pad"] == colour["crop_pad"] == 2
    generator = torch.Generator().manual_seed(0)
    for recipe, channels in ((grey, 1), (colour, 3)):
        images = torch.zeros(200, channels, 16, 16, dtype=torch.uint8)
        images[..., :4] = 255  # a band at the left edge: a shift of ≤ 2 px keeps it in the left half
        out = augment(images, recipe, generator)
        assert out.shape == images.shape and int(out.sum()) <= int(images.sum())
        left_heavy = out[..., :8].sum((1, 2, 3)) > out[..., 8:].sum((1, 2, 3))
        if recipe["flip"]:
            assert 0.35 < float(left_heavy.float().mean()) < 0.65  # about half flipped
        else:
            assert bool(left_heavy.all())


def test_standardizing_the_features_leaves_the_classifier_predictions_alone():
    torch.manual_seed(0)
    network = Classifier(1, 3).eval()
    images = torch.randint(0, 256, (50, 1, 16, 16), dtype=torch.uint8)
    before = network(images.float() / 255.0)
    network.features.standardize(images)
    assert float(network.features.center.abs().sum()) > 0 and float(network.features.scale) != 1.0
    assert torch.allclose(network(images.float() / 255.0), before)


def test_the_feature_network_budget_follows_the_train_split_within_the_caps():
    default = EvalConfig()
    assert extractor_budget(300, 3) == MIN_EXTRACTOR_STEPS  # a 300-image subset: no 4,000 steps
    assert extractor_budget(1437, 1) == 225  # ten passes over the builtin digits' train split
    assert extractor_budget(42_000, 3) == 4000 and extractor_budget(42_000, 1) == 1000
    assert recipe_for("classifier", (1, 16, 16), default, (0, 1), train_records=1437)["steps"] == 225
    assert recipe_for("classifier", (3, 32, 32), default, (0, 1), train_records=42_000)["steps"] == 4000
    assert recipe_for("classifier", (3, 32, 32), default, (0, 1), train_records=42_000)["early_stop"]
    exact = recipe_for("classifier", (3, 32, 32), QUICK, (0, 1), train_records=42_000)
    assert exact["steps"] == 150 and not exact["early_stop"]  # asked for: exactly that many
    with pytest.raises(ConfigError, match="extractor_steps must be ≥ 1"):
        EvalConfig(extractor_steps=0)


@pytest.mark.slow
def test_training_stops_early_once_the_val_score_stops_improving():
    from genimg.evaluation.features import labelled_images

    source = resolve_dataset("builtin:digits")
    images, labels, values = labelled_images(source.load("train"))
    val = source.load("val")
    recipe = recipe_for("classifier", (1, 16, 16), EvalConfig(), values, train_records=len(images)) | {"steps": 1000}
    network, steps = train_feature_network(
        "classifier", images, labels, recipe, torch.from_numpy(val.data), torch.from_numpy(val.labels.astype("int64"))
    )
    assert steps < 1000 and steps % 100 == 0  # checks every 100 steps; digits plateau within a few
    no_stop, all_steps = train_feature_network(
        "classifier", images[:200], labels[:200], recipe | {"steps": 60, "early_stop": False}
    )
    assert all_steps == 60


def test_one_feature_network_per_dataset_content_whatever_its_name_or_version(store, monkeypatch):
    data, _, labels = load_digits()
    ingest_dataset(Dataset("images", data, "builtin:digits", labels), "digits", store=store)
    ingest_dataset(Dataset("images", data, "another-copy", labels), "copy", store=store)
    first, _ = choose_extractor(resolve_dataset("digits", store=store), QUICK, store)
    trainings = []
    monkeypatch.setattr(
        features_module,
        "train_feature_network",
        lambda *args, **kwargs: trainings.append(args) or (_ for _ in ()).throw(AssertionError),
    )
    second, _ = choose_extractor(resolve_dataset("copy", store=store), QUICK, store)
    raw, _ = choose_extractor(resolve_dataset("builtin:digits"), QUICK, store)
    assert first is not None and second is not None and raw is not None and not trainings
    assert second.details["reused"] and raw.details["reused"]
    assert first.weights_sha256 == second.weights_sha256 == raw.weights_sha256
    assert len([key for key in store.list("extractors/") if key.endswith("extractor.json")]) == 1


def test_a_short_run_does_not_train_the_feature_network_but_says_so(tmp_path):
    from genimg.store import open_store

    store = open_store(tmp_path.as_uri())
    ingest_dataset(Dataset("images", *load_digits()), "digits", store=store)
    source = resolve_dataset("digits", store=store)
    extractor, skipped = choose_extractor(source, EvalConfig(), store, step_limit=5)
    assert extractor is None and skipped is not None
    assert "FID/KID/precision/recall skipped" in skipped and "this run's 5" in skipped
    asked, _ = choose_extractor(source, EvalConfig(features="classifier", extractor_steps=30), store, step_limit=5)
    assert asked is not None and asked.name == "classifier"  # eval.features=classifier asks for it


def test_the_features_of_real_records_are_computed_once_per_network_and_records(tmp_path):
    from genimg.evaluation.features import FeatureExtractor, real_features
    from genimg.store import open_store

    class Counting(torch.nn.Module):
        num_features = 3

        def __init__(self):
            super().__init__()
            self.images_seen = 0

        def forward(self, images):
            self.images_seen += len(images)
            return images.flatten(1)[:, :3] * 2

    store, network = open_store(tmp_path.as_uri()), Counting()
    extractor = FeatureExtractor("counting", network, "a" * 64)
    images = torch.randint(0, 256, (30, 1, 4, 4), dtype=torch.uint8)
    first = real_features(extractor, images, 8, store)
    again = real_features(extractor, images, 8, store)
    assert torch.equal(first, again) and first.dtype == torch.float64 and network.images_seen == 30
    real_features(extractor, images[:20], 8, store)  # other records: computed
    real_features(FeatureExtractor("counting", network, "b" * 64), images, 8, store)  # another network
    assert network.images_seen == 30 + 20 + 30 and len(store.list("features/")) == 3


def test_offline_the_field_s_inception_gives_way_to_the_dataset_network_with_one_notice(store, monkeypatch, caplog):
    import socket

    with socket.socket() as probe:  # a local port nothing listens on: a refused connection
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("GENIMG_INCEPTION_URL", f"http://127.0.0.1:{port}/weights.pth")
    caplog.set_level("INFO", logger="genimg")
    ingest_dataset(Dataset("images", *load_digits()), "digits", store=store)
    extractor, _ = choose_extractor(resolve_dataset("digits", store=store), QUICK, store)
    assert extractor is not None and extractor.name == "classifier"
    assert "offline? cannot fetch" in extractor.details["note"]
    notices = [
        r.getMessage() for r in caplog.records if r.getMessage().startswith("note: Inception weights unavailable")
    ]
    assert len(notices) == 1 and "\n" not in notices[0]
