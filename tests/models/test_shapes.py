import pytest
import torch

from genimg.errors import ConfigError
from genimg.models import build_model
from tests.conftest import tiny_config

IMAGE_CASES = [
    ("gan-mlp", (1, 16, 16)),
    ("gan-mlp", (3, 8, 8)),
    ("gan", (1, 8, 8)),
    ("gan", (3, 16, 16)),
    ("gan", (1, 28, 28)),
    ("gan", (3, 32, 32)),
    ("gan", (1, 64, 64)),
    ("vae", (1, 16, 16)),
    ("vae", (3, 32, 32)),
    ("vae", (1, 28, 28)),
]


@pytest.mark.parametrize(("name", "shape"), IMAGE_CASES)
def test_image_models_sample_and_score_their_shape(name, shape):
    model = build_model(name, tiny_config(name, shape))
    samples = model.sample(5, seed=0)
    assert samples.shape == (5, *shape)
    assert 0.0 <= float(samples.min()) and float(samples.max()) <= 1.0
    batch = torch.rand(4, *shape)
    if name.startswith("gan"):
        assert model.discriminator(model.to_model_space(batch)).shape == (4,)
        assert torch.isfinite(model.discriminator_loss(batch).total)
    else:
        assert model.loss(batch).total.dim() == 0


@pytest.mark.parametrize("channels", [1, 3])
def test_rvae_generates_sequences_for_1_and_3_channels(channels):
    model = build_model("rvae", tiny_config("rvae", (channels, 16, 16), num_frames=7))
    assert model.sample(3, seed=0).shape == (3, 7, channels, 16, 16)
    assert model.sample(2, seed=0, num_frames=4).shape == (2, 4, channels, 16, 16)
    reconstruction, kl = model.step_terms(torch.rand(2, 5, channels, 16, 16))
    assert reconstruction.shape == kl.shape == (2, 5)
    assert bool((kl >= 0).all())


@pytest.mark.parametrize(
    ("name", "values", "key"),
    [
        ("gan", {"image_shape": [1, 4, 4]}, "model.image_shape"),
        ("gan", {"image_shape": [1, 512, 512]}, "model.image_shape"),
        ("gan", {"augment": "color,flip"}, "model.augment"),
        ("gan", {"image_shape": [2, 16, 16]}, "model.image_shape"),
        ("gan", {"loss": "minimax"}, "model.loss"),
        ("vae", {"latent_dim": 0}, "model.latent_dim"),
        ("vae", {"likelihood": "poisson"}, "model.likelihood"),
        ("gan-mlp", {"generator_hidden": []}, "model.generator_hidden"),
        ("rvae", {"lstm_layers": 2}, "model.lstm_layers"),
    ],
)
def test_bad_model_config_is_refused_naming_the_key(name, values, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        build_model(name, values)


def test_unknown_model_name_lists_the_known_ones():
    with pytest.raises(ConfigError, match="unknown model 'gan2'.*gan-mlp.*rvae.*vae"):
        build_model("gan2")


@pytest.mark.parametrize("side", [32, 64, 128, 256])
@pytest.mark.parametrize("channels", [1, 3])
def test_gan_mlp_and_rvae_train_and_sample_at_every_size(side, channels):
    """The two families the conv-GAN and VAE tests do not cover, at 32–256 px, grey and RGB."""
    from genimg.training.config import TrainConfig
    from genimg.training.loop import train_model

    shape = (channels, side, side)
    gan_mlp = build_model("gan-mlp", tiny_config("gan-mlp", shape, generator_hidden=[4], discriminator_hidden=[4]))
    train_model(gan_mlp, torch.randint(0, 256, (4, *shape), dtype=torch.uint8), TrainConfig(steps=2, batch_size=2))
    assert gan_mlp.sample(2, seed=0).shape == (2, *shape)
    rvae = build_model("rvae", tiny_config("rvae", shape, num_frames=3, width=2))
    train_model(rvae, torch.randint(0, 256, (2, 3, *shape), dtype=torch.uint8), TrainConfig(steps=2, batch_size=2))
    frames = rvae.sample(1, seed=0)
    assert frames.shape == (1, 3, *shape) and 0.0 <= float(frames.min()) and float(frames.max()) <= 1.0
