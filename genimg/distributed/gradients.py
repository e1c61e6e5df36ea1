"""Gradient averaging across data-parallel ranks, overlapped with the backward pass.

What DistributedDataParallel does, for any group of parameters (a GAN updates its discriminator
and its generator in two phases, each its own backward pass): the group is cut into buckets of
about BUCKET_BYTES, last layers first (the order backward produces their gradients); a hook on
each parameter counts the gradients that have arrived, and as soon as a bucket is complete its
all-reduce starts, asynchronously, while backward goes on with the earlier layers. `finish` waits
for them and writes the mean back. Buckets start in the same order on every rank (a bucket whose
gradients come early waits for the ones before it), as collectives must.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

BUCKET_BYTES = 25 * 1024 * 1024  # DDP's default bucket size
# DDP's first bucket (the last layers, whose gradients come first): small, so the first
# all-reduce starts early in backward, even for a network smaller than one full bucket.
FIRST_BUCKET_BYTES = 1024 * 1024


def write_mean(grads: list[Tensor], summed: Tensor) -> None:
    """Write the ranks' mean back into `grads` from their all-reduced sum, flattened in order."""
    summed /= dist.get_world_size()
    offset = 0
    for grad in grads:
        count = grad.numel()
        grad.copy_(summed[offset : offset + count].view_as(grad))
        offset += count


def allreduce_mean(parameters: Sequence[nn.Parameter]) -> None:
    """Average gradients across ranks with one flat, blocking all-reduce (after backward)."""
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    write_mean(grads, flat)


class BlockingAllReduce:
    """allreduce_mean as a GradientSync: nothing starts before backward has finished."""

    def start(self, parameters: Sequence[nn.Parameter]) -> None:
        return None

    def finish(self, parameters: Sequence[nn.Parameter]) -> None:
        allreduce_mean(parameters)


class OverlappedAllReduce:
    """A GradientSync whose all-reduces run during the backward pass (bucketed, in order)."""

    def __init__(self, bucket_bytes: int = BUCKET_BYTES, first_bucket_bytes: int = FIRST_BUCKET_BYTES) -> None:
        self.bucket_bytes = bucket_bytes
        self.first_bucket_bytes = min(first_bucket_bytes, bucket_bytes)
        self.plans: dict[tuple[int, ...], list[list[nn.Parameter]]] = {}
        self.hooked: set[int] = set()
        self.buckets: list[list[nn.Parameter]] = []
        self.bucket_of: dict[int, int] = {}
        self.arrived: list[int] = []
        self.pending: list[tuple[list[Tensor], Tensor, Any]] = []
        self.next_bucket = 0
        self.armed = False
        self.started_in_backward = 0  # buckets whose all-reduce began before `finish` (overlap)

    def plan(self, parameters: Sequence[nn.Parameter]) -> list[list[nn.Parameter]]:
        key = tuple(id(p) for p in parameters)
        if key not in self.plans:
            buckets: list[list[nn.Parameter]] = [[]]
            size = 0
            for parameter in reversed(parameters):
                if size >= (self.first_bucket_bytes if len(buckets) == 1 else self.bucket_bytes):
                    buckets.append([])
                    size = 0
                buckets[-1].append(parameter)
                size += parameter.numel() * parameter.element_size()
            self.plans[key] = [bucket for bucket in buckets if bucket]
            for parameter in parameters:
                if id(parameter) not in self.hooked:
                    parameter.register_post_accumulate_grad_hook(self.on_gradient)
                    self.hooked.add(id(parameter))
        return self.plans[key]

    def start(self, parameters: Sequence[nn.Parameter]) -> None:
        self.buckets = self.plan(parameters)
        self.bucket_of = {id(p): index for index, bucket in enumerate(self.buckets) for p in bucket}
        self.arrived = [0] * len(self.buckets)
        self.pending, self.next_bucket, self.armed = [], 0, True

    def on_gradient(self, parameter: nn.Parameter) -> None:
        index = self.bucket_of.get(id(parameter)) if self.armed else None
        if index is None:  # not in the group being averaged (or no backward of ours)
            return
        self.arrived[index] += 1
        while self.next_bucket < len(self.buckets) and self.arrived[self.next_bucket] == len(
            self.buckets[self.next_bucket]
        ):
            self.launch(self.next_bucket)
            self.started_in_backward += 1

    def launch(self, index: int) -> None:
        grads = [p.grad for p in self.buckets[index] if p.grad is not None]
        self.next_bucket = index + 1
        if not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads])
        self.pending.append((grads, flat, dist.all_reduce(flat, async_op=True)))

    def finish(self, parameters: Sequence[nn.Parameter]) -> None:
        # Buckets with a parameter that got no gradient in this pass start now (every rank ran
        # the same graph, so every rank skips the same ones).
        self.armed = False
        while self.next_bucket < len(self.buckets):
            self.launch(self.next_bucket)
        for grads, flat, work in self.pending:
            work.wait()
            write_mean(grads, flat)
        self.pending = []


__all__ = ["BUCKET_BYTES", "BlockingAllReduce", "OverlappedAllReduce", "allreduce_mean"]
