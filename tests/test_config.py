import pytest

from genimg.config import config_from_dict, parse_overrides
from genimg.errors import ConfigError
from genimg.models import GANConfig
from genimg.training import TrainConfig
from genimg.training.run import load_config_file, merge_sections, resolve_run_config


def test_command_line_strings_are_coerced_to_the_declared_types():
    config = config_from_dict(GANConfig, {"image_shape": "1,32,32", "spectral_norm": "true", "latent_dim": "12"})
    assert config.image_shape == (1, 32, 32) and config.spectral_norm is True and config.latent_dim == 12
    train = config_from_dict(TrainConfig, {"lr": "1e-3", "betas": "[0.5, 0.99]", "grad_clip": "none"})
    assert train.lr == 1e-3 and train.betas == (0.5, 0.99) and train.grad_clip is None


@pytest.mark.parametrize(
    ("pairs", "message"),
    [(["latent_dim=3"], "expected SECTION.KEY=VALUE"), (["model.latent_dim"], "expected SECTION.KEY=VALUE")],
)
def test_malformed_overrides_are_refused(pairs, message):
    with pytest.raises(ConfigError, match=message):
        parse_overrides(pairs)


def test_overrides_win_over_the_config_file(tmp_path):
    path = tmp_path / "vae.yaml"
    path.write_text("model:\n  latent_dim: 8\ntrain:\n  steps: 10\n  lr: 0.01\n")
    sections = merge_sections(load_config_file(path), parse_overrides(["train.lr=0.002"]))
    run = resolve_run_config("vae", sections)
    assert run.model.latent_dim == 8 and run.train.steps == 10 and run.train.lr == 0.002


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("data:\n  x: 1\n", "unknown section 'data'"),
        ("- 1\n- 2\n", "expected a mapping"),
        ("model: [1, 2\n", "not valid YAML"),
    ],
)
def test_bad_config_files_are_refused(tmp_path, text, message):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config_file(path)
