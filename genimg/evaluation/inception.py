"""The FID InceptionV3 (pytorch-fid's ported TF graph) in plain PyTorch, without torchvision.

Module and parameter names match torchvision's `Inception3(num_classes=1008, aux_logits=False)`
as patched by pytorch-fid, so its weights file loads with strict key matching.

`forward` preprocesses as torch-fidelity does (the extractor behind torchmetrics' FID, and so
the field's numbers): uint8 levels, TensorFlow 1.x bilinear resizing to 299×299, then
(x - 128) / 128. pytorch-fid's own preprocessing (PyTorch's half-pixel bilinear, 2x - 1) gives
slightly different features, hence different FIDs.

The weights are the standard file, fetched from pytorch-fid's release on first use into
$GENIMG_HOME/weights and accepted only with its known sha256 (see `find_inception_weights`).
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, BinaryIO

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genimg.errors import GenimgError
from genimg.feedback import phase
from genimg.settings import genimg_home

WEIGHTS_FILE_NAME = "pt_inception-2015-12-05-6726825d.pth"
WEIGHTS_ENV = "GENIMG_INCEPTION_WEIGHTS"
# The same bytes as torch-fidelity's weights-inception-2015-12-05-6726825d.pth (95,628,359 bytes).
WEIGHTS_SHA256 = "6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2"
WEIGHTS_MEGABYTES = 91
WEIGHTS_URL = (
    "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth"
)
URL_ENV = "GENIMG_INCEPTION_URL"  # the empty string turns fetching off
FETCH_TIMEOUT_SECONDS = 30.0
FETCH_CHUNK_BYTES = 1 << 20
# An offline machine would otherwise wait on the network at every evaluation.
FAILED_FETCH_MEMORY_SECONDS = 3600.0
FAILED_FETCH_MARKER = "inception-fetch-failed.json"
INPUT_SIZE = 299


class BasicConv2d(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, **kwargs: Any) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, bias=False, **kwargs)
        self.bn = nn.BatchNorm2d(out_channels, eps=0.001)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.bn(self.conv(x)))


def _avg_pool(x: Tensor) -> Tensor:
    # TF's average pool leaves the zero padding out of the mean.
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class InceptionA(nn.Module):
    def __init__(self, in_channels: int, pool_features: int) -> None:
        super().__init__()
        self.branch1x1 = BasicConv2d(in_channels, 64, kernel_size=1)
        self.branch5x5_1 = BasicConv2d(in_channels, 48, kernel_size=1)
        self.branch5x5_2 = BasicConv2d(48, 64, kernel_size=5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, padding=1)
        self.branch_pool = BasicConv2d(in_channels, pool_features, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        branch5x5 = self.branch5x5_2(self.branch5x5_1(x))
        branch3x3dbl = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        branch_pool = self.branch_pool(_avg_pool(x))
        return torch.cat([self.branch1x1(x), branch5x5, branch3x3dbl, branch_pool], 1)


class InceptionB(nn.Module):
    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.branch3x3 = BasicConv2d(in_channels, 384, kernel_size=3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        branch3x3dbl = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        branch_pool = F.max_pool2d(x, kernel_size=3, stride=2)
        return torch.cat([self.branch3x3(x), branch3x3dbl, branch_pool], 1)


class InceptionC(nn.Module):
    def __init__(self, in_channels: int, channels_7x7: int) -> None:
        super().__init__()
        c7 = channels_7x7
        self.branch1x1 = BasicConv2d(in_channels, 192, kernel_size=1)
        self.branch7x7_1 = BasicConv2d(in_channels, c7, kernel_size=1)
        self.branch7x7_2 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(in_channels, c7, kernel_size=1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(in_channels, 192, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        branch7x7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        branch7x7dbl = self.branch7x7dbl_1(x)
        for layer in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4, self.branch7x7dbl_5):
            branch7x7dbl = layer(branch7x7dbl)
        branch_pool = self.branch_pool(_avg_pool(x))
        return torch.cat([self.branch1x1(x), branch7x7, branch7x7dbl, branch_pool], 1)


class InceptionD(nn.Module):
    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.branch3x3_1 = BasicConv2d(in_channels, 192, kernel_size=1)
        self.branch3x3_2 = BasicConv2d(192, 320, kernel_size=3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(in_channels, 192, kernel_size=1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, kernel_size=3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        branch3x3 = self.branch3x3_2(self.branch3x3_1(x))
        branch7x7x3 = self.branch7x7x3_1(x)
        for layer in (self.branch7x7x3_2, self.branch7x7x3_3, self.branch7x7x3_4):
            branch7x7x3 = layer(branch7x7x3)
        branch_pool = F.max_pool2d(x, kernel_size=3, stride=2)
        return torch.cat([branch3x3, branch7x7x3, branch_pool], 1)


class InceptionE(nn.Module):
    def __init__(self, in_channels: int, *, max_pool: bool) -> None:
        super().__init__()
        # The ported graph's last block (Mixed_7c) max-pools here; Mixed_7b average-pools.
        self.max_pool = max_pool
        self.branch1x1 = BasicConv2d(in_channels, 320, kernel_size=1)
        self.branch3x3_1 = BasicConv2d(in_channels, 384, kernel_size=1)
        self.branch3x3_2a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 448, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, kernel_size=3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(in_channels, 192, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        branch3x3 = self.branch3x3_1(x)
        branch3x3 = torch.cat([self.branch3x3_2a(branch3x3), self.branch3x3_2b(branch3x3)], 1)
        branch3x3dbl = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        branch3x3dbl = torch.cat([self.branch3x3dbl_3a(branch3x3dbl), self.branch3x3dbl_3b(branch3x3dbl)], 1)
        pooled = F.max_pool2d(x, kernel_size=3, stride=1, padding=1) if self.max_pool else _avg_pool(x)
        branch_pool = self.branch_pool(pooled)
        return torch.cat([self.branch1x1(x), branch3x3, branch3x3dbl, branch_pool], 1)


class FIDInceptionV3(nn.Module):
    """InceptionV3 as used for FID; `forward` returns the 2048-d pool3 features."""

    num_features = 2048

    def __init__(self) -> None:
        super().__init__()
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, kernel_size=3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, kernel_size=3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, kernel_size=3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, kernel_size=1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, kernel_size=3)
        self.Mixed_5b = InceptionA(192, pool_features=32)
        self.Mixed_5c = InceptionA(256, pool_features=64)
        self.Mixed_5d = InceptionA(288, pool_features=64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = InceptionC(768, channels_7x7=128)
        self.Mixed_6c = InceptionC(768, channels_7x7=160)
        self.Mixed_6d = InceptionC(768, channels_7x7=160)
        self.Mixed_6e = InceptionC(768, channels_7x7=192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = InceptionE(1280, max_pool=False)
        self.Mixed_7c = InceptionE(2048, max_pool=True)
        # Unused for features; kept so the released state dict loads with strict key matching.
        self.fc = nn.Linear(2048, 1008)

    def forward(self, images: Tensor) -> Tensor:
        """(N, 1|3, H, W) images → (N, 2048) pool3 features, preprocessed as torch-fidelity does.

        uint8 images are taken as they are. Float images in [0, 1] are first quantised to the
        uint8 levels, round(x * 255) clamped to [0, 255], as saving them to PNG would: a
        generated image and its saved copy then give the same features. Grey images are
        repeated to three channels. The levels are resized to 299×299 with TensorFlow 1.x's
        bilinear rule and mapped to [-1, 1) by (x - 128) / 128.
        """
        if images.ndim != 4 or images.shape[1] not in (1, 3):
            raise ValueError(f"expected (N, 1|3, H, W) images, got shape {tuple(images.shape)}")
        if images.dtype == torch.uint8:
            x = images.float()
        elif images.is_floating_point():
            x = images.mul(255).round().clamp(0, 255).float()
        else:
            raise ValueError(f"expected uint8 or float images, got {images.dtype}")
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        rows = tensorflow1_resize_weights(x.shape[2], INPUT_SIZE).to(x.device)
        columns = tensorflow1_resize_weights(x.shape[3], INPUT_SIZE).to(x.device)
        x = (rows @ x @ columns.T - 128) / 128
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        for block in (
            self.Mixed_5b,
            self.Mixed_5c,
            self.Mixed_5d,
            self.Mixed_6a,
            self.Mixed_6b,
            self.Mixed_6c,
            self.Mixed_6d,
            self.Mixed_6e,
            self.Mixed_7a,
            self.Mixed_7b,
            self.Mixed_7c,
        ):
            x = block(x)
        return torch.flatten(F.adaptive_avg_pool2d(x, (1, 1)), 1)


def tensorflow1_resize_weights(in_size: int, out_size: int) -> Tensor:
    """(out_size, in_size) weights of TensorFlow 1.x bilinear resizing along one axis.

    TF1 (align_corners=False) samples output pixel i at source coordinate i * in/out, without
    the half-pixel offset of F.interpolate; the Inception graph's statistics were taken through
    that rule. The coordinate is computed in float32 as TF does, so the weights are TF's.
    """
    scale = torch.tensor(in_size / out_size, dtype=torch.float32)
    source = torch.arange(out_size, dtype=torch.float32) * scale
    low = source.floor().long()
    high = (low + 1).clamp(max=in_size - 1)
    fraction = source - low.float()
    weights = torch.zeros(out_size, in_size)
    output = torch.arange(out_size)
    # accumulate: at the last source pixel low == high, and the two weights must add up to 1.
    weights.index_put_((output, low), 1 - fraction, accumulate=True)
    weights.index_put_((output, high), fraction, accumulate=True)
    return weights


def cached_weights_path() -> Path:
    """Where fetched weights live: $GENIMG_HOME/weights/<WEIGHTS_FILE_NAME>."""
    return genimg_home() / "weights" / WEIGHTS_FILE_NAME


def inception_weights_path() -> Path | None:
    """$GENIMG_INCEPTION_WEIGHTS, else the cached weights file if it exists.

    Never downloads (`find_inception_weights` does); None when no weights file is on disk.
    """
    configured = os.environ.get(WEIGHTS_ENV)
    if configured:
        path = Path(configured).expanduser()
        if not path.is_file():
            raise GenimgError(f"{WEIGHTS_ENV} names {path}, which does not exist")
        return path
    cached = cached_weights_path()
    return cached if cached.is_file() else None


def find_inception_weights() -> tuple[Path | None, str | None]:
    """(weights file, None), or (None, why there is none) in one line.

    In order: $GENIMG_INCEPTION_WEIGHTS (used as given, unchecked, so that users can bring
    their own weights; a missing file raises GenimgError); the cached file; else the standard
    file fetched from $GENIMG_INCEPTION_URL (default pytorch-fid's release; empty: never fetch)
    and kept only if its sha256 is WEIGHTS_SHA256. A failed fetch is remembered for an hour:
    until then the same URL is not tried again and the remembered reason is returned.
    """
    path = inception_weights_path()
    if path is not None:
        return path, None
    destination = cached_weights_path()
    url = os.environ.get(URL_ENV, WEIGHTS_URL)
    if not url:
        return None, (
            f"fetching the FID Inception weights is off ({URL_ENV} is empty): put "
            f"{WEIGHTS_FILE_NAME} at {destination} or set {WEIGHTS_ENV} to its path"
        )
    marker = destination.parent / FAILED_FETCH_MARKER
    remembered = remembered_failure(marker, url)
    if remembered is not None:
        return None, remembered
    try:
        with phase(f"fetching the FID Inception weights ({WEIGHTS_MEGABYTES} MB) from {url} into {destination}"):
            fetched = fetch_weights(url, destination, WEIGHTS_SHA256)
    except GenimgError as error:
        remember_failure(marker, url, str(error))
        return None, str(error)
    marker.unlink(missing_ok=True)
    return fetched, None


def remembered_failure(marker: Path, url: str) -> str | None:
    """The reason a fetch of `url` failed less than an hour ago, from `marker`; else None."""
    try:
        record = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("url") != url:
        return None
    when, reason = record.get("time"), record.get("reason")
    if not isinstance(when, (int, float)) or not isinstance(reason, str):
        return None
    age = time.time() - when
    if not 0 <= age < FAILED_FETCH_MEMORY_SECONDS:
        return None
    return (
        f"{reason} (remembered from {age / 60:.0f} min ago: genimg tries again "
        f"{FAILED_FETCH_MEMORY_SECONDS / 60:.0f} min after a failure, or once {marker} "
        "is deleted)"
    )


def remember_failure(marker: Path, url: str, reason: str) -> None:
    record = {"url": url, "time": time.time(), "reason": reason}
    try:
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(json.dumps(record), encoding="utf-8")
    except OSError:
        pass  # an unwritable home only costs the memory: the next evaluation tries again


def fetch_weights(url: str, destination: Path, sha256: str) -> Path:
    """Download `url` to `destination` if its bytes have the sha256 `sha256`, else GenimgError.

    The bytes go to a temporary file beside `destination`, hashed as they arrive, and are
    renamed into place only once the digest matches: an interrupted or altered download never
    takes the place of the weights.
    """
    destination = Path(destination)
    try:
        destination.parent.mkdir(parents=True, exist_ok=True)
        handle, name = tempfile.mkstemp(prefix=f".{destination.name}.", suffix=".part", dir=destination.parent)
    except OSError as error:
        raise GenimgError(f"cannot write the download into {destination.parent}: {error}") from error
    partial = Path(name)
    try:
        with os.fdopen(handle, "wb") as out:
            digest = download(url, out)
        if digest != sha256:
            raise GenimgError(
                f"checksum mismatch: {url} gave sha256 {digest}, expected {sha256}; the download was discarded"
            )
        os.replace(partial, destination)
    finally:
        partial.unlink(missing_ok=True)
    return destination


def download(url: str, out: BinaryIO) -> str:
    """Stream `url` into `out`; the sha256 hex digest of the bytes."""
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=FETCH_TIMEOUT_SECONDS) as response:
            while chunk := response.read(FETCH_CHUNK_BYTES):
                digest.update(chunk)
                out.write(chunk)
    except (urllib.error.HTTPError, ValueError) as error:
        # The server answered with an error, or the URL is malformed: not a network problem.
        raise GenimgError(f"cannot fetch {url}: {error}") from error
    except (OSError, http.client.HTTPException) as error:
        # URLError and timeouts are OSErrors; HTTPException covers a connection cut mid-file.
        raise GenimgError(f"offline? cannot fetch {url}: {error}") from error
    return digest.hexdigest()


def load_fid_inception(path: Path) -> FIDInceptionV3:
    """Load the pytorch-fid state dict at `path` into an FIDInceptionV3 in eval mode."""
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise GenimgError(f"cannot read Inception weights {path}: {error}") from error
    if not isinstance(state, dict):
        raise GenimgError(f"Inception weights {path} hold a {type(state).__name__}, not a state dict")
    model = FIDInceptionV3()
    try:
        # strict=False only so the first offending key can be named; any mismatch is still fatal.
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as error:
        raise GenimgError(f"Inception weights {path} do not match the FID InceptionV3: {error}") from error
    problems = [
        f"{what} key {keys[0]!r}"
        for what, keys in (("missing", result.missing_keys), ("unexpected", result.unexpected_keys))
        if keys
    ]
    if problems:
        raise GenimgError(f"Inception weights {path} do not match the FID InceptionV3: " + ", ".join(problems))
    return model.eval()
