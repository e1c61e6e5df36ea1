from __future__ import annotations

import hashlib
import importlib
import json
import logging
import socket
import sys
import threading
import time
import types
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

# Before any bare `torch_fidelity` module is registered below: torchmetrics decides once, at its
# import, whether torch-fidelity is installed, and must go on seeing that it is not.
import torchmetrics.image.fid  # noqa: F401
from torch import nn

from genimg.errors import GenimgError
from genimg.evaluation import inception
from genimg.evaluation.inception import (
    FAILED_FETCH_MARKER,
    WEIGHTS_FILE_NAME,
    FIDInceptionV3,
    fetch_weights,
    find_inception_weights,
    inception_weights_path,
    load_fid_inception,
)
from genimg.evaluation.metrics import frechet_distance

REFERENCE = Path(sys.prefix) / "reference" / "torch_fidelity"


def random_inception(seed: int) -> FIDInceptionV3:
    """Seeded weights that keep activations of order one through all the layers (He-initialised
    convolutions) and BatchNorms whose statistics and affine terms all differ from the defaults."""
    generator = torch.Generator().manual_seed(seed)
    network = FIDInceptionV3()
    with torch.no_grad():
        for module in network.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, nonlinearity="relu", generator=generator)
            elif isinstance(module, nn.BatchNorm2d):
                size = module.num_features
                module.running_mean.copy_(torch.randn(size, generator=generator) * 0.1)
                module.running_var.copy_(torch.rand(size, generator=generator) + 0.5)
                module.weight.copy_(torch.rand(size, generator=generator) + 0.5)
                module.bias.copy_(torch.randn(size, generator=generator) * 0.1)
    return network.eval()


@pytest.fixture(scope="module")
def model() -> FIDInceptionV3:
    return random_inception(seed=0)


def test_state_dict_round_trip_gives_same_features(model: FIDInceptionV3, tmp_path: Path) -> None:
    path = tmp_path / WEIGHTS_FILE_NAME
    torch.save(model.state_dict(), path)
    loaded = load_fid_inception(path)
    assert not loaded.training
    grey = torch.randint(0, 256, (2, 1, 16, 16), dtype=torch.uint8)
    with torch.no_grad():
        expected, actual = model(grey), loaded(grey)
        as_rgb = loaded(grey.repeat(1, 3, 1, 1))
    assert actual.shape == (2, FIDInceptionV3.num_features)
    assert torch.equal(actual, expected)
    assert torch.equal(as_rgb, actual)


def test_float_images_are_quantised_to_uint8_levels(model: FIDInceptionV3) -> None:
    levels = torch.randint(0, 256, (2, 3, 12, 12), dtype=torch.uint8)
    # Off the levels by less than half a step, and out of range: what saving to PNG would keep.
    floats = levels.double() / 255 + torch.empty(2, 3, 12, 12).uniform_(-0.4, 0.4).double() / 255
    floats[0, 0, 0, 0], floats[1, 2, 5, 5] = -0.5, 1.5
    levels[0, 0, 0, 0], levels[1, 2, 5, 5] = 0, 255
    with torch.no_grad():
        assert torch.equal(model(floats), model(levels))
        # 0.6 of a step above a level is the next level; the features tell the two apart.
        next_levels = levels.clamp(max=254) + 1
        assert torch.equal(model(next_levels.float() / 255 - 0.4 / 255), model(next_levels))
        assert not torch.allclose(model(next_levels), model(levels), rtol=1e-4, atol=0)
    with pytest.raises(ValueError, match="uint8 or float"):
        model(levels.long())


def test_resizing_is_tensorflow1_bilinear_without_the_half_pixel_offset() -> None:
    weights = inception.tensorflow1_resize_weights(4, 6)
    # Output pixel i samples source coordinate i * 4/6: 0, 2/3, 4/3, 2, 8/3, 10/3 (the last two
    # past the last pixel's centre, so it is repeated).
    expected = torch.tensor(
        [
            [1, 0, 0, 0],
            [1 / 3, 2 / 3, 0, 0],
            [0, 2 / 3, 1 / 3, 0],
            [0, 0, 1, 0],
            [0, 0, 1 / 3, 2 / 3],
            [0, 0, 0, 1],
        ]
    )
    assert torch.allclose(weights, expected, atol=1e-6)
    assert torch.allclose(inception.tensorflow1_resize_weights(16, 299).sum(1), torch.ones(299))


