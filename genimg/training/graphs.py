"""The whole training step recorded once as a CUDA graph and replayed.

At small images a step's arithmetic takes a GPU well under a millisecond, while launching its
hundreds of kernels from Python takes several: the step is bound by the host (issue 16: the `gan`
at 32 × 32, batch 256, took 9.5 ms a step on an H200). A CUDA graph records every kernel of one
step — both optimiser phases of a GAN, the gradient penalty, the Adam updates, the EMA, the
conversion of the uint8 batch to pixels — and a replay launches them all at once.

What recording needs, and how the step provides it:
- no host synchronisation anywhere in the step (tests/training/test_host_syncs.py keeps it so);
- the same shapes and addresses at every replay: each batch is copied into one uint8 buffer (and
  one label buffer) on the device, and turned into pixels inside the graph;
- optimisers whose step counts live on the device (`capturable` Adam);
- autocast without its cache of low-precision weights (it would be filled once, at recording);
- host values that change from step to step enter through device tensors filled before each
  replay: the EMA's weight (`AveragedWeights.fill_replay_weight`);
- random draws (noise, DiffAugment, the penalty's mix) come from the default CUDA generator,
  whose offset a replay advances, so each replay draws afresh.

Not recorded: fp16 (its grad scaler decides on the host whether a step is taken), a multi-process
run (its gradient all-reduce), `train.compile`. The first WARM_UP_STEPS steps run eagerly on a
side stream, as recording requires (lazy initialisation: cuBLAS workspaces, optimiser state,
cuDNN's autotuning); they are ordinary training steps, so a run trains the same steps either way.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from typing import Protocol

import torch
from torch import Tensor

from genimg.errors import ConfigError
from genimg.models.base import GenerativeModel, averaged_weights
from genimg.training.config import TrainConfig
from genimg.training.steps import GradientSync, NoSync, Optimizers, StepContext, to_pixels

WARM_UP_STEPS = 3
log = logging.getLogger(__name__)
StepFunction = Callable[..., dict[str, Tensor]]  # recipe.step(model, optimizers, batch, config, context, labels)


def graph_blockers(config: TrainConfig, device: torch.device, gradient_sync: GradientSync) -> list[str]:
    """What keeps this run's step from being recorded as a CUDA graph (empty: nothing)."""
    return planned_graph_blockers(config, device.type, isinstance(gradient_sync, NoSync))


def planned_graph_blockers(config: TrainConfig, device_type: str, one_process: bool) -> list[str]:
    """The same, from what a request says before any process starts (the device it asks for
    and whether one process trains), so a run that cannot record is refused before it exists."""
    blockers = []
    if device_type != "cuda":
        blockers.append(f"a CUDA device (this run trains on {device_type})")
    if config.precision == "fp16":
        blockers.append("precision fp32 or bf16 (fp16's grad scaler decides on the host whether to step)")
    if not one_process:
        blockers.append("one process (a multi-worker run all-reduces gradients inside the step)")
    if config.compile:
        blockers.append("train.compile off")
    return blockers


def check_required_graph(config: TrainConfig, device_type: str, one_process: bool) -> None:
    """`train.cuda_graph: true` that this run cannot honour: refused (ConfigError)."""
    blockers = planned_graph_blockers(config, device_type, one_process)
    if config.cuda_graph is True and blockers:
        raise ConfigError(
            f"train.cuda_graph: true needs {'; '.join(blockers)} — leave it unset to record the step only where it can"
        )


def uses_cuda_graph(config: TrainConfig, device: torch.device, gradient_sync: GradientSync) -> bool:
    """`train.cuda_graph`: None records the step where it can, true requires it, false never."""
    if config.cuda_graph is False:
        return False
    check_required_graph(config, device.type, isinstance(gradient_sync, NoSync))
    return not graph_blockers(config, device, gradient_sync)


class StepGraph(Protocol):
    """Records a function's device work once and replays it."""

    def warming_up(self) -> contextlib.AbstractContextManager[None]: ...

    def capture(self, record: Callable[[], None]) -> None: ...

    def replay(self) -> None: ...


