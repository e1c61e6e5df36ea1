"""The driver's view of a running Ray Train run: the events its workers push (placement,
attempts, metrics, samples, validation, throughput, divergence), forwarded to the MLflow run and
to a progress callback as they come."""

from __future__ import annotations

import threading
from typing import Any, cast

from genimg.distributed.events import start_events_actor
from genimg.feedback import say
from genimg.tracking.runs import TrainingRun
from genimg.training.loop import LogCallback

ProgressCallback = LogCallback  # (step, metrics) as they reach the driver


class RunMonitor:
    def __init__(self, tracking: TrainingRun, on_progress: ProgressCallback | None) -> None:
        self.tracking, self.on_progress = tracking, on_progress
        self.events = start_events_actor()
        self.attempts: list[dict[str, Any]] = []
        self.placement: dict[int, str] = {}  # rank → node id
        self.world = 0
        self.last_metrics: dict[str, float] = {}
        self.throughput: float = 0.0  # the last attempt's steady-state rate
        self.diverged: str | None = None

    @property
    def restarts(self) -> int:
        return max(0, len(self.attempts) - 1)

    @property
    def resumed_from_step(self) -> int:
        return int(self.attempts[-1]["resumed_from_step"]) if self.attempts else 0

    @property
    def workers(self) -> dict[int, str]:
        """rank → node of the last attempt's workers."""
        return {rank: node for rank, node in sorted(self.placement.items()) if rank < self.world}

    def follow(self, thread: threading.Thread) -> None:
        """Forward events until `thread` (the one in `trainer.fit()`) ends, then the last ones."""
        while thread.is_alive():
            thread.join(timeout=0.5)
            self.forward()
        self.forward()

    def forward(self) -> None:
        for event in self.drain():
            self.handle(event)

    def drain(self) -> list[dict[str, Any]]:
        import ray

        try:
            # The events actor's drain(): the events reported since the last call.
            return cast(list[dict[str, Any]], ray.get(self.events.drain.remote(), timeout=30))
        except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError, ray.exceptions.ActorUnavailableError):
            return []  # the events actor is being restarted: progress resumes after it

    def handle(self, event: dict[str, Any]) -> None:
        kind = event["type"]
        if kind == "worker":
            # Ranks of a restarted (or resized) group overwrite the earlier ones.
            self.placement[event["rank"]] = event["node"]
            self.world = event["world"]
        elif kind == "attempt":
            self.attempts.append(event)
            resumed = int(event["resumed_from_step"])
            say(
                "%s on %d worker(s)%s",
                "training" if len(self.attempts) == 1 else f"restart {self.restarts}:",
                self.world or 1,
                f", from the checkpoint of step {resumed}" if resumed else "",
            )
        elif kind == "metrics":
            self.last_metrics = event["metrics"]
            self.tracking.add_metrics(int(event["step"]), event["metrics"], int(event["time"] * 1000))
            if self.on_progress is not None:
                self.on_progress(int(event["step"]), event["metrics"])
        elif kind == "validation":
            self.tracking.add_metrics(int(event["step"]), event["metrics"], int(event["time"] * 1000))
            # Validation comes with each checkpoint report, which is when Tune may stop the run.
            self.tracking.flush()
        elif kind == "samples":
            self.tracking.log_image(event["png"], "samples", int(event["step"]))
        elif kind == "throughput":
            self.throughput = float(event["images_per_second"])
        elif kind == "diverged":
            self.diverged = str(event["reason"])
