import json

import pytest
import torch

from genimg.errors import GenimgError
from genimg.models import build_model, load_model, save_model
from tests.conftest import tiny_config

CASES = [("gan-mlp", (1, 16, 16)), ("gan", (3, 16, 16)), ("vae", (1, 16, 16)), ("rvae", (1, 16, 16))]


@pytest.mark.parametrize(("name", "shape"), CASES)
def test_save_then_load_gives_identical_samples(tmp_path, name, shape):
    model = build_model(name, tiny_config(name, shape))
    # Move every weight and buffer off its initial value so a silent re-init would show.
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    save_model(model, tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["model.json", "model.safetensors"]
    loaded = load_model(tmp_path / "m")
    assert type(loaded) is type(model) and loaded.config == model.config
    assert torch.equal(loaded.sample(6, seed=3), model.sample(6, seed=3))


def test_load_rebuilds_the_config_from_json_not_pickle(tmp_path):
    model = build_model("gan", tiny_config("gan", (1, 8, 8), loss="hinge", spectral_norm=True))
    save_model(model, tmp_path)
    description = json.loads((tmp_path / "model.json").read_text())
    assert description["model"] == "gan"
    assert description["config"]["loss"] == "hinge"
    assert description["config"]["image_shape"] == [1, 8, 8]


def test_load_errors_name_the_problem(tmp_path):
    with pytest.raises(GenimgError, match="model folder not found"):
        load_model(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(GenimgError, match="no model.json"):
        load_model(tmp_path / "empty")
    save_model(build_model("vae", tiny_config("vae", (1, 16, 16))), tmp_path / "vae")
    (tmp_path / "vae" / "model.safetensors").write_bytes(b"\x00" * 20)
    with pytest.raises(GenimgError, match="do not match the sha256 their model.json records"):
        load_model(tmp_path / "vae")
    description = json.loads((tmp_path / "vae" / "model.json").read_text())
    del description["weights_sha256"]  # a folder written before the digest was recorded
    (tmp_path / "vae" / "model.json").write_text(json.dumps(description))
    with pytest.raises(GenimgError, match="cannot load weights"):
        load_model(tmp_path / "vae")


def test_weights_swapped_between_two_folders_or_altered_are_refused(tmp_path):
    first, second = (build_model("vae", tiny_config("vae", (1, 16, 16))) for _ in range(2))
    torch.nn.init.constant_(next(second.parameters()), 0.5)  # other weights, the same shapes
    save_model(first, tmp_path / "a")
    save_model(second, tmp_path / "b")
    (tmp_path / "a" / "model.safetensors").write_bytes((tmp_path / "b" / "model.safetensors").read_bytes())
    with pytest.raises(GenimgError, match="corrupt or replaced; not loaded"):
        load_model(tmp_path / "a")
    recorded = json.loads((tmp_path / "b" / "model.json").read_text())["weights_sha256"]
    assert load_model(tmp_path / "b", expected_sha256=recorded) is not None
    with pytest.raises(GenimgError, match="not the ones registered"):
        load_model(tmp_path / "b", expected_sha256="0" * 64)


def test_weights_that_do_not_match_the_config_are_refused(tmp_path):
    save_model(build_model("vae", tiny_config("vae", (1, 16, 16))), tmp_path)
    description = json.loads((tmp_path / "model.json").read_text())
    description["config"]["latent_dim"] = 7
    (tmp_path / "model.json").write_text(json.dumps(description))
    with pytest.raises(GenimgError, match="cannot load weights"):
        load_model(tmp_path)
