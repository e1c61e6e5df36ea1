"""Locks held in the object store by conditional writes: one holder at a time, across processes
and machines that share the store (a local directory or S3).

`StoreLock` is the mechanism (the promotion lock and the run lock are both one); `run_lock`
holds the lock of a training run's folder `runs/<run name>/` for the whole run, so a second run
of the same name (or a `--resume` of a run still going) is refused, naming the first.
"""

from __future__ import annotations

import datetime
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from genimg.errors import GenimgError
from genimg.feedback import say
from genimg.store import ObjectStore, open_store, writer_is_gone

RUN_LOCK_TTL_SECONDS = 60.0  # a run lock whose version stays the same this long is taken over
RUN_LOCK_POLL_SECONDS = 0.2
# A run renews its lock this often (at most, a third of the TTL): a second run of its name is
# refused within this time, and a lock that goes longer unrenewed is said to look stale.
RUN_LOCK_RENEW_SECONDS = 5.0


class StoreLock:
    """One holder's hold on the lock object `key` in the store.

    Taken by creating the object if absent, or by replacing it when its version (S3 ETag, file
    digest) has stayed the same for `ttl` seconds on the waiter's own monotonic clock, so no
    other machine's clock is trusted (or at once when its holder ran on this host and its process
    is gone). Both are conditional writes that the store decides: of several waiters, one wins.
    The holder renews the object every `renew_every` seconds (default: a third of the TTL) from a
    thread (a conditional write of new content on the version it holds), `confirm`s it still holds it before acting, and releases it
    by a conditional delete, so a holder that stalled past the TTL finds it lost instead of
    deleting its successor's lock.
    """

    def __init__(
        self,
        store: ObjectStore,
        key: str,
        name: str,
        *,
        ttl: float,
        poll: float,
        renew_every: float | None = None,
        rival: str = "another holder",
        details: dict[str, Any] | None = None,
    ) -> None:
        self.store, self.key, self.name = store, key, name
        self.ttl, self.poll, self.rival = ttl, poll, rival
        self.renew_every = min(renew_every, ttl / 3) if renew_every is not None else ttl / 3
        self.details = dict(details or {})  # written into every write of the lock, for who is refused
        self.token = uuid.uuid4().hex
        self.writes = 0
        self.started = time.time()
        self.version: str | None = None
        self.renewed_at = 0.0  # monotonic time the last successful write was sent
        self.lost: str | None = None
        self.mutex = threading.Lock()  # the renewal thread and `confirm` read and move `version`
        self.stop = threading.Event()
        self.renewer: threading.Thread | None = None
        # Told once, while waiting, that the holder has missed two renewals (it may be gone).
        self.on_stale: Callable[[dict[str, Any]], None] | None = None

    @property
    def uri(self) -> str:
        return self.store.uri_for(self.key)

    def content(self) -> bytes:
        """A new write of the lock: the token and a counter make its version one never seen."""
        self.writes += 1
        return json.dumps(
            {
                **self.details,
                "token": self.token,
                "write": self.writes,
                "name": self.name,
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "started": self.started,
                "time": time.time(),
            }
        ).encode()

    def acquire(self, wait: float) -> bool:
        """Hold the lock (True), or give up after `wait` seconds of another holder renewing it."""
        return self.take(wait, yield_to_live_holder=False) is None

    def acquire_unless_held(self) -> dict[str, Any] | None:
        """Hold the lock (None), or the record of the live holder that has it: one seen renewing
        it (every `renew_every` s). A holder that stopped renewing is taken over after the TTL."""
        return self.take(self.ttl * 2, yield_to_live_holder=True)

    def take(self, wait: float, *, yield_to_live_holder: bool) -> dict[str, Any] | None:
        """Hold the lock and start renewing it (None), or the holder's record when giving up:
        after `wait` seconds, or (`yield_to_live_holder`) as soon as the holder renews it."""
        deadline = time.monotonic() + wait
        seen: tuple[str, float] | None = None  # the holder's version, and when we first saw it
        holder: dict[str, Any] = {}
        while True:
            sent = time.monotonic()
            version = self.store.create_versioned(self.key, self.content())
            if version is None:
                current = self.store.read_versioned(self.key)
                if current is None:
                    continue  # released between the two calls
                holder = lock_record(current[0])
                now = time.monotonic()
                if seen is not None and seen[0] != current[1] and yield_to_live_holder:
                    return holder  # written since we first looked: its holder is alive
                if seen is None or seen[0] != current[1]:
                    seen = (current[1], now)
                elif self.on_stale is not None and now - seen[1] >= 2 * self.renew_every:
                    self.on_stale(holder)
                    self.on_stale = None
                if now - seen[1] >= self.ttl or holder_is_gone(holder):  # stalled, or dead
                    sent = time.monotonic()
                    version = self.store.replace_if(self.key, self.content(), current[1])
                    seen = None
            if version is not None:
                break
            if time.monotonic() > deadline:
                return holder
            time.sleep(self.poll)
        self.version, self.renewed_at = version, sent
        self.renewer = threading.Thread(target=self.renew, name=f"genimg-lock-{self.name}", daemon=True)
        self.renewer.start()
        return None

    def renew(self) -> None:
        while not self.stop.wait(self.renew_every):
            with self.mutex:
                sent = time.monotonic()
                try:
                    version = self.store.replace_if(self.key, self.content(), str(self.version))
                except GenimgError:
                    continue  # the store did not answer: retried next time; `confirm` sees the age
                if version is None:
                    self.lost = f"{self.rival} took it over: it went {self.ttl:g} s without renewal"
                    return
                self.version, self.renewed_at = version, sent

    def problem(self) -> str | None:
        """Why the lock is no longer safely ours, or None while it is ours and renewed within
        half the TTL: then no waiter can take it over for at least the other half."""
        with self.mutex:
            problem = self.lost
            age = time.monotonic() - self.renewed_at
            if problem is None and age > self.ttl / 2:
                problem = f"not renewed for {age:.1f} s"
            if problem is None:
                current = self.store.read_versioned(self.key)
                if current is None or current[1] != self.version:
                    problem = f"{self.rival} took it over"
        return problem

    def release(self) -> None:
        self.stop.set()
        if self.renewer is not None:
            self.renewer.join()
        with self.mutex:
            if self.lost is None and self.version is not None:
                try:
                    self.store.delete_if(self.key, self.version)
                except GenimgError:
                    pass  # left in place, it is taken over once it has gone a TTL unrenewed


