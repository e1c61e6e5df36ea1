import numpy as np
import pytest
import torch

from genimg.errors import ConfigError, GenimgError
from genimg.models import build_model
from genimg.training import BatchSchedule, TrainConfig, latest_checkpoint, train_model
from genimg.training.checkpoint import list_checkpoints, load_checkpoint
from genimg.training.state import flatten_state, unflatten_state
from genimg.training.steps import recipe_for
from tests.conftest import tiny_config


def image_records(digits, n=256):
    return torch.from_numpy(digits[:n])


def first_and_last(history, key):
    return history[0][1][key], history[-1][1][key]


@pytest.mark.parametrize("name", ["vae", "rvae"])
def test_likelihood_models_loss_falls_within_50_steps(name, digits, small_sequences):
    records = image_records(digits) if name == "vae" else torch.from_numpy(small_sequences)
    shape = (1, 16, 16)
    model = build_model(name, tiny_config(name, shape, width=8))
    result = train_model(model, records, TrainConfig(steps=50, batch_size=16, log_every=10, lr=3e-3))
    start, end = first_and_last(result.history, "loss")
    assert end < 0.8 * start, (start, end)


@pytest.mark.parametrize(
    ("name", "extra"),
    [("gan", {}), ("gan", {"loss": "hinge", "spectral_norm": True}), ("gan", {"loss": "wgan-gp"}), ("gan-mlp", {})],
)
def test_gan_discriminator_loss_falls_and_samples_approach_the_data(name, extra, digits):
    records = image_records(digits)
    if name == "gan":
        extra = {"width": 8, "latent_dim": 16, **extra}
    # A short EMA horizon: the default 0.999 averages over more steps than this test runs.
    model = build_model(name, tiny_config(name, (1, 16, 16), ema_decay=0.8, **extra))
    data_mean = records.float().mean(0) / 255

    def mean_image_error() -> float:
        return float((model.sample(256, seed=0).mean(0) - data_mean).abs().mean())

    error_before = mean_image_error()
    result = train_model(model, records, TrainConfig(steps=80, batch_size=32, log_every=10, lr=1e-3))
    d_losses = [metrics["d_loss"] for _, metrics in result.history]
    # D's loss need not fall monotonically (G catches up), but D must learn at first …
    assert min(d_losses) < d_losses[0], d_losses
    # … and G must move towards the data: its mean image nears the data's mean image.
    assert mean_image_error() < 0.85 * error_before


@pytest.mark.parametrize("name", ["gan-mlp", "gan", "vae", "rvae"])
def test_resume_equals_an_uninterrupted_run(tmp_path, name, digits, small_sequences):
    records = image_records(digits, 96) if name != "rvae" else torch.from_numpy(small_sequences)
    config = TrainConfig(steps=12, batch_size=16, checkpoint_every=100, seed=7)

    def run(steps, checkpoint_dir=None, resume=False):
        torch.manual_seed(0)
        model = build_model(name, tiny_config(name, (1, 16, 16)))
        cfg = TrainConfig(**{**config.__dict__, "steps": steps})
        result = train_model(model, records, cfg, checkpoint_dir=checkpoint_dir, resume=resume)
        return model, result

    uninterrupted, _ = run(12)
    run(5, tmp_path)  # "interrupted" after 5 steps, checkpoint at the end
    resumed, result = run(12, tmp_path, resume=True)
    assert result.resumed_from_step == 5 and result.step == 12
    for (key, a), b in zip(uninterrupted.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), key


def test_checkpoints_keep_the_last_n_and_hold_the_full_state(tmp_path, digits):
    model = build_model("gan", tiny_config("gan", (1, 16, 16)))
    config = TrainConfig(steps=10, batch_size=8, checkpoint_every=2, keep_checkpoints=3)
    train_model(model, image_records(digits, 64), config, checkpoint_dir=tmp_path)
    assert [c.step for c in list_checkpoints(tmp_path)] == [6, 8, 10]
    assert latest_checkpoint(tmp_path).step == 10
    fresh = build_model("gan", tiny_config("gan", (1, 16, 16)))
    optimizers = recipe_for(fresh).make_optimizers(fresh, config)
    state = load_checkpoint(latest_checkpoint(tmp_path).path, fresh, optimizers)
    assert state["step"] == 10 and set(state["optimizers"]) == {"generator", "discriminator"}
    assert optimizers["generator"].state_dict()["state"][0]["exp_avg"].abs().sum() > 0
    for a, b in zip(model.generator_ema.parameters(), fresh.generator_ema.parameters(), strict=True):
        assert torch.equal(a, b)


