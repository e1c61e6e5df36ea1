"""The class-conditional VAE: labels into encoder and decoder, required where they are due and
refused by an unconditional model."""

import pytest
import torch

from genimg.errors import ConfigError, GenimgError
from genimg.models import build_model, load_model, save_model
from genimg.training.config import TrainConfig
from genimg.training.loop import train_model
from tests.conftest import tiny_config

SHAPE = (1, 16, 16)


def conditional(**extra: object):
    return build_model("vae", tiny_config("vae", SHAPE, conditional=True, num_classes=3, **extra))


def test_a_conditional_config_is_valid_before_the_classes_are_known_but_the_model_needs_them():
    config = {"conditional": True, "image_shape": list(SHAPE)}
    with pytest.raises(ConfigError, match="conditional but has 0 classes"):
        build_model("vae", config)
    with pytest.raises(ConfigError, match="conditional is false"):
        build_model("vae", {"num_classes": 3})
    with pytest.raises(ConfigError, match="class_names lists 2 names for 3 classes"):
        build_model("vae", {**config, "num_classes": 3, "class_names": ["a", "b"]})


@pytest.mark.parametrize("architecture", ["conv", "resnet"])
def test_loss_nll_reconstruct_and_sample_take_labels(architecture):
    model = conditional(architecture=architecture)
    images = torch.rand(4, *SHAPE)
    labels = torch.tensor([0, 1, 2, 1])
    assert model.loss(images, labels).total.dim() == 0
    nll = model.nll(images, k=8, labels=labels, generator=torch.Generator().manual_seed(0))
    assert nll.shape == (4,) and bool((nll > 0).all())
    assert model.reconstruct(images, labels).shape == (4, *SHAPE)
    assert model.sample(3, seed=0, labels=torch.tensor([2, 2, 0])).shape == (3, *SHAPE)
    # Without labels, sample draws them from the seed: the same seed, the same images.
    assert torch.equal(model.sample(5, seed=1), model.sample(5, seed=1))


def test_the_label_changes_what_is_decoded_and_scored():
    model = conditional()
    with torch.no_grad():
        model.encoder_labels.weight.normal_()
    zeros, twos = torch.zeros(2, dtype=torch.long), torch.full((2,), 2)
    assert not torch.equal(model.sample(2, seed=0, labels=zeros), model.sample(2, seed=0, labels=twos))
    images = torch.rand(2, *SHAPE)
    nll = [model.nll(images, k=4, labels=y, generator=torch.Generator().manual_seed(0)) for y in (zeros, twos)]
    assert not torch.equal(nll[0], nll[1])


def test_a_conditional_model_refuses_missing_or_bad_labels():
    model = conditional()
    images = torch.rand(2, *SHAPE)
    for call in (lambda: model.loss(images), lambda: model.nll(images, k=2), lambda: model.reconstruct(images)):
        with pytest.raises(GenimgError, match="class-conditional: pass the images' labels"):
            call()
    with pytest.raises(GenimgError, match="labels must be in 0–2"):
        model.loss(images, torch.tensor([0, 3]))
    with pytest.raises(GenimgError, match="3 labels for 2"):
        model.nll(images, k=2, labels=torch.tensor([0, 1, 2]))
    with pytest.raises(GenimgError, match="labels must be in 0–2"):
        model.sample(2, seed=0, labels=torch.tensor([5, 0]))


def test_an_unconditional_model_refuses_labels():
    model = build_model("vae", tiny_config("vae", SHAPE))
    images, labels = torch.rand(2, *SHAPE), torch.tensor([0, 1])
    for call in (
        lambda: model.loss(images, labels),
        lambda: model.nll(images, k=2, labels=labels),
        lambda: model.reconstruct(images, labels),
        lambda: model.sample(2, seed=0, labels=labels),
    ):
        with pytest.raises(GenimgError, match="not class-conditional"):
            call()


def test_the_training_loop_feeds_labels_and_the_saved_model_keeps_its_classes(tmp_path):
    model = build_model(
        "vae",
        tiny_config("vae", SHAPE, conditional=True, num_classes=2, class_names=["zero", "one"], likelihood="logistic"),
    )
    records = torch.randint(0, 256, (8, *SHAPE), dtype=torch.uint8)
    result = train_model(
        model, records, TrainConfig(steps=3, batch_size=4, log_every=1), labels=torch.tensor([0, 1] * 4)
    )
    assert result.step == 3
    save_model(model, tmp_path / "m")
    loaded = load_model(tmp_path / "m")
    assert loaded.num_classes == 2 and loaded.class_names == ("zero", "one")
    labels = torch.tensor([1, 0, 1])
    assert torch.equal(loaded.sample(3, seed=4, labels=labels), model.sample(3, seed=4, labels=labels))


@pytest.mark.slow
def test_samples_of_a_class_come_from_where_the_encoder_put_that_class():
    """Two classes that differ only in brightness: briefly trained, the encoder carries the class
    in z and the decoder barely uses its label; each class's own prior still draws that class."""
    generator = torch.Generator().manual_seed(0)
    levels = torch.tensor([40, 215]).repeat_interleave(48)
    records = (levels.view(-1, 1, 1, 1) + torch.randint(-25, 25, (96, 3, 16, 16), generator=generator)).clamp(0, 255)
    labels = (levels > 128).long()
    for seed in (0, 1, 2):
        torch.manual_seed(seed)
        model = build_model(
            "vae",
            {
                "image_shape": [3, 16, 16],
                "width": 8,
                "latent_dim": 4,
                "likelihood": "gaussian",
                "conditional": True,
                "num_classes": 2,
                "class_names": ["cat", "dog"],
            },
        )
        train_model(model, records.to(torch.uint8), TrainConfig(steps=300, batch_size=16, log_every=100), labels=labels)
        for label, dark in ((0, True), (1, False)):
            brightness = model.sample(40, seed=0, labels=torch.full((40,), label)).mean(dim=(1, 2, 3))
            assert ((brightness < 0.5) == dark).float().mean() >= 0.9, (seed, label, brightness)
