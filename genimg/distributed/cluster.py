"""Connecting to Ray: a local instance by default, an existing cluster via RAY_ADDRESS."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal, overload

from genimg.errors import GenimgError
from genimg.feedback import phase

AUTH_HINT = (
    "the cluster uses token authentication (Ray's default once a token exists), set "
    "RAY_AUTH_MODE=token and put the cluster's token in RAY_AUTH_TOKEN (or ~/.ray/auth_token)"
)


def has_auth_token() -> bool:
    if os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH"):
        return True
    return (Path.home() / ".ray" / "auth_token").is_file()


def explain_connection_error(address: str, exc: BaseException) -> GenimgError:
    """Ray's own error for a refused token says only "Failed to connect" (the reason is in a
    log line), so the hint is given whenever token auth is not set up on this side."""
    text = str(exc)
    first_line = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    token_mode = os.environ.get("RAY_AUTH_MODE", "").lower() == "token"
    if "auth" in text.lower() or not token_mode or not has_auth_token():
        return GenimgError(f"cannot connect to Ray at {address} ({first_line}); if {AUTH_HINT}")
    return GenimgError(
        f"cannot connect to Ray at {address}: {first_line} (token auth is set up here: check that "
        "the token matches the cluster's and that the address is reachable)"
    )


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
        with phase(f"connecting to Ray at {address}" if address else "starting a local Ray (RAY_ADDRESS unset)"):
            if address:
                ray.init(address=address, logging_level=logging.WARNING, log_to_driver=log_to_driver)
            else:
                # A local Ray of this process turns token auth on by default and warns that it
                # did; nothing outside this process connects to it, so the notice says nothing.
                logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
                ray.init(logging_level=logging.WARNING, log_to_driver=log_to_driver)
    except Exception as exc:
        raise explain_connection_error(address or "a new local instance", exc) from exc
    try:
        yield True
    finally:
        ray.shutdown()


@overload
def cluster_cpus(exact: Literal[False] = False) -> int: ...


@overload
def cluster_cpus(exact: Literal[True]) -> float: ...


def cluster_cpus(exact: bool = False) -> float:
    """The CPUs of all alive nodes together (an int, or with exact=True the float Ray reports)."""
    import ray

    total = float(ray.cluster_resources().get("CPU", 1))
    return total if exact else int(total)


def largest_node_cpus() -> int:
    """The most CPUs any one alive node has: one worker can never ask for more."""
    import ray

    return max((int(node["Resources"].get("CPU", 0)) for node in ray.nodes() if node.get("Alive")), default=1)
