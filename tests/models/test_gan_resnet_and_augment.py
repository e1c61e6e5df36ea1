"""gan-resnet, DiffAugment and class-conditional GANs: built at every supported size, tiny widths."""

import pytest
import torch
from torch import nn

from genimg.errors import ConfigError, GenimgError
from genimg.models import build_model
from genimg.models.augment import diff_augment, parse_policy
from genimg.training import TrainConfig, train_model

SIDES = (32, 64, 128, 256)


@pytest.mark.parametrize("side", SIDES)
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize(
    ("name", "tiny"), [("gan-resnet", {"width": 1, "latent_dim": 8}), ("gan", {"width": 2, "latent_dim": 8})]
)
def test_conv_gans_build_train_and_sample_at_every_size(name, tiny, side, channels):
    model = build_model(name, {**tiny, "image_shape": [channels, side, side], "augment": "color,translation,cutout"})
    records = torch.randint(0, 256, (8, channels, side, side), dtype=torch.uint8)
    result = train_model(model, records, TrainConfig(steps=2, batch_size=4, log_every=1))
    assert result.step == 2 and all(torch.isfinite(torch.tensor(list(m.values()))).all() for _, m in result.history)
    samples = model.sample(3, seed=0)
    assert samples.shape == (3, channels, side, side) and 0 <= float(samples.min()) <= float(samples.max()) <= 1


def test_gan_resnet_refuses_sizes_it_has_no_plan_for():
    with pytest.raises(ConfigError, match="gan-resnet makes square images of 8, 16, 32, 64, 128, 256 px, got 28x28"):
        build_model("gan-resnet", {"image_shape": [1, 28, 28]})


def test_spectral_norm_is_on_every_discriminator_layer_of_gan_resnet():
    model = build_model("gan-resnet", {"image_shape": [3, 64, 64], "width": 2, "conditional": True, "num_classes": 3})
    layers = [m for m in model.discriminator.modules() if isinstance(m, (nn.Conv2d, nn.Linear, nn.Embedding))]
    assert len(layers) >= 12
    unnormalised = [m for m in layers if not (hasattr(m, "parametrizations") and "weight" in m.parametrizations)]
    assert unnormalised == []
    # The generator keeps plain layers (spectral norm in D only, as SNGAN).
    assert not any(hasattr(m, "parametrizations") for m in model.generator.modules())


def test_diffaugment_is_the_identity_when_off_and_differentiable_when_on():
    images = torch.rand(6, 3, 16, 16, requires_grad=True)
    assert diff_augment(images, parse_policy("")) is images
    model = build_model("gan", {"image_shape": [3, 16, 16], "width": 2})
    assert model.augment(images) is images
    for policy in ("color", "translation", "cutout", "color,translation,cutout"):
        torch.manual_seed(0)
        out = diff_augment(images, parse_policy(policy))
        assert out.shape == images.shape and not torch.equal(out, images), policy
        (grad,) = torch.autograd.grad(out.sum(), images)
        assert grad.abs().sum() > 0, policy  # gradients reach the input pixels


def test_translation_shifts_with_zero_padding_and_cutout_zeroes_a_square():
    from genimg.models.augment import cutout, translation

    images = torch.ones(32, 1, 16, 16)
    torch.manual_seed(1)
    shifted = translation(images)
    zero_rows = (shifted[:, 0] == 0).all(dim=2).sum(1)  # rows emptied by a vertical shift
    assert int(zero_rows.max()) <= 2 and int(zero_rows.max()) >= 1  # at most 1/8 of 16 px
    cut = cutout(images)
    zeros = (cut == 0).flatten(1).sum(1)
    assert int(zeros.max()) <= 8 * 8 and int(zeros.min()) >= 1  # a half-side square, clipped at borders


def test_a_policy_naming_an_unknown_augmentation_is_refused():
    with pytest.raises(ConfigError, match="unknown augmentation 'flip'"):
        build_model("gan-resnet", {"image_shape": [3, 32, 32], "augment": "color,flip"})


@pytest.mark.parametrize("name", ["gan", "gan-resnet"])
def test_a_conditional_gan_draws_the_classes_it_is_given(name):
    model = build_model(
        name,
        {
            "image_shape": [3, 32, 32],
            "width": 2,
            "latent_dim": 8,
            "ema_decay": 0.0,
            "conditional": True,
            "num_classes": 4,
            "class_names": ["a", "b", "c", "d"],
        },
    )
    assert model.num_classes == 4 and model.class_names == ("a", "b", "c", "d")
    records = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
    with pytest.raises(GenimgError, match="one label per record"):
        train_model(model, records, TrainConfig(steps=1, batch_size=4))
    result = train_model(
        model,
        records,
        TrainConfig(steps=2, batch_size=4, log_every=1, lr=0.01),
        labels=torch.tensor([0, 1, 2, 3, 0, 1, 2, 3]),
    )
    assert result.step == 2
    # (Trained: conditional BatchNorm starts as the identity for every class.)
    z_same = model.sample(2, seed=3, labels=torch.tensor([0, 0]))
    other = model.sample(2, seed=3, labels=torch.tensor([3, 3]))
    assert not torch.allclose(z_same, other)  # the label changes the image for the same noise
    assert torch.equal(model.sample(5, seed=7), model.sample(5, seed=7))  # seeded labels too
    with pytest.raises(GenimgError, match="class labels must be in 0–3"):
        model.sample(1, seed=0, labels=torch.tensor([4]))


def test_a_conditional_gan_needs_classes_and_an_unconditional_one_refuses_labels():
    with pytest.raises(ConfigError, match="is conditional but has 0 classes"):
        build_model("gan-resnet", {"image_shape": [3, 32, 32], "conditional": True})
    with pytest.raises(ConfigError, match="model.num_classes is set but model.conditional is false"):
        build_model("gan", {"image_shape": [3, 32, 32], "num_classes": 3})
    plain = build_model("gan", {"image_shape": [1, 16, 16], "width": 2})
    with pytest.raises(GenimgError, match="is not class-conditional"):
        plain.sample(2, seed=0, labels=torch.tensor([0, 1]))


def test_an_unconditional_dcgan_keeps_its_weight_names():
    """Saved DCGANs from before conditioning existed must still load (strict state dicts)."""
    model = build_model("gan", {"image_shape": [1, 16, 16], "width": 4, "latent_dim": 8})
    keys = set(model.state_dict())
    assert "generator.decoder.project.weight" in keys and "discriminator.encoder.head.weight" in keys
    assert not any("embed" in key or "projection" in key for key in keys)
