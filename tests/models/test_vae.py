import math

import torch

from genimg.models import build_model
from genimg.models.base import likelihood_target
from tests.conftest import tiny_config


def test_dynamic_binarisation_draws_zeros_and_ones_with_pixel_probability():
    images = torch.full((200, 1, 16, 16), 0.3)
    target = likelihood_target(images, "bernoulli", binarize=True)
    assert set(target.unique().tolist()) == {0.0, 1.0}
    assert abs(float(target.mean()) - 0.3) < 0.01
    assert torch.equal(likelihood_target(images, "bernoulli", binarize=False), images)


def test_importance_weighting_tightens_the_bound_and_is_repeatable(digits):
    model = build_model("vae", tiny_config("vae", (1, 16, 16)))
    images = torch.from_numpy(digits[:64]).float() / 255
    nll_1 = model.nll(images, k=1, generator=torch.Generator().manual_seed(0))
    nll_64 = model.nll(images, k=64, generator=torch.Generator().manual_seed(0))
    again = model.nll(images, k=64, generator=torch.Generator().manual_seed(0))
    assert nll_64.shape == (64,)
    assert torch.equal(nll_64, again)
    assert float(nll_64.mean()) < float(nll_1.mean())
    assert float(nll_64.min()) > 0


def test_gaussian_nll_is_in_nats_of_the_8bit_data():
    shape = (3, 8, 8)
    model = build_model("vae", tiny_config("vae", shape, likelihood="gaussian"))
    images = torch.rand(4, *shape)
    nll = model.nll(images, k=4, generator=torch.Generator().manual_seed(0))
    # A bound on −log P(x) of discrete data can never be negative; the uniform model's is D·log 256.
    assert bool((nll > 0).all())
    assert float(nll.mean()) < 10 * math.prod(shape) * math.log(256)


def test_beta_weights_only_the_kl_term():
    model = build_model("vae", tiny_config("vae", (1, 16, 16), binarize=False))
    images = torch.rand(8, 1, 16, 16)
    torch.manual_seed(0)
    plain = model.loss(images)
    weighted = build_model("vae", tiny_config("vae", (1, 16, 16), binarize=False, beta=4.0))
    weighted.load_state_dict(model.state_dict())
    torch.manual_seed(0)
    heavy = weighted.loss(images)
    assert torch.allclose(heavy.total, plain.parts["recon"] + 4.0 * plain.parts["kl"], atol=1e-3)
