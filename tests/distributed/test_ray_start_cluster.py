"""A cluster started the way operators start one: `ray start --head` + `ray start --address`,
with Ray's token authentication on. Slow: marked, still run by make test."""

import json
import subprocess
import time

import pytest

from tests.conftest import STARTS_RAY
from tests.distributed.ray_start import BIN, RayStartCluster

# Ray Train writes this once a reported checkpoint is registered (a checkpoint folder alone
# may still be waiting for the other ranks' uploads).
REGISTERED = "checkpoint_manager_snapshot.json"
pytestmark = [pytest.mark.slow, STARTS_RAY, pytest.mark.timeout(900)]


@pytest.fixture
def token_cluster(tmp_path):
    cluster = RayStartCluster(tmp_path)
    cluster.start_head()
    try:
        yield cluster
    finally:
        cluster.stop()


def genimg(cluster, tmp_path, *args, env_overrides=None, **popen):
    env = {
        **cluster.env,
        "RAY_ADDRESS": cluster.address,
        "GENIMG_HOME": str(tmp_path / "genimg"),
        **(env_overrides or {}),
    }
    env = {k: v for k, v in env.items() if v is not None}
    return subprocess.Popen(
        [str(BIN / "genimg"), *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen
    )


def test_without_the_token_the_refusal_says_what_to_set(token_cluster, tmp_path):
    (tmp_path / "bare-home").mkdir()
    process = genimg(
        token_cluster,
        tmp_path,
        "train",
        "--model",
        "vae",
        "--dataset",
        "builtin:digits",
        "--steps",
        "1",
        env_overrides={"RAY_AUTH_MODE": None, "HOME": str(tmp_path / "bare-home")},
    )
    out, err = process.communicate(timeout=180)
    assert process.returncode == 1, (out, err)
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: cannot connect to Ray at") and "RAY_AUTH_MODE=token" in last
    assert "RAY_AUTH_TOKEN" in last and out == ""


def test_losing_a_node_mid_run_and_adding_one_lets_the_run_finish(token_cluster, tmp_path):
    # 400 steps: the 150 once used here could all run in the second it takes to kill a node.
    second = token_cluster.add_node()
    process = genimg(
        token_cluster,
        tmp_path,
        "train",
        "--model",
        "vae",
        "--dataset",
        "builtin:digits",
        "--workers",
        "2",
        "--steps",
        "400",
        "--batch-size",
        "8",
        "--run-name",
        "survivor",
        "--set",
        "model.width=4",
        "--set",
        "train.checkpoint_every=50",
        "--set",
        "eval.at_end_of_training=false",
        "--json",
    )
    runs = tmp_path / "genimg" / "store" / "runs" / "survivor"
    deadline = time.monotonic() + 300
    while not (runs / REGISTERED).is_file():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "no checkpoint in time"
        time.sleep(0.2)
    token_cluster.lose_node(second)
    token_cluster.add_node()
    out, err = process.communicate(timeout=600)
    assert process.returncode == 0, err[-3000:]
    payload = json.loads(out)
    assert payload["metrics"]["step"] == 400
    assert payload["restarts"] >= 1 and payload["resumed_from_step"] > 0, err[-3000:]
