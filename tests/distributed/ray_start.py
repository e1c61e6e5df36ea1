"""A Ray cluster started the way operators start one: `ray start --head` (with its dashboard and
Ray 2.60's token authentication) + `ray start --address`, in its own temp dir and ports."""

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import psutil

from tests.conftest import free_ports
from tests.distributed.conftest import kill_process_tree

BIN = Path(sys.executable).parent


class RayStartCluster:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.home = root / "home"
        self.home.mkdir(parents=True)
        # Every process of this cluster carries it in its arguments; short, since Ray's socket
        # paths under it must stay within 107 bytes.
        self.temp_dir = Path(tempfile.mkdtemp(prefix="rt-", dir="/tmp"))
        self.env = {
            **os.environ,
            "HOME": str(self.home),
            "RAY_AUTH_MODE": "token",
            "RAY_USAGE_STATS_ENABLED": "0",
            "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": "60",
        }
        self.env.pop("RAY_ADDRESS", None)
        subprocess.run(
            [str(BIN / "ray"), "get-auth-token", "--generate"],
            env=self.env,
            check=True,
            capture_output=True,
            timeout=60,
        )
        self.port, self.dashboard_port, self.client_port = free_ports(3)
        self.address = f"127.0.0.1:{self.port}"

    def node_ports(self) -> list[str]:
        # Below the ephemeral range that free_ports() draws the other ports from, so they cannot clash.
        # Drawn together so no two components of one node get the same port.
        manager, objects, metrics, agent_grpc, agent_http, runtime_env, seed = free_ports(7)
        low = 10100 + (seed % 9000)
        return [
            f"--node-manager-port={manager}",
            f"--object-manager-port={objects}",
            f"--metrics-export-port={metrics}",
            f"--dashboard-agent-grpc-port={agent_grpc}",
            f"--dashboard-agent-listen-port={agent_http}",
            f"--runtime-env-agent-port={runtime_env}",
            f"--min-worker-port={low}",
            f"--max-worker-port={low + 200}",
        ]

    def start(self, *args: str, cpus: int = 1) -> str:
        ports = self.node_ports()
        done = subprocess.run(
            [str(BIN / "ray"), "start", f"--num-cpus={cpus}", "--disable-usage-stats", *ports, *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        return ports[0].split("=")[1]  # the node manager port names the node's raylet

    def start_head(self, cpus: int = 1) -> None:
        self.start(
            "--head",
            f"--port={self.port}",
            f"--temp-dir={self.temp_dir}",
            f"--dashboard-port={self.dashboard_port}",
            f"--ray-client-server-port={self.client_port}",
            cpus=cpus,
        )

    def add_node(self) -> str:
        return self.start(f"--address={self.address}")

    def lose_node(self, node_manager_port: str) -> None:
        for process in psutil.process_iter(["cmdline"]):
            cmdline = " ".join(process.info["cmdline"] or [])
            if "raylet/raylet" in cmdline and f"--node_manager_port={node_manager_port}" in cmdline:
                kill_process_tree(process.pid)
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

    @property
    def dashboard_url(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    def client_env(self) -> dict[str, str]:
        """What a process outside the cluster needs to talk to it (token auth on)."""
        return {**self.env, "RAY_AUTH_TOKEN": (self.home / ".ray" / "auth_token").read_text().strip()}
