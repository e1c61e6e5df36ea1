"""The RGB VAE: the discretized logistic likelihood, NLL in nats and bits per dimension, the
residual architecture at every resolution, and models saved before these options still load."""

import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from genimg.errors import ConfigError
from genimg.models import build_model, load_model, save_model
from genimg.models.base import (
    decoded_mean,
    discretized_logistic_log_prob,
    likelihood_target,
    log_likelihood,
)
from genimg.models.vae import bits_per_dim
from genimg.training.config import TrainConfig
from genimg.training.loop import train_model
from tests.conftest import tiny_config

SAVED_BEFORE = Path(__file__).parent.parent / "fixtures"
LEVELS = torch.arange(256, dtype=torch.float32) / 255


@pytest.mark.parametrize("mean", [-0.3, 0.0, 0.002, 0.5, 0.999, 1.0, 1.4])
@pytest.mark.parametrize("log_scale", [-8.0, -5.0, -2.0, 0.0, 3.0])
def test_discretized_logistic_probabilities_of_the_256_levels_sum_to_one(mean, log_scale):
    log_p = discretized_logistic_log_prob(LEVELS, torch.full((256,), mean), torch.full((256,), log_scale))
    assert bool(torch.isfinite(log_p).all())
    assert float(torch.logsumexp(log_p.double(), 0).exp()) == pytest.approx(1.0, abs=1e-4)


def test_discretized_logistic_is_the_cdf_difference_with_open_end_bins():
    mean, scale = torch.tensor(0.3, dtype=torch.float64), torch.tensor(0.05, dtype=torch.float64)
    cdf = lambda x: torch.sigmoid((x - mean) / scale)  # noqa: E731
    h = 0.5 / 255
    levels = LEVELS.double()
    expected = torch.cat(
        [
            cdf(levels[:1] + h),
            cdf(levels[1:-1] + h) - cdf(levels[1:-1] - h),
            1 - cdf(levels[-1:] - h),
        ]
    )
    log_p = discretized_logistic_log_prob(levels, mean.expand(256), scale.log().expand(256))
    assert torch.allclose(log_p.exp(), expected, atol=1e-12)


def test_discretized_logistic_is_finite_with_finite_gradients_at_the_extremes():
    target = torch.tensor([0.0, 0.0, 1.0, 1.0, 0.5, 0.5, 128 / 255])
    mean = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.0, 0.5, 0.9], requires_grad=True)
    log_scale = torch.full((7,), -8.0, requires_grad=True)
    log_p = discretized_logistic_log_prob(target, mean, log_scale)
    log_p.sum().backward()
    assert bool(torch.isfinite(log_p).all())
    assert bool(torch.isfinite(mean.grad).all() and torch.isfinite(log_scale.grad).all())
    assert float(log_p.detach()[1]) > -0.01 and float(log_p.detach()[3]) > -0.01  # a sharp edge bin holds ~all mass


def test_logistic_targets_are_the_exact_8bit_levels_and_the_decoder_gives_mean_and_scale():
    images = torch.randint(0, 256, (2, 3, 8, 8)).float() / 255
    target = likelihood_target(images, "logistic", binarize=True)
    assert torch.equal(target, torch.round(images * 255) / 255)
    decoded = torch.randn(2, 6, 8, 8)
    assert log_likelihood(target, decoded, "logistic", None).shape == (2,)
    assert torch.equal(decoded_mean(decoded, "logistic"), torch.sigmoid(decoded[:, :3]))


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian", "logistic"])
def test_nll_in_nats_and_bits_per_dim_agree(likelihood):
    shape = (3, 8, 8)
    model = build_model("vae", tiny_config("vae", shape, likelihood=likelihood))
    images = torch.rand(4, *shape)
    nats = model.nll(images, k=4, generator=torch.Generator().manual_seed(0))
    bits = bits_per_dim(nats, shape)
    assert torch.allclose(bits * math.prod(shape) * math.log(2), nats)
    parts = model.loss(images).parts
    assert float(parts["neg_elbo_bits_per_dim"]) == pytest.approx(
        float(parts["neg_elbo"]) / (math.prod(shape) * math.log(2)), rel=1e-5
    )


def colour_gradients(count: int, size: int) -> torch.Tensor:
    """uint8 RGB images of smooth colour gradients: structure a small VAE learns in seconds."""
    y, x = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    colours = torch.rand(count, 3, 1, 1, generator=torch.Generator().manual_seed(0))
    return (255 * (0.5 * colours + 0.25 * (x + y))).round().to(torch.uint8)


@pytest.mark.parametrize(
    ("architecture", "likelihood"), [("conv", "logistic"), ("resnet", "logistic"), ("resnet", "bernoulli")]
)
def test_importance_weighting_tightens_the_bound(architecture, likelihood, digits):
    if likelihood == "logistic":
        records = colour_gradients(64, 8)
    else:
        records = torch.from_numpy(digits[:64])
    model = build_model(
        "vae", tiny_config("vae", tuple(records.shape[1:]), likelihood=likelihood, architecture=architecture)
    )
    # A few steps first, so that the decoder depends on z and the bounds differ by more than noise.
    train_model(model, records, TrainConfig(steps=30, batch_size=32, lr=3e-3, log_every=10))
    images = records.float() / 255
    bounds = [float(model.nll(images, k=k, generator=torch.Generator().manual_seed(0)).mean()) for k in (1, 16, 256)]
    assert bounds[0] > bounds[1] > bounds[2] > 0


