"""The pyfunc model as `mlflow models serve` answers it: requests go through MLflow's own scoring
code (`invocations`, what the server's /invocations route runs), so payload formats, schema
enforcement and error answers are MLflow's. Bad input is a 400 with a one-line reason and no
stack trace; several rows are refused, not silently cut to the first; a base64 context works under
`inputs` as under `dataframe_records`."""

import base64
import io
import json

import numpy as np
import pytest
from mlflow.exceptions import MlflowException

from tests.conftest import tiny_config


def serve(tmp_path, name, config):
    """The genimg pyfunc of an untrained tiny model, saved and loaded as MLflow serves it."""
    import mlflow

    from genimg.models import build_model
    from genimg.models.base import save_model
    from genimg.tracking.registry import PYFUNC_FILE, model_code, signature_for

    model = build_model(name, config)
    weights = save_model(model, tmp_path / "weights")
    mlflow.pyfunc.save_model(
        str(tmp_path / "served"),
        python_model=str(PYFUNC_FILE),
        artifacts={"weights": str(weights)},
        code_paths=[str(model_code(tmp_path / "code"))],
        signature=signature_for(model),
        pip_requirements=["torch", "numpy", "safetensors"],
    )
    return mlflow.pyfunc.load_model(str(tmp_path / "served"))


def post(model, payload):
    """(HTTP status, JSON body) of an /invocations request, as the scoring server answers it."""
    from mlflow.pyfunc.scoring_server import invocations

    try:
        response = invocations(json.dumps(payload), "application/json", model, model.metadata.get_input_schema())
    except MlflowException as exc:
        return exc.get_http_status_code(), json.loads(exc.serialize_as_json())
    return response.status, json.loads(response.response)


@pytest.fixture
def conditional_gan(tmp_path):
    return serve(tmp_path, "gan", tiny_config("gan", (1, 16, 16), conditional=True, num_classes=3))


@pytest.fixture
def rvae(tmp_path):
    return serve(tmp_path, "rvae", tiny_config("rvae", (1, 16, 16), num_frames=4))


def test_one_row_in_each_format_gives_images(conditional_gan):
    for payload in (
        {"dataframe_records": [{"num_samples": 2, "seed": 1}]},
        {"dataframe_split": {"columns": ["num_samples", "seed"], "data": [[2, 1]]}},
        {"inputs": {"num_samples": 2, "seed": 1}},
        {"inputs": {"num_samples": [2], "seed": [1]}},
    ):
        status, body = post(conditional_gan, payload)
        assert status == 200, (payload, body)
        assert np.asarray(body["predictions"]).shape == (2, 1, 16, 16), payload


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ({"dataframe_records": [{"num_samples": 2, "class_labels": "zebra"}]}, "unknown class 'zebra'"),
        ({"dataframe_records": [{"num_samples": 0}]}, "num_samples must be an integer ≥ 1, got 0"),
        ({"dataframe_records": [{"num_samples": 1}, {"num_samples": 2}]}, "one row per request, got 2"),
        ({"inputs": {"num_samples": [1, 2]}}, "per request, got 2"),
    ],
)
def test_bad_input_is_a_400_with_the_reason_and_no_stack_trace(conditional_gan, payload, reason):
    status, body = post(conditional_gan, payload)
    assert status == 400 and body["error_code"] == "INVALID_PARAMETER_VALUE", body
    assert reason in body["message"] and "stack_trace" not in body and "Traceback" not in body["message"], body


def npy_base64(array):
    buffer = io.BytesIO()
    np.save(buffer, array)
    return base64.b64encode(buffer.getvalue()).decode()


