"""Training as Ray Jobs on a `ray start --head` cluster with its dashboard (token auth on).

Everything that talks to the cluster runs in its own process with the cluster's token, as a
Prefect worker would. Slow: marked, still run by make test.
"""

import json
import subprocess
import sys
import textwrap
import time

import pytest

from tests.conftest import STARTS_RAY
from tests.distributed.ray_start import BIN, RayStartCluster

pytestmark = [pytest.mark.slow, STARTS_RAY, pytest.mark.timeout(600)]
ENTRYPOINT = f"{sys.executable} -m genimg"
TINY_VAE = ["--set", "model.width=4", "--set", "model.latent_dim=4", "--set", "eval.at_end_of_training=false"]


@pytest.fixture(scope="module")
def jobs_cluster(tmp_path_factory):
    root = tmp_path_factory.mktemp("jobs-cluster")
    cluster = RayStartCluster(root)
    cluster.start_head(cpus=2)  # a search: one trial's worker (1 CPU) beside its Tune actor
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def client_env(jobs_cluster, tmp_path):
    env = {
        **jobs_cluster.client_env(),
        "GENIMG_HOME": str(tmp_path / "home"),
        "GENIMG_STORE": (tmp_path / "store").as_uri(),
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
    }
    env.pop("RAY_ADDRESS", None)
    subprocess.run(
        [str(BIN / "genimg"), "ingest", "builtin:digits", "--name", "digits"],
        env=env,
        check=True,
        capture_output=True,
        timeout=120,
    )
    return env


