"""Connecting to Ray: a local instance by default, an existing cluster via RAY_ADDRESS."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from genimg.errors import GenimgError

AUTH_HINT = (
    "the cluster uses token authentication: set RAY_AUTH_MODE=token and put the cluster's token "
    "in RAY_AUTH_TOKEN (or in ~/.ray/auth_token)"
)


def explain_connection_error(address: str, exc: BaseException) -> GenimgError:
    text = str(exc)
    lowered = text.lower()
    if "auth" in lowered and ("token" in lowered or "unauthenticated" in lowered):
        return GenimgError(f"Ray at {address} refused the connection: {AUTH_HINT}")
    first_line = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    return GenimgError(f"cannot connect to Ray at {address}: {first_line}")


@contextmanager
def ray_session(address: str | None = None) -> Iterator[bool]:
    """Ray for the duration of the block; yields True if this process started it (and so
    shuts it down after), False if it joined one already running."""
    import ray

    if ray.is_initialized():
        yield False
        return
    address = address or os.environ.get("RAY_ADDRESS") or None
    # Ray's per-report worker logs drown genimg's own progress line; failures still surface
    # through the run's result. GENIMG_RAY_LOGS=1 shows them.
    log_to_driver = os.environ.get("GENIMG_RAY_LOGS", "0") == "1"
    try:
        if address:
            ray.init(address=address, logging_level="WARNING", log_to_driver=log_to_driver)
        else:
            ray.init(logging_level="WARNING", log_to_driver=log_to_driver)
    except Exception as exc:
        raise explain_connection_error(address or "a new local instance", exc) from exc
    try:
        yield True
    finally:
        ray.shutdown()


def cluster_cpus() -> int:
    import ray

    return int(ray.cluster_resources().get("CPU", 1))
