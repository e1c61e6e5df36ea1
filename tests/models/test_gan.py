import math

import torch
from torch import nn
from torch.nn import functional as F

from genimg.models import build_model
from tests.conftest import tiny_config


def gan(**extra):
    return build_model("gan", tiny_config("gan", (1, 16, 16), **extra))


def test_generator_minimises_non_saturating_loss():
    model = gan()
    torch.manual_seed(1)
    loss = model.generator_loss(8).total
    torch.manual_seed(1)
    logits = model.discriminator(model.generator(model.noise(8)))
    expected = -torch.log(torch.sigmoid(logits)).mean()  # −log D(G(z)), not log(1 − D(G(z)))
    assert torch.allclose(loss, expected, atol=1e-5)


def test_hinge_and_wgan_losses_follow_their_definitions():
    real = torch.rand(6, 1, 16, 16)
    for loss_type in ("hinge", "wgan-gp"):
        model = gan(loss=loss_type)
        torch.manual_seed(2)
        losses = model.discriminator_loss(real)
        torch.manual_seed(2)
        fake = model.generator(model.noise(6)).detach()
        real_logits = model.discriminator(model.to_model_space(real))
        fake_logits = model.discriminator(fake)
        if loss_type == "hinge":
            expected = F.relu(1 - real_logits).mean() + F.relu(1 + fake_logits).mean()
        else:
            expected = fake_logits.mean() - real_logits.mean() + 10.0 * losses.parts["gradient_penalty"]
        assert torch.allclose(losses.total, expected, atol=1e-5), loss_type


def test_gradient_penalty_vanishes_for_a_unit_norm_linear_critic():
    model = gan(loss="wgan-gp")
    linear = nn.Linear(256, 1, bias=False)
    with torch.no_grad():
        linear.weight.copy_(F.normalize(torch.randn(1, 256), dim=1))

    class LinearCritic(nn.Module):  # a discriminator: images (and labels, unused) → logits
        def __init__(self) -> None:
            super().__init__()
            self.linear = linear

        def forward(self, images, labels=None):
            return self.linear(images.flatten(1)).squeeze(1)

    model.discriminator = LinearCritic()
    penalty = model.gradient_penalty(torch.randn(5, 1, 16, 16), torch.randn(5, 1, 16, 16))
    assert float(penalty.detach()) < 1e-10


def test_spectral_norm_bounds_the_discriminator_layers():
    model = gan(spectral_norm=True)
    for _ in range(20):  # power iterations run on each training-mode forward pass
        model.discriminator(torch.randn(4, 1, 16, 16))
    head = model.discriminator.encoder.head
    sigma = torch.linalg.matrix_norm(head.weight.detach(), ord=2)
    assert math.isclose(float(sigma), 1.0, rel_tol=0.05)


def test_ema_generator_is_an_exponential_average_and_used_for_sampling():
    model = gan(ema_decay=0.9)
    model.ema_updates.fill_(1000)  # past the warm-up, the configured decay applies
    before = [p.clone() for p in model.generator_ema.parameters()]
    with torch.no_grad():
        for p in model.generator.parameters():
            p.add_(1.0)
    model.update_ema()
    for old, ema, live in zip(before, model.generator_ema.parameters(), model.generator.parameters(), strict=True):
        assert torch.allclose(ema, 0.9 * old + 0.1 * live, atol=1e-6)
    with torch.no_grad():
        live_samples = model.to_pixel_space(model.generator.eval()(torch.randn(2, 8)))
    assert not torch.allclose(model.sample(2, seed=0), live_samples)


def test_mlp_gan_has_the_literature_layer_sizes():
    model = build_model("gan-mlp", {"image_shape": [1, 28, 28]})
    g_sizes = [m.out_features for m in model.generator.net if isinstance(m, nn.Linear)]
    d_sizes = [m.out_features for m in model.discriminator.net if isinstance(m, nn.Linear)]
    assert model.generator.net[0].in_features == 100
    assert g_sizes == [128, 128, 1024, 784] and d_sizes == [128, 128, 1]
    assert isinstance(model.generator.net[-1], nn.Sigmoid)


def test_sampling_is_seeded_and_leaves_the_global_rng_alone():
    model = gan()
    torch.manual_seed(5)
    expected_next = torch.rand(1)
    torch.manual_seed(5)
    first = model.sample(4, seed=11)
    assert torch.equal(torch.rand(1), expected_next)
    assert torch.equal(first, model.sample(4, seed=11))
    assert not torch.equal(first, model.sample(4, seed=12))


def test_ema_warm_up_forgets_the_initial_weights_quickly():
    model = gan(ema_decay=0.999)
    with torch.no_grad():
        for p in model.generator.parameters():
            p.fill_(1.0)
    for _ in range(100):
        model.update_ema()
    # A plain 0.999 average would still hold ~90% of the initial weights after 100 updates.
    for ema in model.generator_ema.parameters():
        assert torch.allclose(ema, torch.ones_like(ema), atol=1e-3)
