"""The promotion lock: one holder at a time when racers take over a stale lock, kept past its
TTL by renewal, and a holder that lost it told so. The many-trial race runs on the file store
(moto's conditional checks are not atomic); the conditional writes run on both stores."""

import json
import threading
import time
from collections import Counter

import pytest

from genimg.errors import GenimgError
from genimg.store import open_store
from genimg.tracking import registry


def lock_key(model):
    return f"locks/promote-{model}.json"


@pytest.fixture
def short_ttl(monkeypatch):
    monkeypatch.setattr(registry, "LOCK_TTL_SECONDS", 0.5)
    monkeypatch.setattr(registry, "LOCK_POLL_SECONDS", 0.005)


def test_conditional_writes_act_only_on_the_version_they_name(store):
    key = "locks/promote-x.json"
    first = store.create_versioned(key, b"one")
    assert first and store.create_versioned(key, b"two") is None
    assert store.read_versioned(key) == (b"one", first)
    second = store.replace_if(key, b"two", first)
    assert second and second != first and store.read_versioned(key) == (b"two", second)
    assert store.replace_if(key, b"three", first) is None  # a takeover of a version that changed
    assert not store.delete_if(key, first) and store.read_versioned(key) == (b"two", second)
    assert store.delete_if(key, second) and store.read_versioned(key) is None
    assert store.replace_if(key, b"four", second) is None and not store.delete_if(key, second)


def test_racers_for_a_stale_lock_never_hold_it_together(tmp_path, monkeypatch, short_ttl):
    """120 trials, 12 at a time on separate locks: each starts from a dead holder's lock, which
    4 promoters race to take over; each holder counts who else is inside while it is."""
    monkeypatch.setenv("GENIMG_STORE", (tmp_path / "store").as_uri())
    store = open_store()
    counting = threading.Lock()
    inside, peak, entries, errors = Counter(), Counter(), Counter(), []

    def promoter(model):
        try:
            with registry.promotion_lock(model) as lock:
                with counting:
                    inside[model] += 1
                    peak[model] = max(peak[model], inside[model])
                    entries[model] += 1
                time.sleep(0.002)
                with counting:
                    inside[model] -= 1
                lock.confirm()
        except Exception as exc:  # noqa: BLE001 - reported below with the trial's name
            errors.append(f"{model}: {exc!r}")

    trials, concurrent, contenders = 120, 12, 4
    for first in range(0, trials, concurrent):
        models = [f"race-{n}" for n in range(first, first + concurrent)]
        for model in models:
            store.put_bytes(lock_key(model), json.dumps({"token": "dead", "since": 0}).encode())
        threads = [threading.Thread(target=promoter, args=(m,)) for m in models for _ in range(contenders)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
    assert not errors, errors[:5]
    assert entries == Counter({f"race-{n}": contenders for n in range(trials)})
    overlapping = sorted(model for model, count in peak.items() if count > 1)
    assert not overlapping, f"two holders at once in {len(overlapping)} of {trials} trials"


def test_a_holder_keeps_the_lock_past_the_ttl_by_renewing_it(store_uri, short_ttl):
    entered = []

    def waiter():
        with registry.promotion_lock("genimg-held-vae"):
            entered.append(time.monotonic())

    with registry.promotion_lock("genimg-held-vae") as lock:
        thread = threading.Thread(target=waiter)
        thread.start()
        time.sleep(4 * registry.LOCK_TTL_SECONDS)
        lock.confirm()
        released = time.monotonic()
    thread.join(timeout=30)
    assert entered and entered[0] >= released


def test_a_holder_whose_lock_was_taken_over_is_told_and_leaves_the_new_lock(store, short_ttl):
    key = lock_key("genimg-lost-vae")
    with registry.promotion_lock("genimg-lost-vae") as lock:
        _, version = store.read_versioned(key)
        assert store.replace_if(key, b'{"token": "successor"}', version)  # as a waiter after a stall
        time.sleep(registry.LOCK_TTL_SECONDS)  # the holder's next renewal finds the version changed
        with pytest.raises(GenimgError, match="lost the promotion lock .*took it over.*nothing was promoted"):
            lock.confirm()
    assert store.read_versioned(key)[0] == b'{"token": "successor"}'  # its release left it alone


def test_a_holder_not_renewed_in_time_does_not_act(store, short_ttl):
    with registry.promotion_lock("genimg-stalled-vae") as lock:
        lock.stop.set()  # the renewal thread stops, as in a process stalled past half the TTL
        lock.renewer.join()
        time.sleep(registry.LOCK_TTL_SECONDS / 2)
        with pytest.raises(GenimgError, match="lost the promotion lock .*not renewed for"):
            lock.confirm()