def test_logistic_vae_learns_rgb_images_below_the_uniform_8_bits_per_dim():
    # Each pixel value alone is uniform over 128 levels (7 bits): less needs the latent code.
    records = colour_gradients(64, 8)
    model = build_model("vae", tiny_config("vae", (3, 8, 8), likelihood="logistic", architecture="resnet", width=16))
    train_model(model, records, TrainConfig(steps=200, batch_size=32, lr=3e-3, log_every=50))
    images = records.float() / 255
    bits = bits_per_dim(model.nll(images, k=8, generator=torch.Generator().manual_seed(0)), (3, 8, 8))
    assert float(bits.mean()) < 6.9


@pytest.mark.parametrize("size", [32, 64, 128, 256])
@pytest.mark.parametrize(("channels", "likelihood"), [(1, "bernoulli"), (3, "logistic"), (3, "gaussian")])
@pytest.mark.parametrize("architecture", ["conv", "resnet"])
def test_builds_trains_and_samples_at_every_resolution(size, channels, likelihood, architecture):
    shape = (channels, size, size)
    model = build_model(
        "vae",
        tiny_config(
            "vae",
            shape,
            likelihood=likelihood,
            architecture=architecture,
            width=2,
            res_blocks=1,
            decoder_stage_blocks=1,
        ),
    )
    records = torch.randint(0, 256, (4, *shape), dtype=torch.uint8)
    result = train_model(model, records, TrainConfig(steps=2, batch_size=2, log_every=1))
    assert math.isfinite(result.metrics["neg_elbo"])
    samples = model.sample(2, seed=0)
    assert samples.shape == (2, *shape)
    assert 0.0 <= float(samples.min()) and float(samples.max()) <= 1.0
    assert model.reconstruct(records[:2].float() / 255).shape == (2, *shape)


def test_residual_vae_has_no_batch_norm_and_a_wider_decoder_when_asked():
    plain = build_model("vae", tiny_config("vae", (1, 28, 28), architecture="resnet"))
    wide = build_model("vae", tiny_config("vae", (1, 28, 28), architecture="resnet", decoder_width=8))
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in wide.modules())

    def count(module: torch.nn.Module) -> int:
        return sum(p.numel() for p in module.parameters())

    assert count(wide.encoder) == count(plain.encoder)
    assert count(wide.decoder) > 2 * count(plain.decoder)


def test_the_weight_average_trails_training_and_scores_samples_and_saves(tmp_path):
    model = build_model("vae", tiny_config("vae", (1, 16, 16), architecture="resnet", ema_decay=0.99))
    records = torch.randint(0, 256, (16, 1, 16, 16), dtype=torch.uint8)
    train_model(model, records, TrainConfig(steps=20, batch_size=8, lr=1e-2, log_every=10))
    assert int(model.ema_updates) == 20
    live, averaged = model.decoder.project.weight, model.averaged.decoder.project.weight
    assert not averaged.requires_grad and not torch.equal(live, averaged)
    # Scoring and sampling use the average: a model without one, given its weights, agrees.
    plain = build_model("vae", tiny_config("vae", (1, 16, 16), architecture="resnet"))
    plain.load_state_dict(model.averaged.state_dict())
    images = records.float() / 255
    assert torch.equal(model.sample(3, seed=1), plain.sample(3, seed=1))
    assert torch.equal(
        model.nll(images, k=4, generator=torch.Generator().manual_seed(0)),
        plain.nll(images, k=4, generator=torch.Generator().manual_seed(0)),
    )
    model.eval()
    torch.manual_seed(5)
    evaluated = model.loss(images).parts["neg_elbo"]
    torch.manual_seed(5)
    assert torch.equal(evaluated, plain.eval().loss(images).parts["neg_elbo"])
    save_model(model, tmp_path / "m")
    loaded = load_model(tmp_path / "m")
    assert int(loaded.ema_updates) == 20 and torch.equal(loaded.sample(3, seed=1), model.sample(3, seed=1))


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("architecture", "unet"),
        ("decoder_width", -1),
        ("res_blocks", -1),
        ("decoder_stage_blocks", -1),
        ("ema_decay", 1.0),
        ("likelihood", "poisson"),
    ],
)
def test_bad_new_settings_are_refused_naming_the_key(key, value):
    with pytest.raises(ConfigError, match=f"model\\.{key}"):
        build_model("vae", {key: value})


@pytest.mark.parametrize("name", ["vae-before-bernoulli", "vae-before-gaussian"])
def test_a_model_saved_before_the_new_options_loads_and_behaves_the_same(name):
    # Saved by the VAE as it was before these options (config without the new keys); the
    # expected tensors are that code's outputs.
    folder = SAVED_BEFORE / name
    expected = load_file(str(folder / "expected.safetensors"))
    model = load_model(folder)
    assert model.config.architecture == "conv" and not model.config.conditional
    # The same arithmetic as the saved outputs; another CPU's kernels may round the last bit
    # differently (1 ulp measured on AMD EPYC vs the machine that saved them).
    same = {"rtol": 0.0, "atol": 1e-6}
    torch.testing.assert_close(model.sample(3, seed=0), expected["samples"], **same)
    images = expected["images"]
    torch.testing.assert_close(model.reconstruct(images), expected["reconstruction"], **same)
    torch.testing.assert_close(
        model.nll(images, k=8, generator=torch.Generator().manual_seed(2)), expected["nll"], **same
    )
