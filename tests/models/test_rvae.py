import pytest
import torch

from genimg.errors import ConfigError
from genimg.models import build_model
from genimg.models.base import load_model, save_model
from tests.conftest import tiny_config


@pytest.fixture
def rvae():
    return build_model("rvae", tiny_config("rvae", (1, 16, 16), num_frames=6))


def test_continuation_keeps_the_given_frames_and_fills_the_rest(rvae, small_sequences):
    context = torch.from_numpy(small_sequences[:3, :2]).float() / 255
    continued = rvae.continue_sequence(context, num_frames=6, seed=0)
    assert continued.shape == (3, 6, 1, 16, 16)
    assert torch.equal(continued[:, :2], context)
    assert torch.equal(continued, rvae.continue_sequence(context, num_frames=6, seed=0))
    assert not torch.equal(continued[:, 2:], rvae.continue_sequence(context, 6, seed=1)[:, 2:])


def test_continuation_refuses_mismatched_frames(rvae):
    with pytest.raises(ValueError, match="expected sequences of shape"):
        rvae.continue_sequence(torch.rand(2, 3, 3, 16, 16), num_frames=6)
    with pytest.raises(ValueError, match="more than num_frames"):
        rvae.continue_sequence(torch.rand(2, 4, 1, 16, 16), num_frames=3)


def test_prior_is_learned_per_step_not_fixed(rvae, small_sequences):
    sequences = torch.from_numpy(small_sequences[:4]).float() / 255
    h = rvae.embed_frames(sequences)
    h_prev = torch.cat([rvae.start.expand(4, 1, -1), h[:, :-1]], dim=1)
    mu_p, logvar_p, _ = rvae.prior(h_prev)
    assert mu_p.shape == (4, 6, 4)
    assert mu_p.std(dim=1).mean() > 0  # the prior moves with the sequence's past


def test_loss_is_the_sum_of_per_step_terms(rvae, small_sequences):
    sequences = torch.from_numpy(small_sequences[:4]).float() / 255
    torch.manual_seed(3)
    losses = rvae.loss(sequences)
    torch.manual_seed(3)
    reconstruction, kl = rvae.step_terms(sequences)
    assert torch.allclose(losses.total, (reconstruction + kl).sum(1).mean())


def spatial_rvae(**overrides):
    config = {
        "image_shape": (1, 16, 16),
        "num_frames": 6,
        "core": "convlstm",
        "context_frames": 3,
        "latent_dim": 2,
        "frame_dim": 8,
        "hidden_dim": 8,
        "width": 4,
        **overrides,
    }
    return build_model("rvae", config)


def test_the_convlstm_core_trains_and_continues_given_frames(small_sequences):
    torch.manual_seed(0)
    model = spatial_rvae()
    sequences = torch.from_numpy(small_sequences[:4]).float() / 255.0
    losses = model.loss(sequences)
    losses.total.backward()
    assert torch.isfinite(losses.total)
    assert all(p.grad is not None for p in model.parameters())  # every network takes part
    reconstruction, kl = model.step_terms(sequences)
    assert reconstruction.shape == kl.shape == (4, 6) and (kl >= 0).all()
    continued = model.continue_sequence(sequences[:, :3], num_frames=6, seed=0)
    assert continued.shape == (4, 6, 1, 16, 16) and torch.equal(continued[:, :3], sequences[:, :3])
    assert 0 <= continued.min() and continued.max() <= 1
    assert torch.equal(continued, model.continue_sequence(sequences[:, :3], num_frames=6, seed=0))
    assert not torch.equal(continued[:, 3:], model.continue_sequence(sequences[:, :3], 6, seed=1)[:, 3:])
    assert model.sample(2, seed=0).shape == (2, 6, 1, 16, 16)


def test_a_convlstm_rvae_saves_and_loads_with_its_core(tmp_path, small_sequences):
    model = spatial_rvae()
    save_model(model, tmp_path)
    loaded = load_model(tmp_path)
    assert loaded.config.core == "convlstm" and loaded.config.context_frames == 3
    context = torch.from_numpy(small_sequences[:2, :3]).float() / 255.0
    assert torch.equal(loaded.continue_sequence(context, 6, seed=0), model.continue_sequence(context, 6, seed=0))


def test_the_convlstm_core_refuses_sides_it_cannot_quarter():
    with pytest.raises(ConfigError, match="divisible by 4"):
        build_model("rvae", {"image_shape": (1, 18, 18), "core": "convlstm"})
    with pytest.raises(ConfigError, match="model.core"):
        build_model("rvae", {"image_shape": (1, 16, 16), "core": "gru"})
    with pytest.raises(ConfigError, match="context_frames"):
        build_model("rvae", {"image_shape": (1, 16, 16), "core": "convlstm", "context_frames": 0})
