"""A small actor through which workers tell the driver what happens, without a barrier:
worker placement, attempts (restarts), metrics and sample grids. The driver drains it."""

from __future__ import annotations

from typing import Any

import ray


@ray.remote(num_cpus=0, max_restarts=-1)
class RunEvents:
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def push(self, event: dict[str, Any]) -> None:
        self.events.append(event)

    def drain(self) -> list[dict[str, Any]]:
        drained, self.events = self.events, []
        return drained
