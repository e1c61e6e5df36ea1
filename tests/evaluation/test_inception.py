from __future__ import annotations

from pathlib import Path

import pytest
import torch

from genimg.errors import GenimgError
from genimg.evaluation.inception import (
    WEIGHTS_FILE_NAME,
    FIDInceptionV3,
    inception_weights_path,
    load_fid_inception,
)


@pytest.fixture(scope="module")
def model() -> FIDInceptionV3:
    torch.manual_seed(0)
    return FIDInceptionV3().eval()


def test_state_dict_round_trip_gives_same_features(model: FIDInceptionV3, tmp_path: Path) -> None:
    path = tmp_path / WEIGHTS_FILE_NAME
    torch.save(model.state_dict(), path)
    loaded = load_fid_inception(path)
    assert not loaded.training
    grey = torch.rand(2, 1, 16, 16)
    with torch.no_grad():
        expected, actual = model(grey), loaded(grey)
        as_rgb = loaded(grey.repeat(1, 3, 1, 1))
    assert actual.shape == (2, FIDInceptionV3.num_features)
    assert torch.equal(actual, expected)
    assert torch.equal(as_rgb, actual)


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


def test_weights_path_lookup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GENIMG_HOME", str(tmp_path))
    monkeypatch.delenv("GENIMG_INCEPTION_WEIGHTS", raising=False)
    assert inception_weights_path() is None

    default = tmp_path / "weights" / WEIGHTS_FILE_NAME
    default.parent.mkdir()
    default.write_bytes(b"x")
    assert inception_weights_path() == default

    missing = tmp_path / "elsewhere.pth"
    monkeypatch.setenv("GENIMG_INCEPTION_WEIGHTS", str(missing))
    with pytest.raises(GenimgError, match="elsewhere.pth"):
        inception_weights_path()
    missing.write_bytes(b"x")
    assert inception_weights_path() == missing


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
