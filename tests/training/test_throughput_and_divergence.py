"""The loop measures its own steady-state rate and stops a run whose losses are not finite."""

import math

import pytest
import torch

from genimg.errors import TrainingDiverged
from genimg.models import build_model
from genimg.training import TrainConfig, train_model
from genimg.training.checkpoint import list_checkpoints
from tests.conftest import tiny_config


def test_every_log_carries_the_rate_measured_in_the_loop_and_short_runs_have_one(digits):
    model = build_model("vae", tiny_config("vae", (1, 16, 16)))
    result = train_model(model, torch.from_numpy(digits[:256]), TrainConfig(steps=6, batch_size=16, log_every=2))
    rates = [metrics["images_per_second"] for _, metrics in result.history]
    assert len(rates) == 3 and all(math.isfinite(r) and r > 0 for r in rates)
    # A run as short as its first log window still has a steady-state rate (step 1 is untimed).
    short = train_model(
        build_model("vae", tiny_config("vae", (1, 16, 16))),
        torch.from_numpy(digits[:64]),
        TrainConfig(steps=3, batch_size=16, log_every=50),
    )
    assert short.images_per_second > 0 and short.history[-1][1]["images_per_second"] > 0
    # One step has no timed step: no rate rather than a made-up one.
    single = train_model(
        build_model("vae", tiny_config("vae", (1, 16, 16))),
        torch.from_numpy(digits[:64]),
        TrainConfig(steps=1, batch_size=16),
    )
    assert single.images_per_second == 0.0 and "images_per_second" not in single.metrics


def test_the_overall_rate_excludes_the_first_step():
    from genimg.training.loop import Throughput

    meter = Throughput(images_per_step=10)
    meter.step_done(1)  # the clock starts here
    meter.start = (1, meter.start[1] - 100.0)  # as if step 1 ended 100 s ago: steps 2–5 took 100 s
    assert meter.overall(5) == pytest.approx(4 * 10 / 100.0, rel=0.01)


def test_a_run_whose_loss_is_not_finite_stops_with_a_clear_error_and_no_checkpoint(tmp_path, digits):
    model = build_model("vae", tiny_config("vae", (1, 16, 16)))
    config = TrainConfig(steps=40, batch_size=16, lr=1e30, log_every=5, checkpoint_every=20)
    with pytest.raises(TrainingDiverged, match=r"training diverged at step \d+: loss not finite .*train.lr"):
        train_model(model, torch.from_numpy(digits[:256]), config, checkpoint_dir=tmp_path)
    assert list_checkpoints(tmp_path) == []


def test_ranks_stop_together_when_any_rank_diverges(digits):
    model = build_model("vae", tiny_config("vae", (1, 16, 16)))
    calls = []

    def another_rank_diverged(finite: bool) -> bool:
        calls.append(finite)
        return False  # what a MIN all-reduce gives when some other rank's losses are NaN

    with pytest.raises(TrainingDiverged, match="on another rank"):
        train_model(
            model,
            torch.from_numpy(digits[:64]),
            TrainConfig(steps=4, batch_size=16, log_every=2),
            finite_everywhere=another_rank_diverged,
        )
    assert calls == [True]
