"""`genimg deploy` and infra/prefect/prefect.yaml against a real `prefect server start` on loopback
(schedules need a real server; Prefect's temporary one never runs them)."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import free_ports, wait_until_healthy

ROOT = Path(__file__).resolve().parent.parent.parent
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory):
    home = tmp_path_factory.mktemp("prefect-server")
    (port,) = free_ports(1)
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1"}
    env.pop("PREFECT_API_URL", None)
    server = subprocess.Popen(
        [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}/api"
    wait_until_healthy(f"{url}/health", server, "prefect server", timeout=120)
    try:
        yield url
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


def client_env(url, tmp_path):
    env = {**os.environ, "PREFECT_API_URL": url, "PREFECT_HOME": str(tmp_path / "client")}
    return env


def deployment_on_server(env, name="genimg-retrain"):
    """Read back by name, independently of what the deploying command printed."""
    code = (
        "import json\n"
        "from prefect.client.orchestration import get_client\n"
        "with get_client(sync_client=True) as client:\n"
        f"    d = client.read_deployment_by_name('retrain/{name}')\n"
        "print(json.dumps({'id': str(d.id), 'entrypoint': d.entrypoint, 'work_pool': d.work_pool_name,\n"
        "    'parameters': d.parameters, 'path': d.path, 'job_variables': d.job_variables,\n"
        "    'schedules': [[s.schedule.cron, s.schedule.timezone, s.active] for s in d.schedules]}))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


@pytest.fixture(scope="module")
def wheel_venv(tmp_path_factory):
    """The checkout built as a wheel and installed into a fresh venv (tests/project/test_packaging.py);
    its bin folder and site-packages."""
    from tests.project.test_packaging import build_wheel, install_in_fresh_venv

    folder = tmp_path_factory.mktemp("wheel")
    site = install_in_fresh_venv(build_wheel(folder), folder)
    return folder / "venv" / "bin", site


# What a process worker's `python -m prefect.engine` does first, in the flow run's working directory.
LOAD_FLOW_OF_A_RUN = """
import asyncio, inspect, json, sys
from prefect.client.orchestration import get_client
from prefect.flows import load_flow_from_flow_run

async def main():
    async with get_client() as client:
        deployment = await client.read_deployment_by_name(sys.argv[1])
        flow_run = await client.create_flow_run_from_deployment(deployment.id)
        flow = await load_flow_from_flow_run(flow_run, use_placeholder_flow=False)
        print(json.dumps({"flow": flow.name, "file": inspect.getsourcefile(flow.fn)}))

asyncio.run(main())
"""


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_genimg_deploy_from_a_wheel_install_names_a_module_the_wheel_carries(prefect_server, wheel_venv, tmp_path):
    """No checkout anywhere: the deployment's entrypoint is a module of the installed package,
    and the flow loads from it the way a Prefect worker loads a scheduled run."""
    from tests.project.test_packaging import _clean_env

    bin_dir, site = wheel_venv
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**_clean_env(tmp_path / "home"), "PREFECT_API_URL": prefect_server, "PREFECT_HOME": str(tmp_path / "client")}
    created = subprocess.run(
        [str(bin_dir / "genimg"), "deploy", "--name", "from-wheel", "--json"],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert created.returncode == 0, created.stderr[-2000:]
    on_server = deployment_on_server(env, "from-wheel")
    assert on_server["entrypoint"] == json.loads(created.stdout)["entrypoint"] == "genimg.flows.retrain:retrain"
    # Flow runs start in the folder genimg deploy ran in, as with `prefect deploy`.
    assert on_server["path"] == on_server["job_variables"]["working_dir"] == str(elsewhere)

    loaded = subprocess.run(
        [str(bin_dir / "python"), "-c", LOAD_FLOW_OF_A_RUN, "retrain/from-wheel"],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert loaded.returncode == 0, loaded.stderr[-2000:]
    flow = json.loads(loaded.stdout.strip().splitlines()[-1])
    assert flow["flow"] == "retrain" and Path(flow["file"]) == site / "genimg" / "flows" / "retrain.py", flow


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_genimg_deploy_and_prefect_yaml_make_the_same_cron_deployment(prefect_server, tmp_path):
    env = client_env(prefect_server, tmp_path)
    created = subprocess.run(
        [str(BIN / "genimg"), "deploy", "--cron", "0 3 * * *", "--json"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert created.returncode == 0, created.stderr[-2000:]
    payload = json.loads(created.stdout)
    on_server = deployment_on_server(env)
    assert on_server["id"] == payload["deployment_id"]
    assert on_server["schedules"] == [["0 3 * * *", "UTC", True]]
    assert on_server["work_pool"] == "genimg-process" and on_server["entrypoint"] == "genimg.flows.retrain:retrain"
    assert on_server["path"] == str(ROOT)  # the folder it ran in

    # Again with another schedule: the same deployment, its schedule replaced.
    updated = subprocess.run(
        [str(BIN / "genimg"), "deploy", "--cron", "30 4 * * 1", "--timezone", "Europe/Berlin", "--json"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert updated.returncode == 0, updated.stderr[-2000:]
    on_server = deployment_on_server(env)
    assert on_server["id"] == payload["deployment_id"]
    assert on_server["schedules"] == [["30 4 * * 1", "Europe/Berlin", True]]

    # prefect.yaml declares the same deployment: deploying it puts back the default schedule.
    declared = yaml.safe_load((ROOT / "infra" / "prefect" / "prefect.yaml").read_text())["deployments"][0]
    deployed = subprocess.run(
        [str(BIN / "prefect"), "--no-prompt", "deploy", "--prefect-file", "infra/prefect/prefect.yaml", "--all"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert deployed.returncode == 0, deployed.stdout[-2000:] + deployed.stderr[-2000:]
    from_yaml = deployment_on_server(env)
    assert from_yaml["id"] == payload["deployment_id"]  # same flow, same name: one deployment
    assert from_yaml["entrypoint"] == declared["entrypoint"] == payload["entrypoint"]
    assert from_yaml["work_pool"] == declared["work_pool"]["name"] == payload["work_pool"]
    assert from_yaml["schedules"] == [[s["cron"], s["timezone"], s["active"]] for s in declared["schedules"]]
    assert from_yaml["schedules"] == [[s["cron"], s["timezone"], s["active"]] for s in payload["schedules"]]
    assert from_yaml["parameters"] == declared["parameters"] == payload["parameters"]


def test_deploy_without_a_server_or_with_a_bad_cron_says_what_is_wrong(tmp_path):
    # In subprocesses: importing Prefect binds its log handlers to the stderr of the moment, and
    # a CliRunner's stream is closed after the command (later flows in this session would log to it).
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    done = subprocess.run([str(BIN / "genimg"), "deploy"], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and "set PREFECT_API_URL" in done.stderr.strip().splitlines()[-1]
    env["PREFECT_API_URL"] = "http://127.0.0.1:9/api"
    done = subprocess.run(
        [str(BIN / "genimg"), "deploy", "--cron", "0 3 * *"], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 1 and "invalid --cron '0 3 * *'" in done.stderr.strip().splitlines()[-1]