def follower(env, dashboard, run_name, args):
    """A process that submits `genimg ARGS` as a Ray Job (or attaches) and prints the outcome."""
    code = textwrap.dedent(f"""
        import json
        from genimg.distributed.jobs import RayJobsTarget, run_genimg_job
        outcome = run_genimg_job(RayJobsTarget({dashboard!r}, entrypoint={ENTRYPOINT!r}, poll_seconds=0.5),
                                 {args!r}, {run_name!r}, on_log=lambda line: print("log:", line, flush=True))
        print(json.dumps({{"submission_id": outcome.submission_id, "attached": outcome.attached,
                           "payload": outcome.payload}}))
    """)
    return subprocess.Popen(
        [sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def jobs_of(env, dashboard, run_name):
    code = (
        f"from ray.job_submission import JobSubmissionClient\n"
        f"import json\n"
        f"jobs = JobSubmissionClient({dashboard!r}).list_jobs()\n"
        f"print(json.dumps([[j.submission_id, j.status.value] for j in jobs "
        f"if (j.metadata or {{}}).get('genimg_run_name') == {run_name!r}]))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


def test_a_killed_follower_reattaches_to_the_running_job_instead_of_training_again(jobs_cluster, client_env):
    dashboard = jobs_cluster.dashboard_url
    args = [
        "train",
        "--model",
        "vae",
        "--dataset",
        "digits",
        "--workers",
        "1",
        "--steps",
        "150",
        "--batch-size",
        "8",
        "--run-name",
        "jobrun",
        *TINY_VAE,
    ]
    first = follower(client_env, dashboard, "jobrun", args)
    deadline = time.monotonic() + 180
    while not any(status == "RUNNING" for _, status in jobs_of(client_env, dashboard, "jobrun")):
        assert first.poll() is None, first.communicate()
        assert time.monotonic() < deadline, "the job never started running"
        time.sleep(1)
    first.kill()  # the Prefect worker goes away; the job goes on on the cluster
    first.communicate()

    second = follower(client_env, dashboard, "jobrun", args)
    out, err = second.communicate(timeout=400)
    assert second.returncode == 0, err[-3000:]
    outcome = json.loads(out.strip().splitlines()[-1])
    assert outcome["attached"] is True and outcome["submission_id"] == "genimg-jobrun-1"
    payload = outcome["payload"]
    assert payload["metrics"]["step"] == 150 and payload["restarts"] == 0 and payload["resumed_from_step"] == 0
    assert any(line.startswith("log: ") for line in out.splitlines())  # the job's logs were followed
    assert jobs_of(client_env, dashboard, "jobrun") == [["genimg-jobrun-1", "SUCCEEDED"]]

    # The MLflow run knows which job trained it.
    code = (
        "from mlflow.tracking import MlflowClient\n"
        f"print(MlflowClient().get_run({payload['run_id']!r}).data.tags['genimg.ray_job'])"
    )
    tag = subprocess.run([sys.executable, "-c", code], env=client_env, capture_output=True, text=True, timeout=60)
    assert tag.stdout.strip() == "genimg-jobrun-1", tag.stderr[-2000:]


def test_a_failing_job_is_reported_with_its_id_and_reason(jobs_cluster, client_env):
    failing = follower(
        client_env,
        jobs_cluster.dashboard_url,
        "badjob",
        ["train", "--model", "gan", "--dataset", "digits", "--set", "model.loss=minimax"],
    )
    out, err = failing.communicate(timeout=300)
    assert failing.returncode == 1
    last = err.strip().splitlines()[-1]
    assert "Ray job genimg-badjob-1" in last and "FAILED" in last and "model.loss" in last, err[-2000:]


def test_the_retrain_flow_tunes_through_ray_jobs_and_links_flow_run_job_runs_and_version(
    jobs_cluster, client_env, tmp_path
):
    """tune: on — the search runs as one Ray Job; its best trial is evaluated, registered, promoted."""
    config = tmp_path / "retrain.yaml"
    config.write_text(
        json.dumps(
            {
                "datasets": {"digits": "builtin:digits"},
                "families": [
                    {
                        "model": "vae",
                        "dataset": "digits",
                        "steps": 12,
                        "tune": {"trials": 2, "max_concurrent": 1},
                        "set": [
                            "model.width=4",
                            "model.latent_dim=4",
                            "eval.at_end_of_training=false",
                            "train.checkpoint_every=6",
                        ],
                    }
                ],
                "tune": True,
                "evaluation": {"samples": 40, "extractor_steps": 30},
                "ray_jobs": {"entrypoint": ENTRYPOINT, "poll_seconds": 0.5},
            }
        )
    )
    env = {**client_env, "GENIMG_RAY_JOBS": jobs_cluster.dashboard_url}
    done = subprocess.run(
        [str(BIN / "genimg"), "retrain", "--config", str(config), "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=500,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)
    vae = result["models"][0]
    assert vae["error"] is None, vae
    assert vae["run_name"].startswith("retrain-tune-vae-digits-") and vae["search_run_id"]
    assert vae["ray_job"] == f"genimg-{vae['run_name']}-1" and vae["promoted"]
    assert jobs_of(env, jobs_cluster.dashboard_url, vae["run_name"]) == [[vae["ray_job"], "SUCCEEDED"]]
    code = textwrap.dedent(f"""
        import json
        from mlflow.tracking import MlflowClient
        client = MlflowClient()
        run = client.get_run({vae["run_id"]!r})
        search = client.get_run({vae["search_run_id"]!r})
        version = client.get_model_version({vae["name"]!r}, {str(vae["version"])!r})
        print(json.dumps({{"run": run.data.tags, "search": search.data.tags, "version": version.tags}}))
    """)
    looked_up = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    tags = json.loads(looked_up.stdout)
    # From the best trial's run, its search and the model version back to the flow run, job and dataset.
    assert tags["run"]["mlflow.parentRunId"] == vae["search_run_id"]
    assert tags["search"]["genimg.best.run_id"] == vae["run_id"]
    for run in ("run", "search"):
        assert (
            tags[run]["genimg.flow_run_id"] == result["flow_run_id"] and tags[run]["genimg.ray_job"] == vae["ray_job"]
        )
    assert tags["version"]["genimg.flow_run_id"] == result["flow_run_id"]
    assert tags["version"]["genimg.run_id"] == vae["run_id"]
    assert tags["version"]["genimg.dataset"] == f"digits@{result['dataset']['version']}"
