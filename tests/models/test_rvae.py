import pytest
import torch

from genimg.models import build_model
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
