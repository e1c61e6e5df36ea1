"""A training step asks nothing of the device: values come back to the host only at log and
checkpoint steps. Counted on the CPU by patching what reads a tensor's value into Python (on a
GPU each of these waits for every kernel queued before it). Reads made inside torch.optim are
not counted: they are of Adam's step counters, which live on the host on a GPU too (and the
fused Adam used there reads none)."""

import sys

import pytest
import torch

from genimg.models import build_model
from genimg.training import TrainConfig, train_model
from tests.conftest import tiny_config

READS = ("item", "tolist", "__int__", "__float__", "__bool__", "numpy")
CASES = {
    "gan-mlp": {},
    "gan-resnet-conditional": {
        "width": 2,
        "latent_dim": 8,
        "augment": "translation",
        "conditional": True,
        "num_classes": 10,
    },
    "rvae": {},
    "gan": {"ema_decay": 0.99},
    "gan-diffaugment-hinge": {"ema_decay": 0.99, "augment": "color,translation,cutout", "loss": "hinge"},
    "gan-conditional": {"conditional": True, "num_classes": 10},
    "vae": {"ema_decay": 0.99},
    "vae-conditional": {"conditional": True, "num_classes": 10},
}


@pytest.fixture
def reads(monkeypatch):
    """Names of the tensor reads made, in order."""
    made: list[str] = []
    for name in READS:
        real = getattr(torch.Tensor, name)

        def counting(self, *args, _real=real, _name=name, **kwargs):
            if "torch/optim/" not in sys._getframe(1).f_code.co_filename:
                made.append(_name)
            return _real(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counting)
    return made


def case_training(case: str, digits, sequences, images: int = 128):
    """(model, records, labels) of a case: 16 × 16 digits, or the sequences for the rvae."""
    name = case.split("-conditional")[0].split("-diffaugment")[0]
    config = (
        {"image_shape": [1, 16, 16], **CASES[case]}
        if name == "gan-resnet"
        else tiny_config(name, (1, 16, 16), **CASES[case])
    )
    model = build_model(name, config)
    records = torch.from_numpy(sequences if name == "rvae" else digits[:images])
    return model, records, torch.arange(len(records)) % 10 if model.num_classes else None


def train_and_count(case: str, steps: int, digits, reads: list[str], sequences=None) -> int:
    model, records, labels = case_training(case, digits, sequences)
    before = len(reads)
    # One log, at the last step; no checkpoint folder.
    train_model(
        model, records, TrainConfig(steps=steps, batch_size=16, log_every=1000, checkpoint_every=1000), labels=labels
    )
    return len(reads) - before


@pytest.mark.parametrize("case", sorted(CASES))
def test_steps_between_logs_read_nothing_back_from_the_device(case, digits, small_sequences, reads):
    short = train_and_count(case, 2, digits, reads, small_sequences)
    long = train_and_count(case, 9, digits, reads, small_sequences)
    assert long == short, f"{long - short} reads in 7 more steps: {reads[-(long - short) :]}"


def test_the_count_catches_a_read_per_step(digits, reads, monkeypatch):
    """The check above can fail: a step that reads a loss back is counted."""
    from genimg.training import steps

    real = steps.likelihood_step

    def reading_step(*args, **kwargs):
        parts = real(*args, **kwargs)
        float(parts["loss"])
        return parts

    monkeypatch.setitem(steps.RECIPES, "vae", steps.Recipe(steps.likelihood_optimizers, reading_step))
    assert train_and_count("vae", 9, digits, reads) - train_and_count("vae", 2, digits, reads) == 7


# Operators whose output size depends on the data: on a GPU each reads a value back before it
# can allocate (bincount its largest input, nonzero / masked_select / a boolean index their
# count), a wait that a CUDA graph cannot record either. Seen at the dispatcher, below Python.
SIZE_FROM_DATA = {
    "bincount",
    "nonzero",
    "masked_select",
    "unique_consecutive",
    "_unique",
    "_unique2",
    "unique_dim",
    "repeat_interleave",
    "histc",
}


class SizeFromDataOps(torch.utils._python_dispatch.TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.seen: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        bool_index = name in ("index", "index_put_", "index_put") and any(
            isinstance(index, torch.Tensor) and index.dtype == torch.bool for index in (args[1] or ())
        )
        if name in SIZE_FROM_DATA or bool_index:
            self.seen.append(name)
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("case", sorted(CASES))
def test_no_step_calls_an_operator_whose_size_comes_from_the_data(case, digits, small_sequences):
    model, records, labels = case_training(case, digits, small_sequences, images=64)
    with SizeFromDataOps() as mode:
        train_model(
            model, records, TrainConfig(steps=2, batch_size=16, log_every=1000, checkpoint_every=1000), labels=labels
        )
    assert mode.seen == []


def test_the_operator_check_sees_a_bincount():
    with SizeFromDataOps() as mode:
        torch.bincount(torch.tensor([0, 2]), minlength=4)
        torch.ones(3)[torch.tensor([True, False, True])]
    assert mode.seen == ["bincount", "index"]
