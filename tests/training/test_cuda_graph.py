"""The recorded training step (genimg.training.graphs) on the CPU.

A CPU has no CUDA graphs, so `ReplayedClosure` stands in for one: recording keeps the step's
function and each replay runs it again on the same buffers. That checks what the runner adds
around a graph — warm-up steps, the batch and labels copied into fixed buffers, the EMA weight
filled before each replay, the logged parts handed back — against the eager step, bit for bit.
What only a GPU shows (the kernels recorded once) bench/gpu_check.sh measures."""

import contextlib

import pytest
import torch

from genimg.errors import ConfigError
from genimg.models import build_model
from genimg.models.base import averaged_weights
from genimg.training import TrainConfig, train_model
from genimg.training.graphs import WARM_UP_STEPS, GraphedStep, graph_blockers, uses_cuda_graph
from genimg.training.steps import make_step_context, no_sync, recipe_for, to_pixels
from tests.conftest import tiny_config

CPU = torch.device("cpu")


class ReplayedClosure:
    def __init__(self) -> None:
        self.recorded = None
        self.replays = 0

    def warming_up(self):
        return contextlib.nullcontext()

    def capture(self, record) -> None:
        self.recorded = record  # a CUDA graph records the kernels without running them

    def replay(self) -> None:
        self.replays += 1
        self.recorded()


class FailingCapture(ReplayedClosure):
    """A step the device refuses to record (as CUDA does when the step reads a value back)."""

    def capture(self, record) -> None:
        raise RuntimeError("operation not permitted when stream is capturing")


CASES = {
    "gan": {"ema_decay": 0.99, "augment": "color,translation,cutout", "conditional": True, "num_classes": 10},
    "gan-wgan-gp": {"loss": "wgan-gp", "ema_decay": 0.9},
    "vae": {"ema_decay": 0.99, "conditional": True, "num_classes": 10},
    "rvae": {},
}


def built(case: str):
    name = case.split("-wgan")[0]
    torch.manual_seed(0)
    return build_model(name, tiny_config(name, (1, 16, 16), **CASES[case]))


def batches(case: str, digits, sequences, steps: int, batch_size: int = 8):
    records = torch.from_numpy(sequences if case == "rvae" else digits[: steps * batch_size])
    generator = torch.Generator().manual_seed(1)
    for _ in range(steps):
        picked = torch.randint(0, len(records), (batch_size,), generator=generator)
        yield records[picked], (picked % 10 if case in ("gan", "vae") else None)


def eager_and_runner_parts(case, digits, sequences, graph, required=False):
    """(parts of the eager steps, parts the runner returned, the two models) over the same batches."""
    steps, config = WARM_UP_STEPS + 4, TrainConfig(batch_size=8)
    eager, replayed = built(case), built(case)
    recipe = recipe_for(eager)
    eager_optimizers = recipe.make_optimizers(eager, config)
    context = make_step_context("fp32", CPU)
    torch.manual_seed(5)
    eager_parts = [
        recipe.step(eager, eager_optimizers, to_pixels(records, CPU, False), config, context, labels)
        for records, labels in batches(case, digits, sequences, steps)
    ]
    runner = GraphedStep(
        recipe.step,
        replayed,
        recipe.make_optimizers(replayed, config),
        config,
        make_step_context("fp32", CPU, graphed=True),
        CPU,
        graph,
        required=required,
    )
    torch.manual_seed(5)
    runner_parts = [runner(records, labels) for records, labels in batches(case, digits, sequences, steps)]
    return eager_parts, runner_parts, eager, replayed


def assert_same_training(eager_parts, runner_parts, eager, replayed) -> None:
    for expected, got in zip(eager_parts, runner_parts, strict=True):
        assert expected.keys() == got.keys()
        assert all(torch.equal(expected[key].float(), got[key].float()) for key in expected)
    eager_state, replayed_state = eager.state_dict(), replayed.state_dict()
    assert eager_state.keys() == replayed_state.keys()
    different = [key for key in eager_state if not torch.equal(eager_state[key], replayed_state[key])]
    assert different == []


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_recorded_and_replayed_step_trains_as_the_eager_step(case, digits, small_sequences):
    graph = ReplayedClosure()
    *trained, eager, replayed = eager_and_runner_parts(case, digits, small_sequences, graph)
    assert graph.replays == 4
    assert_same_training(*trained, eager, replayed)


def test_a_step_that_cannot_be_recorded_trains_eagerly_unless_the_graph_is_required(digits, small_sequences, caplog):
    graph = FailingCapture()
    *trained, eager, replayed = eager_and_runner_parts("gan", digits, small_sequences, graph)
    assert graph.replays == 0
    assert_same_training(*trained, eager, replayed)
    assert "CUDA graph failed (RuntimeError: operation not permitted" in caplog.text
    assert all(average.replay_weight is None for average, _ in averaged_weights(replayed))
    with pytest.raises(RuntimeError, match="not permitted"):
        eager_and_runner_parts("gan", digits, small_sequences, FailingCapture(), required=True)


def test_a_replayed_ema_update_takes_its_weight_from_the_device_not_the_host():
    """In a graph the update's code ran once, at recording: the weight of each replay must come
    from the tensor filled before it, and the host's count must move once per step."""
    model = built("gan")
    ((average, owner),) = averaged_weights(model)
    average.replay_weight = torch.zeros(())
    average.fill_replay_weight(owner)
    counted = average.host_updates
    with torch.no_grad():
        model.generator_ema.decoder.project.weight.zero_()
    average.replay_weight.fill_(0.5)  # whatever the host would say
    model.update_ema()
    assert average.host_updates == counted
    live = model.generator.decoder.project.weight
    assert torch.equal(model.generator_ema.decoder.project.weight, live * 0.5)
    assert int(model.ema_updates) == 1


def test_the_setting_records_where_it_can_and_fails_clearly_where_it_cannot():
    assert not uses_cuda_graph(TrainConfig(), CPU, no_sync)  # unset: eager on a CPU
    assert not uses_cuda_graph(TrainConfig(cuda_graph=False), torch.device("cuda"), no_sync)
    gpu_blockers = graph_blockers(TrainConfig(precision="fp16", compile=True), torch.device("cuda"), object())
    assert [reason.split(" (")[0] for reason in gpu_blockers] == [
        "precision fp32 or bf16",
        "one process",
        "train.compile off",
    ]
    assert graph_blockers(TrainConfig(precision="bf16"), torch.device("cuda"), no_sync) == []
    with pytest.raises(ConfigError, match="train.cuda_graph: true needs a CUDA device"):
        uses_cuda_graph(TrainConfig(cuda_graph=True), CPU, no_sync)


def test_training_that_requires_a_graph_on_a_cpu_stops_before_it_starts(digits):
    model = built("gan")
    before = {key: value.clone() for key, value in model.state_dict().items()}
    with pytest.raises(ConfigError, match="cuda_graph"):
        train_model(
            model,
            torch.from_numpy(digits[:32]),
            TrainConfig(steps=2, batch_size=8, cuda_graph=True),
            labels=torch.arange(32) % 10,
        )
    assert all(torch.equal(before[key], value) for key, value in model.state_dict().items())