def utc_text(unix_time: float) -> str:
    return datetime.datetime.fromtimestamp(unix_time, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def lock_record(data: bytes) -> dict[str, Any]:
    """A lock object's content; {} when it is not ours (then its holder is judged by renewal)."""
    try:
        record = json.loads(data)
    except ValueError:
        return {}
    return record if isinstance(record, dict) else {}


def holder_is_gone(holder: dict[str, Any]) -> bool:
    """True only for a holder that ran on this host and whose process no longer exists."""
    return bool(holder.get("host")) and writer_is_gone(f"{holder.get('pid')}@{holder['host']}")


def describe_holder(holder: dict[str, Any]) -> str:
    """`MLflow run …, pid … on host …, since …`: what the record says of who holds a lock."""
    parts = [f"MLflow run {holder['mlflow_run_id']}"] if holder.get("mlflow_run_id") else []
    if holder.get("pid") and holder.get("host"):
        parts.append(f"pid {holder['pid']} on host {holder['host']}")
    if isinstance(holder.get("started"), (int, float)):
        parts.append(f"since {utc_text(holder['started'])}")
    return ", ".join(parts) or "a holder that does not say who it is"


def run_lock_key(run_name: str) -> str:
    return f"locks/run-{run_name}.json"


@contextmanager
def run_lock(
    run_name: str, store: ObjectStore | None = None, identify: Callable[[dict[str, Any]], dict[str, Any]] | None = None
) -> Iterator[StoreLock]:
    """Hold the lock of run `run_name` (its folder `runs/<run name>/`, checkpoints and MLflow run)
    for the block, or refuse in one line naming the run that holds it. A run killed without
    releasing it is taken over once its lock has gone RUN_LOCK_TTL_SECONDS unrenewed (at once on
    the host it ran on), so it can be resumed. `identify` adds to a holder's record what the
    lock does not know (its MLflow run id), for the refusal."""
    store = store or open_store()
    lock = StoreLock(
        store,
        run_lock_key(run_name),
        run_name,
        ttl=RUN_LOCK_TTL_SECONDS,
        poll=RUN_LOCK_POLL_SECONDS,
        renew_every=RUN_LOCK_RENEW_SECONDS,
        rival="another run of the same name",
    )
    lock.on_stale = lambda holder: say(
        "run %s is locked (%s) but the lock is not being renewed: taking it over if it stays so for %g s",
        run_name,
        describe_holder(holder),
        lock.ttl,
    )
    holder = lock.acquire_unless_held()
    if holder is not None:
        if identify is not None:
            holder = {**holder, **identify(holder)}
        raise GenimgError(
            f"run {run_name} is already being trained ({describe_holder(holder)}; lock {lock.uri}): "
            "pick another --run-name, or wait for it to end and pass --resume to continue it"
        )
    try:
        yield lock
    finally:
        lock.release()