def test_layout_matches_pytorch_fid_weights(model: FIDInceptionV3) -> None:
    shapes = {key: tuple(value.shape) for key, value in model.state_dict().items()}
    assert shapes["Conv2d_1a_3x3.conv.weight"] == (32, 3, 3, 3)
    assert shapes["Conv2d_1a_3x3.bn.running_var"] == (32,)
    assert shapes["Mixed_5b.branch_pool.conv.weight"] == (32, 192, 1, 1)
    assert shapes["Mixed_6a.branch3x3.conv.weight"] == (384, 288, 3, 3)
    assert shapes["Mixed_6b.branch7x7_2.conv.weight"] == (128, 128, 1, 7)
    assert shapes["Mixed_6e.branch7x7dbl_5.conv.weight"] == (192, 192, 1, 7)
    assert shapes["Mixed_7a.branch7x7x3_4.conv.weight"] == (192, 192, 3, 3)
    assert shapes["Mixed_7b.branch3x3dbl_1.conv.weight"] == (448, 1280, 1, 1)
    assert shapes["Mixed_7c.branch3x3dbl_3b.conv.weight"] == (384, 384, 3, 1)
    assert shapes["fc.weight"] == (1008, 2048)
    assert not any(key.startswith("AuxLogits") for key in shapes)
    # torchvision's Inception3 has 27,161,264 parameters; minus AuxLogits (3,326,696),
    # plus 8 more fc classes (8 * 2048 + 8).
    assert sum(p.numel() for p in model.parameters()) == 23_850_960


def test_mismatched_state_dict_is_rejected(model: FIDInceptionV3, tmp_path: Path) -> None:
    state = dict(model.state_dict())
    state["fc.bias_renamed"] = state.pop("fc.bias")
    path = tmp_path / "wrong.pth"
    torch.save(state, path)
    with pytest.raises(GenimgError, match=r"wrong\.pth.*fc\.bias"):
        load_fid_inception(path)

    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(GenimgError, match=r"garbage\.pth"):
        load_fid_inception(garbage)


# --------------------------------------------------------------------------------------------
# Agreement with torch-fidelity, the extractor behind torchmetrics' FID