def test_a_base64_context_is_continued_under_inputs_and_dataframe_records(rvae):
    context = np.zeros((2, 2, 1, 16, 16), np.uint8)
    context[:, :, :, 4:12, 4:12] = 255
    encoded = npy_base64(context)
    for payload in (
        {"inputs": {"num_samples": 2, "seed": 0, "num_frames": 4, "context": encoded}},
        {"inputs": {"num_samples": [2], "seed": [0], "num_frames": [4], "context": [encoded]}},
        {"dataframe_records": [{"num_samples": 2, "seed": 0, "num_frames": 4, "context": encoded}]},
    ):
        status, body = post(rvae, payload)
        assert status == 200, (list(payload), body)
        frames = np.asarray(body["predictions"])
        assert frames.shape == (2, 4, 1, 16, 16) and (frames[:, :2] == context).all(), list(payload)


def test_a_pickled_or_misshapen_context_is_refused_with_a_reason(rvae):
    buffer = io.BytesIO()
    np.save(buffer, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    pickled = base64.b64encode(buffer.getvalue()).decode()
    status, body = post(rvae, {"inputs": {"num_samples": 1, "context": pickled}})
    assert status == 400 and "context: not a numeric .npy array" in body["message"], body
    wrong = npy_base64(np.zeros((3, 2, 1, 16, 16), np.uint8))
    status, body = post(rvae, {"inputs": {"num_samples": 1, "context": wrong}})
    assert status == 400 and "context: expected uint8 frames (num_samples=1" in body["message"], body


def readme_requests():
    """The JSON bodies of the README's curl examples for a served model."""
    import re
    from pathlib import Path

    readme = (Path(__file__).parents[2] / "README.md").read_text()
    section = readme.split("**Serving.**", 1)[1].split("\n\n", 4)[-1]
    bodies = re.findall(r"curl -s http://127\.0\.0\.1:5001/invocations .* -d '(\{.*\})'", readme)
    assert len(bodies) >= 3 and section, "the README's serving examples"
    return [json.loads(body) for body in bodies]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_mlflow_models_serve_answers_the_readme_requests_and_refuses_bad_ones(tmp_path):
    """The real `mlflow models serve` on 127.0.0.1: every curl body in the README, a base64 context,
    and a bad request (400, one line, no server paths)."""
    import os
    import subprocess
    import sys
    import urllib.error
    import urllib.request
    from pathlib import Path

    from tests.conftest import free_port, wait_until_healthy

    serve(tmp_path, "rvae", tiny_config("rvae", (1, 16, 16), num_frames=6))
    port = free_port()
    log = tmp_path / "server.log"
    command = [str(Path(sys.executable).parent / "mlflow"), "models", "serve", "-m", str(tmp_path / "served")]
    command += ["-h", "127.0.0.1", "-p", str(port), "--env-manager", "local"]
    # The server execs `uvicorn` by name: the venv's bin on PATH, as in an activated venv.
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    with log.open("w") as output:
        server = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, env=env)
    try:
        wait_until_healthy(f"http://127.0.0.1:{port}/ping", server, "mlflow models serve", timeout=120, log_path=log)

        def request(body):
            call = urllib.request.Request(
                f"http://127.0.0.1:{port}/invocations",
                data=json.dumps(body).encode(),
                headers={"Content-Type": "application/json"},
            )
            try:
                with urllib.request.urlopen(call, timeout=60) as response:
                    return response.status, json.loads(response.read())
            except urllib.error.HTTPError as error:
                return error.code, json.loads(error.read())

        for body in readme_requests():
            status, answer = request(body)
            assert status == 200, (body, answer)
            frames = np.asarray(answer["predictions"], dtype=np.uint8)
            assert frames.ndim == 5 and frames.shape[2:] == (1, 16, 16), body
        context = np.full((1, 2, 1, 16, 16), 200, np.uint8)
        status, answer = request({"inputs": {"num_samples": 1, "num_frames": 6, "context": npy_base64(context)}})
        assert status == 200 and (np.asarray(answer["predictions"])[:, :2] == 200).all(), answer
        status, answer = request({"dataframe_records": [{"num_samples": 0}]})
        assert status == 400 and "num_samples must be an integer ≥ 1, got 0" in answer["message"], answer
        assert "stack_trace" not in answer and str(tmp_path) not in json.dumps(answer), answer
    finally:
        server.terminate()
        server.wait(timeout=30)
