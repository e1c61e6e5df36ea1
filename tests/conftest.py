from __future__ import annotations

import os

import numpy as np
import pytest
import torch

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
# Under pytest-xdist each worker gets one core's worth of threads (and so do the processes it
# starts): two workers of two threads each on 2 cores spin against each other and run the tier
# slower than one worker does.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"
    os.environ["MKL_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
# Tests never fetch the FID Inception weights (its own tests fetch from a local server): every
# evaluation uses the dataset's network unless a test provides weights.
os.environ.setdefault("GENIMG_INCEPTION_URL", "")

# Tests that start a Ray cluster (or a local Ray): `make test` runs them one at a time after the
# rest (which runs on two xdist workers). Two clusters at once on 2 cores starve each other
# (a 2-worker run took 3 times as long) and each uses both cores anyway.
STARTS_RAY = pytest.mark.ray

# Tiny networks keep every model test to a fraction of a second on 2 CPU cores.
TINY = {
    "gan-mlp": {"latent_dim": 8, "generator_hidden": [32, 32], "discriminator_hidden": [32]},
    "gan": {"latent_dim": 8, "width": 4},
    "vae": {"latent_dim": 4, "width": 4},
    "rvae": {"latent_dim": 4, "width": 4, "frame_dim": 16, "hidden_dim": 16},
}


def tiny_config(name: str, image_shape: tuple[int, int, int], **extra: object) -> dict:
    return {**TINY[name], "image_shape": list(image_shape), **extra}


def write_idx(path, array: np.ndarray, compress: bool) -> None:
    """An IDX file (the MNIST format) of uint8 `array`, gzip-compressed if `compress`."""
    import gzip
    import struct

    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + b"".join(struct.pack(">I", n) for n in array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(payload) if compress else payload)


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GENIMG_HOME", str(tmp_path_factory.mktemp("genimg-home")))
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def digits() -> np.ndarray:
    """The builtin digits (1,797 × 1 × 16 × 16 uint8)."""
    from genimg.data import read_source

    return read_source("builtin:digits").data


@pytest.fixture(scope="session")
def small_sequences(digits: np.ndarray) -> np.ndarray:
    """64 moving-digit sequences of 6 frames in a 16 px canvas, from 8 px digits."""
    from genimg.data import make_moving_digits

    small_digits = digits[:, :, ::2, ::2].copy()
    return make_moving_digits(small_digits, 64, num_frames=6, canvas_size=16, seed=1)


# --- object stores: a local directory, and S3 over HTTP from a real moto_server process --------

import socket  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from pathlib import Path  # noqa: E402

S3_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing-access-key",
    "AWS_SECRET_ACCESS_KEY": "testing-secret-value-42",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def free_port() -> int:
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """`count` distinct free ports: every socket stays bound until all are drawn, so the kernel
    cannot hand out the same port twice (which drawing them one at a time allows)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def wait_for_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


@pytest.fixture(scope="session")
def moto_endpoint():
    """A moto_server process on a free loopback port, for the whole session."""
    port = free_port()
    server = Path(sys.executable).parent / "moto_server"
    process = subprocess.Popen(
        [str(server), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture
def s3_env(moto_endpoint, monkeypatch):
    """boto3 pointed at moto by its own env vars; returns a fresh bucket's name."""
    import boto3

    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", moto_endpoint)
    for key, value in S3_CREDENTIALS.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("GENIMG_S3_MAX_ATTEMPTS", "2")
    bucket = f"genimg-{uuid.uuid4().hex[:12]}"
    boto3.client("s3").create_bucket(Bucket=bucket)
    return bucket


@pytest.fixture(params=["file", "s3"])
def store_uri(request, tmp_path, monkeypatch):
    """The same test on a local-directory store and on S3; GENIMG_STORE points at it."""
    if request.param == "file":
        uri = (tmp_path / "store").as_uri()
    else:
        bucket = request.getfixturevalue("s3_env")
        uri = f"s3://{bucket}/team/store"
    monkeypatch.setenv("GENIMG_STORE", uri)
    return uri


@pytest.fixture
def store(store_uri):
    from genimg.store import open_store

    return open_store(store_uri)


def wait_until_healthy(url: str, process, what: str, timeout: float = 180, log_path=None) -> None:
    """Poll a server's health URL until it answers 200; fail early if its process exits."""
    import time
    import urllib.request

    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        assert process.poll() is None, f"{what} exited" + (f": {log_path.read_text()[-3000:]}" if log_path else "")
        assert time.monotonic() < deadline, f"{what} did not come up"
        time.sleep(0.5)