@pytest.fixture
def torch_fidelity_extractor(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """torch-fidelity's FeatureExtractorInceptionV3 from the reference copy `make setup` puts
    beside the venv, imported without the package's __init__ (which imports torchvision)."""
    if not (REFERENCE / "feature_extractor_inceptionv3.py").is_file():
        pytest.fail(f"torch-fidelity's reference copy is missing at {REFERENCE}: run `make setup`")
    package = types.ModuleType("torch_fidelity")
    package.__path__ = [str(REFERENCE)]
    had_torchvision = "torchvision" in sys.modules
    monkeypatch.setitem(sys.modules, "torch_fidelity", package)
    try:
        module = importlib.import_module("torch_fidelity.feature_extractor_inceptionv3")
        assert ("torchvision" in sys.modules) == had_torchvision
        yield module.FeatureExtractorInceptionV3
    finally:
        for name in [name for name in sys.modules if name.startswith("torch_fidelity.")]:
            del sys.modules[name]


def frechet_from_samples(real: np.ndarray, fake: np.ndarray) -> float:
    """torch-fidelity's FID of two feature sets, ‖μ_r − μ_f‖² + Tr Σ_r + Tr Σ_f − 2 Σ √eig(Σ_r Σ_f).

    With fewer samples than dimensions the non-zero eigenvalues of Σ_r Σ_f are the squared
    singular values of X_r X_fᵀ / √((n_r − 1)(n_f − 1)), X the centred samples: the same number
    without the 2048×2048 eigendecomposition (a minute on 2 cores)."""
    centred_real, centred_fake = real - real.mean(0), fake - fake.mean(0)
    scale = np.sqrt((len(real) - 1) * (len(fake) - 1))
    cross = np.linalg.svd(centred_real @ centred_fake.T / scale, compute_uv=False).sum()
    return float(
        ((real.mean(0) - fake.mean(0)) ** 2).sum()
        + (centred_real**2).sum() / (len(real) - 1)
        + (centred_fake**2).sum() / (len(fake) - 1)
        - 2 * cross
    )


@pytest.mark.slow
def test_features_and_fid_agree_with_torch_fidelity(torch_fidelity_extractor: Any, tmp_path: Path) -> None:
    weights = tmp_path / WEIGHTS_FILE_NAME
    torch.save(random_inception(seed=0).state_dict(), weights)
    ours = load_fid_inception(weights)
    library = torch_fidelity_extractor("inception-v3-compat", ["2048"], feature_extractor_weights_path=str(weights))

    # 12 images a set: each costs a 299×299 Inception pass per extractor whatever its size.
    generator = torch.Generator().manual_seed(1)
    real = torch.randint(0, 256, (12, 3, 16, 16), generator=generator, dtype=torch.uint8)
    # Grey images, darker on average, given to genimg as they are and to torch-fidelity
    # (RGB only) repeated to three channels.
    grey = (torch.rand(12, 1, 32, 32, generator=generator) ** 2 * 255).to(torch.uint8)
    with torch.no_grad():
        our_real, our_grey = ours(real).double(), ours(grey).double()
        (library_real,), (library_grey,) = library(real), library(grey.repeat(1, 3, 1, 1))
    library_real, library_grey = library_real.double(), library_grey.double()

    difference = max(float((our_real - library_real).abs().max()), float((our_grey - library_grey).abs().max()))
    spread = float(library_real.std(0).mean())  # how far apart images' features are
    print(
        f"max |genimg - torch-fidelity| feature difference {difference:.3g} (features' spread over images {spread:.3g})"
    )
    assert difference < 1e-3 * spread

    library_fid = frechet_from_samples(library_real.numpy(), library_grey.numpy())
    our_fid = frechet_distance(our_real, our_grey)
    relative = abs(our_fid - library_fid) / library_fid
    print(f"FID genimg {our_fid:.6f}, torch-fidelity {library_fid:.6f}, relative difference {relative:.3g}")
    assert library_fid > 1.0  # the two sets differ: a real distance, not rounding noise
    assert relative < 1e-3


# --------------------------------------------------------------------------------------------
# Finding and fetching the weights


class Served:
    """What the local server answers every GET with, and the paths it was asked for."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.body = b""
        self.status = 200
        self.requests: list[str] = []


@pytest.fixture
def server() -> Iterator[Served]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            served.requests.append(self.path)
            self.send_response(served.status)
            self.send_header("Content-Length", str(len(served.body)))
            self.end_headers()
            self.wfile.write(served.body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # no request lines in the test output

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    served = Served(f"http://127.0.0.1:{httpd.server_address[1]}/{WEIGHTS_FILE_NAME}")
    # A short poll interval: shutdown() waits for the serving loop to notice it.
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield served
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


class Collected(logging.Handler):
    """Keeps the messages logged to it (genimg's phase lines)."""

    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("GENIMG_HOME", str(tmp_path))
    monkeypatch.delenv("GENIMG_INCEPTION_WEIGHTS", raising=False)
    return tmp_path


def closed_port_url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/{WEIGHTS_FILE_NAME}"


def test_fetch_weights_keeps_a_download_with_the_expected_digest(server: Served, tmp_path: Path) -> None:
    server.body = bytes(range(256)) * 10_000  # 2.5 MB: several read chunks
    destination = tmp_path / "weights" / "inception.pth"
    digest = hashlib.sha256(server.body).hexdigest()
    assert fetch_weights(server.url, destination, digest) == destination
    assert destination.read_bytes() == server.body
    assert [path.name for path in destination.parent.iterdir()] == ["inception.pth"]


def test_fetch_weights_discards_a_download_with_another_digest(server: Served, tmp_path: Path) -> None:
    server.body = b"not the weights"
    expected = hashlib.sha256(b"the weights").hexdigest()
    got = hashlib.sha256(server.body).hexdigest()
    destination = tmp_path / "inception.pth"
    with pytest.raises(GenimgError, match=f"checksum mismatch.*{got}.*{expected}"):
        fetch_weights(server.url, destination, expected)
    assert list(tmp_path.iterdir()) == []


def test_weights_with_the_wrong_checksum_are_not_cached_and_the_failure_is_remembered(
    server: Served, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server.body = b"not the weights"
    monkeypatch.setenv("GENIMG_INCEPTION_URL", server.url)
    handler = Collected()
    logger = logging.getLogger("genimg")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        path, reason = find_inception_weights()
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    assert path is None and reason is not None and "checksum" in reason
    folder = home / "weights"
    assert sorted(p.name for p in folder.iterdir()) == [FAILED_FETCH_MARKER]
    assert any(
        f"fetching the FID Inception weights (91 MB) from {server.url} into {folder}" in line
        for line in handler.messages
    )

    again, remembered = find_inception_weights()
    assert again is None and remembered is not None and reason in remembered
    assert len(server.requests) == 1  # remembered: the server was not asked again

    # An hour later, or for another URL, genimg tries again.
    marker = folder / FAILED_FETCH_MARKER
    record = json.loads(marker.read_text())
    marker.write_text(json.dumps({**record, "time": time.time() - 3601}))
    find_inception_weights()
    assert len(server.requests) == 2
    monkeypatch.setenv("GENIMG_INCEPTION_URL", server.url + "?mirror")
    find_inception_weights()
    assert len(server.requests) == 3


def test_an_unreachable_url_fails_fast_and_is_not_retried_within_the_hour(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = closed_port_url()
    monkeypatch.setenv("GENIMG_INCEPTION_URL", url)
    started = time.perf_counter()
    path, reason = find_inception_weights()
    assert time.perf_counter() - started < 10
    assert path is None and reason is not None
    assert reason.startswith(f"offline? cannot fetch {url}: ")
    assert not (home / "weights" / WEIGHTS_FILE_NAME).exists()

    def no_network(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a remembered failure went to the network again")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    started = time.perf_counter()
    path, remembered = find_inception_weights()
    assert time.perf_counter() - started < 0.5
    assert path is None and remembered is not None and reason in remembered
    assert "remembered" in remembered


def test_a_malformed_url_or_an_http_error_is_a_reason(
    server: Served, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GENIMG_INCEPTION_URL", "not a url")
    path, reason = find_inception_weights()
    assert path is None and reason is not None and reason.startswith("cannot fetch not a url: ")
    missing = server.url.rsplit("/", 1)[0] + "/missing"
    monkeypatch.setenv("GENIMG_INCEPTION_URL", missing)
    server.status = 404
    path, reason = find_inception_weights()
    assert path is None and reason == f"cannot fetch {missing}: HTTP Error 404: Not Found"


def test_an_empty_url_turns_fetching_off(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GENIMG_INCEPTION_URL", "")
    path, reason = find_inception_weights()
    assert path is None and reason is not None
    assert "fetching the FID Inception weights is off" in reason
    assert str(home / "weights" / WEIGHTS_FILE_NAME) in reason
    assert "GENIMG_INCEPTION_WEIGHTS" in reason
    assert list(home.iterdir()) == []


def test_a_given_or_cached_file_wins_over_fetching(server: Served, home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GENIMG_INCEPTION_URL", server.url)
    own = home / "own.pth"
    own.write_bytes(b"a user's own weights: no checksum applies")
    monkeypatch.setenv("GENIMG_INCEPTION_WEIGHTS", str(own))
    assert find_inception_weights() == (own, None)

    monkeypatch.setenv("GENIMG_INCEPTION_WEIGHTS", str(home / "missing.pth"))
    with pytest.raises(GenimgError, match=r"missing\.pth"):
        find_inception_weights()

    monkeypatch.delenv("GENIMG_INCEPTION_WEIGHTS")
    cached = home / "weights" / WEIGHTS_FILE_NAME
    cached.parent.mkdir()
    cached.write_bytes(b"x")
    assert find_inception_weights() == (cached, None)
    assert server.requests == []


def test_weights_path_lookup_never_fetches(server: Served, home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GENIMG_INCEPTION_URL", server.url)
    assert inception_weights_path() is None

    default = home / "weights" / WEIGHTS_FILE_NAME
    default.parent.mkdir()
    default.write_bytes(b"x")
    assert inception_weights_path() == default

    missing = home / "elsewhere.pth"
    monkeypatch.setenv("GENIMG_INCEPTION_WEIGHTS", str(missing))
    with pytest.raises(GenimgError, match="elsewhere.pth"):
        inception_weights_path()
    missing.write_bytes(b"x")
    assert inception_weights_path() == missing
    assert server.requests == []
