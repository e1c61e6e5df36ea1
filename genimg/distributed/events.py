"""A small actor through which workers tell the driver what happens, without a barrier:
worker placement, attempts (restarts), metrics and sample grids. The driver drains it."""

from __future__ import annotations

from typing import Any

# The resource by which a Ray head node is known (every head node carries one unit of it).
HEAD_NODE_RESOURCE = "node:__internal_head__"


class RunEvents:
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def push(self, event: dict[str, Any]) -> None:
        self.events.append(event)

    def drain(self) -> list[dict[str, Any]]:
        drained, self.events = self.events, []
        return drained


def start_events_actor() -> Any:
    """The run's RunEvents actor, on the head node, whose loss ends the cluster anyway: a worker
    node's loss must not take the run's event stream (and with it the restart that follows)
    along. The driver's own node is not a safe choice: a driver may attach to any raylet on its
    machine. Node affinity also keeps the actor out of a Tune trial's placement group. Pushes
    made while the actor is being restarted are retried rather than dropped."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    actor = ray.remote(num_cpus=0, max_restarts=-1)(RunEvents)
    head = next(
        (node["NodeID"] for node in ray.nodes() if node["Alive"] and HEAD_NODE_RESOURCE in node["Resources"]),
        ray.get_runtime_context().get_node_id(),
    )
    return actor.options(
        scheduling_strategy=NodeAffinitySchedulingStrategy(head, soft=True), max_task_retries=-1
    ).remote()
