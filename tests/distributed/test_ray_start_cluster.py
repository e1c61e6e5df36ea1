"""A cluster started the way operators start one: `ray start --head` + `ray start --address`,
with Ray's token authentication on. Slow: marked, still run by make test."""

import json
import os
import signal
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest

from tests.conftest import free_ports

# Ray Train writes this once a reported checkpoint is registered (a checkpoint folder alone
# may still be waiting for the other ranks' uploads).
REGISTERED = "checkpoint_manager_snapshot.json"
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]
BIN = Path(sys.executable).parent


class RayStartCluster:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.home = root / "home"
        self.home.mkdir(parents=True)
        # Every process of this cluster carries it in its arguments; short, since Ray's socket
        # paths under it must stay within 107 bytes.
        self.temp_dir = Path(tempfile.mkdtemp(prefix="rt-", dir="/tmp"))
        self.env = {**os.environ, "HOME": str(self.home), "RAY_AUTH_MODE": "token",
                    "RAY_USAGE_STATS_ENABLED": "0", "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": "60"}
        self.env.pop("RAY_ADDRESS", None)
        subprocess.run([str(BIN / "ray"), "get-auth-token", "--generate"], env=self.env, check=True,
                       capture_output=True, timeout=60)
        self.port, self.dashboard_port, self.client_port = free_ports(3)
        self.address = f"127.0.0.1:{self.port}"

    def node_ports(self) -> list[str]:
        # Below the ephemeral range that free_ports() draws the other ports from, so they cannot clash.
        # Drawn together so no two components of one node get the same port.
        manager, objects, metrics, agent_grpc, agent_http, runtime_env, seed = free_ports(7)
        low = 10100 + (seed % 9000)
        return [
            f"--node-manager-port={manager}", f"--object-manager-port={objects}",
            f"--metrics-export-port={metrics}", f"--dashboard-agent-grpc-port={agent_grpc}",
            f"--dashboard-agent-listen-port={agent_http}", f"--runtime-env-agent-port={runtime_env}",
            f"--min-worker-port={low}", f"--max-worker-port={low + 200}",
        ]

    def start(self, *args: str) -> str:
        ports = self.node_ports()
        done = subprocess.run([str(BIN / "ray"), "start", "--num-cpus=1", "--disable-usage-stats", *ports, *args],
                              env=self.env, capture_output=True, text=True, timeout=180)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        return ports[0].split("=")[1]  # the node manager port names the node's raylet

    def start_head(self) -> None:
        self.start("--head", f"--port={self.port}", f"--temp-dir={self.temp_dir}",
                   f"--dashboard-port={self.dashboard_port}", f"--ray-client-server-port={self.client_port}")

    def add_node(self) -> str:
        return self.start(f"--address={self.address}")

    def kill_raylet(self, node_manager_port: str) -> None:
        for process in psutil.process_iter(["cmdline"]):
            cmdline = " ".join(process.info["cmdline"] or [])
            if "raylet/raylet" in cmdline and f"--node_manager_port={node_manager_port}" in cmdline:
                process.send_signal(signal.SIGKILL)
                return
        raise AssertionError(f"no raylet on node manager port {node_manager_port}")

    def stop(self) -> None:
        marker = str(self.temp_dir)
        for process in psutil.process_iter(["cmdline"]):
            try:
                if marker in " ".join(process.info["cmdline"] or []):
                    process.kill()
            except psutil.Error:
                pass
        shutil.rmtree(self.temp_dir, ignore_errors=True)


@pytest.fixture
def token_cluster(tmp_path):
    cluster = RayStartCluster(tmp_path)
    cluster.start_head()
    try:
        yield cluster
    finally:
        cluster.stop()


def genimg(cluster, tmp_path, *args, env_overrides=None, **popen):
    env = {**cluster.env, "RAY_ADDRESS": cluster.address, "GENIMG_HOME": str(tmp_path / "genimg"),
           **(env_overrides or {})}
    env = {k: v for k, v in env.items() if v is not None}
    return subprocess.Popen([str(BIN / "genimg"), *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **popen)


def test_without_the_token_the_refusal_says_what_to_set(token_cluster, tmp_path):
    (tmp_path / "bare-home").mkdir()
    process = genimg(token_cluster, tmp_path, "train", "--model", "vae", "--dataset", "builtin:digits",
                     "--steps", "1", env_overrides={"RAY_AUTH_MODE": None, "HOME": str(tmp_path / "bare-home")})
    out, err = process.communicate(timeout=180)
    assert process.returncode == 1, (out, err)
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: cannot connect to Ray at") and "RAY_AUTH_MODE=token" in last
    assert "RAY_AUTH_TOKEN" in last and out == ""


def test_killing_a_raylet_mid_run_and_adding_a_node_lets_the_run_finish(token_cluster, tmp_path):
    second = token_cluster.add_node()
    process = genimg(token_cluster, tmp_path, "train", "--model", "vae", "--dataset", "builtin:digits",
                     "--workers", "2", "--steps", "1200", "--batch-size", "8", "--run-name", "survivor",
                     "--set", "model.width=4", "--set", "train.checkpoint_every=20", "--json")
    runs = tmp_path / "genimg" / "store" / "runs" / "survivor"
    deadline = time.monotonic() + 300
    while not (runs / REGISTERED).is_file():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "no checkpoint in time"
        time.sleep(0.2)
    token_cluster.kill_raylet(second)
    token_cluster.add_node()
    out, err = process.communicate(timeout=600)
    assert process.returncode == 0, err[-3000:]
    payload = json.loads(out)
    assert payload["metrics"]["step"] == 1200
    assert payload["restarts"] >= 1 and payload["resumed_from_step"] > 0
