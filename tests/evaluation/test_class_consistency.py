"""Class consistency of conditional models: does the dataset classifier recover the class a
sample was drawn for? Stand-in models draw class k as a flat image of brightness (k + ½) / K."""

from dataclasses import dataclass

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from genimg.data.dataset import Dataset
from genimg.data.handle import DatasetHandle, handle_of
from genimg.evaluation.config import EvalConfig
from genimg.evaluation.evaluate import evaluate_model
from genimg.evaluation.features import FeatureExtractor, FeatureNet
from genimg.models import base
from genimg.models.base import GenerativeModel, ModelSpec, sample_labels
from genimg.store import open_store

SHAPE = (1, 8, 8)
QUICK = EvalConfig(samples=200, nll_k=2, extractor_steps=60, features="classifier")


@dataclass(frozen=True)
class BrightnessConfig:
    image_shape: tuple[int, int, int] = SHAPE
    conditional: bool = True
    num_classes: int = 2
    class_names: tuple[str, ...] = ("dark", "bright")


def brightness(labels: Tensor, classes: int) -> Tensor:
    return (labels.float() + 0.5) / classes


class BrightnessModel(GenerativeModel):
    """Class k: images of brightness (k + ½) / K with a little noise. `follows_labels=False`
    draws the brightness of a random class instead, whatever class it is asked for."""

    registry_name = "test-brightness"

    def __init__(self, config: BrightnessConfig, follows_labels: bool = True) -> None:
        super().__init__()
        self.config = config
        self.follows_labels = follows_labels
        self.anchor = nn.Parameter(torch.zeros(()))  # a parameter, for `device`
        self.nll_labels: list[Tensor] = []

    def sample(self, n: int, seed: int | None = None, labels: Tensor | None = None) -> Tensor:  # type: ignore[override]
        chosen = sample_labels(self, n, seed, labels)
        assert chosen is not None
        generator = torch.Generator().manual_seed(seed or 0)
        if not self.follows_labels:
            chosen = torch.randint(0, self.num_classes, (n,), generator=generator)
        noise = (torch.rand((n, *SHAPE), generator=generator) - 0.5) * 0.1
        return (brightness(chosen, self.num_classes)[:, None, None, None] + noise).clamp(0, 1)

    def nll(self, images: Tensor, k: int = 1, *, labels: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """How far each image's brightness is from its class's: 0 when `labels` are the
        images' own classes (a stand-in for the conditional VAE's −log p(x | y))."""
        self.nll_labels.append(labels)
        return (images.mean((1, 2, 3)) - brightness(labels, self.num_classes)).abs()


@pytest.fixture
def registered(monkeypatch):
    spec = ModelSpec("test-brightness", "vae", "images", BrightnessConfig, BrightnessModel)
    monkeypatch.setitem(base.MODEL_REGISTRY, "test-brightness", spec)


def brightness_source(label_values: tuple[int, ...], classes: int, class_names: list[str] | None) -> DatasetHandle:
    """300 noisy flat 8×8 images per label value k, of brightness (k + ½) / classes."""
    generator = np.random.default_rng(0)
    labels = np.repeat(np.array(label_values, np.int64), 300)
    level = (labels + 0.5) / classes * 255
    data = level[:, None, None, None] + generator.uniform(-12, 12, (len(labels), *SHAPE))
    dataset = Dataset(
        "images", data.clip(0, 255).astype(np.uint8), "brightness", labels=labels, class_names=class_names
    )
    return handle_of(dataset, "brightness")


def test_a_model_that_draws_the_asked_class_is_consistent_and_one_that_ignores_it_is_at_chance(registered, tmp_path):
    store = open_store(tmp_path.as_uri())
    source = brightness_source((0, 1), 2, ["dark", "bright"])
    faithful = evaluate_model(BrightnessModel(BrightnessConfig()), source, "test", QUICK, store=store)
    metrics = faithful.metrics
    assert metrics["class_consistency"] > 0.95, metrics
    assert metrics["class_consistency_dark"] > 0.95 and metrics["class_consistency_bright"] > 0.95
    assert faithful.features["name"] == "classifier" and faithful.features["label_values"] == [0, 1]
    assert faithful.settings["classes"] == 2

    careless_model = BrightnessModel(BrightnessConfig(), follows_labels=False)
    careless = evaluate_model(careless_model, source, "test", QUICK, store=store)
    assert careless.features["reused"] is True  # the same cached classifier judged both
    assert abs(careless.metrics["class_consistency"] - 0.5) < 0.12, careless.metrics


def test_classifier_outputs_map_back_to_the_dataset_label_values(registered, tmp_path):
    # Labels 1 and 2 only: the classifier has 2 outputs (for 1 and 2), the model 3 classes
    # (labels 0…max); class 0 cannot be scored, classes 1 and 2 must not be shifted by one.
    store = open_store(tmp_path.as_uri())
    source = brightness_source((1, 2), 3, None)
    model = BrightnessModel(BrightnessConfig(num_classes=3, class_names=()))
    evaluation = evaluate_model(model, source, "test", QUICK, store=store)
    metrics = evaluation.metrics
    assert evaluation.features["label_values"] == [1, 2]
    assert "class_consistency_0" not in metrics
    assert metrics["class_consistency_1"] > 0.95 and metrics["class_consistency_2"] > 0.95, metrics
    assert metrics["class_consistency"] == pytest.approx(
        (metrics["class_consistency_1"] + metrics["class_consistency_2"]) / 2
    )
    assert "skips class(es) 0: the dataset classifier was not trained on them" in evaluation.features["note"]


def test_a_conditional_nll_is_given_each_real_image_its_own_class(registered, tmp_path):
    store = open_store(tmp_path.as_uri())
    source = brightness_source((0, 1), 2, ["dark", "bright"])
    model = BrightnessModel(BrightnessConfig())
    evaluation = evaluate_model(model, source, "test", QUICK, store=store)
    test_labels = source.load("test").labels
    assert torch.equal(torch.cat(model.nll_labels), torch.from_numpy(test_labels))
    assert evaluation.metrics["nll"] < 0.06  # each image scored against its own class's brightness
    assert evaluation.settings["nll_records"] == len(test_labels)


def test_class_names_that_are_not_safe_metric_names_give_way_to_indices(registered, tmp_path):
    store = open_store(tmp_path.as_uri())
    source = brightness_source((0, 1), 2, ["dark sky", "bright/day"])
    model = BrightnessModel(BrightnessConfig(class_names=("dark sky", "bright/day")))
    metrics = evaluate_model(model, source, "test", QUICK, store=store).metrics
    assert {"class_consistency_0", "class_consistency_1", "class_consistency"} <= set(metrics)


def test_features_without_a_classifier_head_skip_the_metric_with_a_note(registered, tmp_path):
    source = brightness_source((0, 1), 2, ["dark", "bright"])
    torch.manual_seed(0)
    no_head = FeatureExtractor("inception", FeatureNet(1).eval(), "0" * 64)
    evaluation = evaluate_model(
        BrightnessModel(BrightnessConfig()),
        source,
        "test",
        QUICK,
        store=open_store(tmp_path.as_uri()),
        extractor=no_head,
    )
    assert not any(name.startswith("class_consistency") for name in evaluation.metrics)
    assert "fid" in evaluation.metrics
    assert "class consistency needs the dataset's classifier" in evaluation.features["note"]
