"""genimg tune on a local Ray (started by the command, dashboard included), with MLflow child
runs per trial. Slow: marked, still run by make test."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from genimg.cli import app
from tests.conftest import STARTS_RAY

pytestmark = [pytest.mark.slow, STARTS_RAY, pytest.mark.timeout(600)]
runner = CliRunner()
SMALL_VAE = ["--set", "model.width=8", "--set", "train.batch_size=32"]


def tune(*args):
    result = runner.invoke(app, ["tune", *args, "--json"])
    assert result.stdout.strip(), (result.output, result.exception)
    return result.exit_code, json.loads(result.stdout)


def mlflow_client():
    from mlflow.tracking import MlflowClient

    from genimg.tracking.runs import tracking_uri

    return MlflowClient(tracking_uri())


@pytest.fixture
def digits_in_store(tmp_path, monkeypatch):
    monkeypatch.setenv("GENIMG_STORE", (tmp_path / "store").as_uri())
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert runner.invoke(app, ["ingest", "builtin:digits", "--name", "digits"]).exit_code == 0


def test_a_search_of_child_runs_with_early_stopping_and_a_failed_trial(digits_in_store, tmp_path):
    space = tmp_path / "space.yaml"
    # Two sound learning rates run first (two at a time), then one that cannot learn in 60 steps
    # (ASHA compares it with the first two at the first rung and stops it) and one that crashes.
    space.write_text("metric: val_nll_bound\nmode: min\nspace:\n  train.lr: {grid: [0.003, 0.002, 0.0000001, -1.0]}\n")
    code, payload = tune(
        "--model",
        "vae",
        "--dataset",
        "digits",
        "--trials",
        "1",
        "--max-concurrent",
        "2",
        "--steps",
        "60",
        "--space",
        str(space),
        *SMALL_VAE,
    )
    assert code == 0, payload
    assert payload["metric"] == "val_nll_bound" and payload["max_concurrent"] == 2
    by_lr = {t["config"]["train.lr"]: t for t in payload["trials"]}
    assert len(by_lr) == 4
    # The two sound trials run side by side: the one that reaches a rung second may be stopped
    # there if it is behind the first (ASHA), so at least one of them completes.
    sound = [by_lr[0.003], by_lr[0.002]]
    assert {t["status"] for t in sound} <= {"completed", "early-stopped"}
    assert any(t["status"] == "completed" and t["step"] == 60 for t in sound)
    assert by_lr[0.0000001]["status"] == "early-stopped" and by_lr[0.0000001]["step"] < 60
    failed = by_lr[-1.0]
    assert failed["status"] == "failed" and "train.lr must be > 0" in failed["error"]
    client = mlflow_client()
    expected_status = {"completed": "FINISHED", "early-stopped": "KILLED", "failed": "FAILED"}
    for trial in payload["trials"]:
        run = client.get_run(trial["run_id"])
        assert run.data.tags["mlflow.parentRunId"] == payload["parent_run_id"]
        assert run.info.status == expected_status[trial["status"]], trial
    best = payload["best"]
    assert best["value"] == min(t["metric"] for t in sound if t["status"] == "completed")
    assert best["config"]["train.lr"] in (0.003, 0.002) and best["checkpoint"]
    parent = client.get_run(payload["parent_run_id"])
    assert parent.data.tags["genimg.best.run_id"] == best["run_id"] and parent.info.status == "FINISHED"
    assert parent.data.metrics["best_val_nll_bound"] == pytest.approx(best["value"])
    assert parent.data.tags["genimg.trials.failed"] == "1" and int(parent.data.tags["genimg.trials.early-stopped"]) >= 1


def test_an_interrupted_search_resumes_without_rerunning_finished_trials(digits_in_store, tmp_path):
    env = {**os.environ, "GENIMG_HOME": os.environ["GENIMG_HOME"]}
    command = [
        str(Path(sys.executable).parent / "genimg"),
        "tune",
        "--model",
        "vae",
        "--dataset",
        "digits",
        "--trials",
        "2",
        "--max-concurrent",
        "1",
        "--steps",
        "30",
        "--name",
        "resumable",
        *SMALL_VAE,
        "--json",
    ]
    driver = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True
    )
    client = mlflow_client()
    deadline = time.monotonic() + 300
    finished: list = []
    while not finished:
        assert driver.poll() is None, "the search ended before it could be interrupted"
        assert time.monotonic() < deadline, "no trial finished in time"
        time.sleep(1)
        from genimg.tracking.searches import child_runs, find_parent_run

        parent = find_parent_run("resumable")
        finished = [r for r in child_runs(parent).values() if r.info.status == "FINISHED"] if parent else []
    time.sleep(5)  # Tune saves its experiment state every 2 s (genimg's setting)
    os.killpg(driver.pid, signal.SIGKILL)  # the driver and the local Ray it started
    driver.wait()
    first_done = {r.data.tags["genimg.trial"]: r.info.run_id for r in finished}
    resumed = subprocess.run([*command, "--resume"], env=env, capture_output=True, text=True, timeout=400)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    payload = json.loads(resumed.stdout)
    assert len(payload["trials"]) == 2 and payload["parent_run_id"] == parent
    for trial_id, run_id in first_done.items():
        again = next(t for t in payload["trials"] if t["trial_id"] == trial_id)
        assert again["run_id"] == run_id  # not rerun: still the run of the first search
    runs = client.search_runs(
        [client.get_run(parent).info.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent}'"
    )
    assert all(r.info.status != "RUNNING" for r in runs)
