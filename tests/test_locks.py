"""The run lock: two trainings of one run name never run together. The second (or a --resume of a
run still going, in process or on Ray) is refused in one line naming the first; a killed run's
lock is taken over, so the run can be resumed. The lock itself runs on both stores."""

import json
import os
import re
import signal
import subprocess
import sys
import threading

import pytest
from typer.testing import CliRunner

from genimg import locks
from genimg.cli import app
from genimg.errors import GenimgError
from genimg.services.train import TrainRequest, train
from genimg.store import open_store

TINY = {"model": {"width": 4, "latent_dim": 4}, "train": {"batch_size": 16}}
REFUSED = (
    r"run {name} is already being trained \(.*pid \d+ on host .+, since \d{{4}}-.*Z; lock .*locks/run-{name}\.json\): "
    r"pick another --run-name, or wait for it to end and pass --resume to continue it"
)


@pytest.fixture
def short_ttl(monkeypatch):
    monkeypatch.setattr(locks, "RUN_LOCK_TTL_SECONDS", 0.6)
    monkeypatch.setattr(locks, "RUN_LOCK_POLL_SECONDS", 0.02)


def tiny_request(run_name, steps, **options):
    sections = {"model": TINY["model"], "train": {**TINY["train"], "steps": steps}}
    return TrainRequest(
        "vae",
        "builtin:digits",
        sections,
        workers=options.pop("workers", 0),
        run_name=run_name,
        evaluate=False,
        **options,
    )


def test_a_second_holder_is_refused_naming_the_first_until_it_releases(store, short_ttl):
    with locks.run_lock("r1") as held:
        with pytest.raises(GenimgError, match=REFUSED.format(name="r1")) as refused, locks.run_lock("r1"):
            pass
        assert "\n" not in str(refused.value) and f"pid {os.getpid()}" in str(refused.value)
        assert held.problem() is None  # still ours, renewed past the TTL
    with locks.run_lock("r1"):
        pass


def test_a_lock_its_holder_stopped_renewing_is_taken_over(store, short_ttl, caplog):
    """Another host's holder (whose process cannot be seen from here) that went a TTL silent."""
    record = {"name": "r2", "host": "elsewhere.example", "pid": 1, "started": 0}
    store.put_bytes(locks.run_lock_key("r2"), json.dumps(record).encode())
    with caplog.at_level("INFO", logger="genimg"), locks.run_lock("r2") as lock:
        assert json.loads(store.read_versioned(lock.key)[0])["token"] == lock.token
    assert (
        "run r2 is locked (pid 1 on host elsewhere.example, since 1970-01-01T00:00:00Z) but the lock is not "
        "being renewed: taking it over if it stays so for 0.6 s" in caplog.text
    )


def test_a_killed_holder_on_this_host_is_taken_over_at_once(store):
    """It is refused while its process renews the lock; once killed, taken over without waiting
    out the TTL (60 s here)."""
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            (
                "import time\nfrom genimg import locks\nlocks.RUN_LOCK_TTL_SECONDS = 0.6\n"
                "with locks.run_lock('r3'):\n    print('held', flush=True)\n    time.sleep(600)"
            ),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(GenimgError, match=f"pid {holder.pid} on host"), locks.run_lock("r3"):
            pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
    with locks.run_lock("r3"):  # the default 60 s TTL does not apply: its process is gone
        pass


def test_two_trainings_of_one_run_name_started_together_one_succeeds(tmp_path, monkeypatch, short_ttl):
    monkeypatch.setenv("GENIMG_STORE", (tmp_path / "store").as_uri())
    from genimg.tracking.runs import client, experiment_id

    experiment_id(client())  # the MLflow database exists before two writers open it
    start = threading.Barrier(2)
    outcomes, errors = [], []

    def training():
        start.wait()
        try:
            outcomes.append(train(tiny_request("same", 100)))
        except GenimgError as exc:
            errors.append(str(exc))

    threads = [threading.Thread(target=training) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert len(outcomes) == 1 and len(errors) == 1, (outcomes, errors)
    assert "\n" not in errors[0]
    assert re.search(REFUSED.format(name="same"), errors[0]), errors[0]
    assert outcomes[0].metrics["step"] == 100
    assert open_store().read_versioned(locks.run_lock_key("same")) is None  # released at the end


def test_the_refusal_names_the_mlflow_run_of_the_holder(tmp_path, monkeypatch, short_ttl):
    """Once the holder has created its MLflow run (a real one: the run name's tag, RUNNING)."""
    monkeypatch.setenv("GENIMG_STORE", (tmp_path / "store").as_uri())
    from genimg.tracking.runs import TrainingRun

    with locks.run_lock("long"):
        holder = TrainingRun("long")
        with pytest.raises(GenimgError, match=REFUSED.format(name="long")) as refused:
            train(tiny_request("long", 2, resume=True))
        holder.finish()
    assert f"(MLflow run {holder.run_id}, pid {os.getpid()} on host" in str(refused.value)


@pytest.mark.parametrize("workers", ["0", "1"])
def test_a_run_still_going_is_not_resumed_in_process_or_on_ray(tmp_path, monkeypatch, short_ttl, workers):
    """Refused in one line before any MLflow run or Ray exists: the driver holds a Ray run's lock."""
    monkeypatch.setenv("GENIMG_STORE", (tmp_path / "store").as_uri())
    with locks.run_lock("busy"):
        result = CliRunner().invoke(
            app,
            [
                "train",
                "--model",
                "vae",
                "--dataset",
                "builtin:digits",
                "--workers",
                workers,
                "--steps",
                "2",
                "--run-name",
                "busy",
                "--resume",
            ],
        )
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 1 and len(lines) == 1, result.output
    assert re.fullmatch("error: " + REFUSED.format(name="busy"), lines[0]), lines[0]