def test_a_half_written_checkpoint_is_never_picked(tmp_path, digits):
    model = build_model("vae", tiny_config("vae", (1, 16, 16)))
    train_model(model, image_records(digits, 64), TrainConfig(steps=2, batch_size=8), checkpoint_dir=tmp_path)
    (tmp_path / ".staging-step-00000009-1").mkdir()
    (tmp_path / "step-00000010").mkdir()  # no state.json: an interrupted copy
    assert latest_checkpoint(tmp_path).step == 2


def test_loading_another_models_checkpoint_is_refused(tmp_path, digits):
    model = build_model("vae", tiny_config("vae", (1, 16, 16)))
    train_model(model, image_records(digits, 64), TrainConfig(steps=1, batch_size=8), checkpoint_dir=tmp_path)
    other = build_model("gan", tiny_config("gan", (1, 16, 16)))
    optimizers = recipe_for(other).make_optimizers(other, TrainConfig())
    with pytest.raises(GenimgError, match="is for model vae, not gan"):
        load_checkpoint(latest_checkpoint(tmp_path).path, other, optimizers)


def test_state_round_trip_keeps_int_keys_tuples_and_dtypes():
    state = {
        "optimizer": {"state": {0: {"step": torch.tensor(3.0)}, 1: {}}, "param_groups": [{"betas": (0.5, 0.9)}]},
        "numpy": ("MT19937", np.arange(5, dtype=np.uint32), 2, 0, 0.0),
        "python": (3, (1, 2, 3), None),
    }
    tensors = {}
    restored = unflatten_state(flatten_state(state, tensors), tensors)
    assert list(restored["optimizer"]["state"]) == [0, 1]
    assert restored["optimizer"]["param_groups"][0]["betas"] == (0.5, 0.9)
    assert restored["numpy"][1].dtype == np.uint32 and restored["numpy"][1].tolist() == [0, 1, 2, 3, 4]
    assert restored["python"] == (3, (1, 2, 3), None)


def test_batch_schedule_visits_every_record_once_per_epoch_and_is_stateless():
    schedule = BatchSchedule(num_records=10, batch_size=3, seed=1)
    assert schedule.batches_per_epoch == 3
    epoch = torch.cat([schedule.indices(s) for s in range(3)])
    assert len(set(epoch.tolist())) == 9  # drop_last: one record waits for the next epoch
    fresh = BatchSchedule(10, 3, seed=1)
    assert torch.equal(fresh.indices(4), schedule.indices(4))
    assert not torch.equal(BatchSchedule(10, 3, seed=2).indices(4), schedule.indices(4))
    assert schedule.steps_for_epochs(2) == 6


@pytest.mark.parametrize(
    ("values", "key"), [({"steps": -1}, "train.steps"), ({"lr": 0}, "train.lr"), ({"betas": (0.5, 1.5)}, "train.betas")]
)
def test_bad_train_config_names_the_key(values, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        TrainConfig(**values)


@pytest.mark.parametrize("name", ["gan", "vae"])
def test_bf16_autocast_and_channels_last_train_on_cpu(name, digits):
    model = build_model(name, tiny_config(name, (1, 16, 16)))
    config = TrainConfig(steps=3, batch_size=8, log_every=1, precision="bf16", channels_last=True)
    result = train_model(model, image_records(digits, 32), config)
    assert result.step == 3
    assert all(np.isfinite(list(metrics.values())).all() for _, metrics in result.history)


def test_fp16_grad_scaler_state_is_checkpointed(tmp_path, digits):
    model = build_model("vae", tiny_config("vae", (1, 16, 16)))
    config = TrainConfig(steps=2, batch_size=8, precision="fp16")
    train_model(model, image_records(digits, 32), config, checkpoint_dir=tmp_path)
    from genimg.training.checkpoint import read_state

    state = read_state(latest_checkpoint(tmp_path).path, "state")
    assert state["scaler"]["scale"] > 0 and "_growth_tracker" in state["scaler"]