class CudaStepGraph:
    def __init__(self) -> None:
        self.graph = torch.cuda.CUDAGraph()
        self.side_stream = torch.cuda.Stream()

    @contextlib.contextmanager
    def warming_up(self) -> Iterator[None]:
        self.side_stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(self.side_stream):
            yield
        torch.cuda.current_stream().wait_stream(self.side_stream)

    def capture(self, record: Callable[[], None]) -> None:
        with torch.cuda.graph(self.graph):
            record()

    def replay(self) -> None:
        self.graph.replay()


class GraphedStep:
    """`step(model, optimizers, batch, config, context, labels)` as a function of a batch of uint8
    records (and labels): eager for the first WARM_UP_STEPS calls, then recorded once and replayed.
    Returns the step's logged parts, as the eager step does (copies: the next replay overwrites
    the graph's own).

    If recording fails and the graph was not `required` (train.cuda_graph unset), the run goes on
    eagerly, with a warning naming the error: recording runs no kernel, so no step is lost."""

    def __init__(
        self,
        step: StepFunction,
        model: GenerativeModel,
        optimizers: Optimizers,
        config: TrainConfig,
        context: StepContext,
        device: torch.device,
        graph: StepGraph | None = None,
        required: bool = False,
    ) -> None:
        self.step, self.model, self.optimizers = step, model, optimizers
        self.config, self.context, self.device = config, context, device
        self.graph = graph if graph is not None else CudaStepGraph()
        self.required = required
        self.eager = False  # recording failed: every step runs eagerly
        self.averages = averaged_weights(model)
        self.eager_steps = 0
        self.static_records: Tensor | None = None
        self.static_labels: Tensor | None = None
        self.recorded = False
        self.part_names: list[str] = []
        self.parts: Tensor | None = None  # the recorded step's parts, stacked

    def run_step(self, records: Tensor, labels: Tensor | None) -> dict[str, Tensor]:
        batch = to_pixels(records, self.device, self.config.channels_last)
        return self.step(self.model, self.optimizers, batch, self.config, self.context, labels)

    def __call__(self, records: Tensor, labels: Tensor | None = None) -> dict[str, Tensor]:
        if self.eager or (not self.recorded and self.eager_steps < WARM_UP_STEPS):
            self.eager_steps += 1
            with self.graph.warming_up():
                return self.run_step(records, None if labels is None else labels.to(self.device, non_blocking=True))
        if not self.recorded:
            try:
                self.record(records, labels)
            except Exception as error:
                if self.required:
                    raise
                log.warning(
                    "recording the training step as a CUDA graph failed (%s: %s); training eagerly",
                    type(error).__name__,
                    error,
                )
                self.give_up_recording()
                return self(records, labels)
        assert self.static_records is not None
        if records.shape != self.static_records.shape:
            raise ValueError(
                f"a recorded step takes batches of {tuple(self.static_records.shape)} records, "
                f"got {tuple(records.shape)}"
            )
        self.static_records.copy_(records, non_blocking=True)
        if self.static_labels is not None and labels is not None:
            self.static_labels.copy_(labels, non_blocking=True)
        for average, owner in self.averages:
            average.fill_replay_weight(owner)
        self.graph.replay()
        assert self.parts is not None
        return dict(zip(self.part_names, self.parts.clone().unbind(), strict=True))

    def record(self, records: Tensor, labels: Tensor | None) -> None:
        self.static_records = torch.empty(records.shape, dtype=records.dtype, device=self.device)
        if labels is not None:
            self.static_labels = torch.empty(labels.shape, dtype=labels.dtype, device=self.device)
        for average, _owner in self.averages:
            average.replay_weight = torch.zeros((), device=self.device)

        def record() -> None:
            assert self.static_records is not None
            parts = self.run_step(self.static_records, self.static_labels)
            self.part_names = list(parts)
            self.parts = torch.stack([part.float() for part in parts.values()])

        self.graph.capture(record)
        self.recorded = True

    def give_up_recording(self) -> None:
        self.eager = True
        for average, _owner in self.averages:
            average.replay_weight = None
