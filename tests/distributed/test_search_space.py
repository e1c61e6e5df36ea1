"""Search-space files: the defaults in genimg/configs/ and the errors for bad ones (no Ray needed)."""

import pytest

from genimg.configs import packaged_config
from genimg.distributed.search_space import check_space_keys, load_space, split_overrides
from genimg.errors import ConfigError


@pytest.mark.parametrize("model", ["vae", "gan", "gan-resnet", "gan-mlp", "rvae"])
def test_every_family_has_a_default_space_whose_keys_exist(model):
    space = load_space(model)
    assert space.source == str(packaged_config(f"tune-{model}.yaml"))
    assert space.metric == ("val_nll_bound" if model in ("vae", "rvae") else "val_fid") and space.mode == "min"
    check_space_keys(model, space)
    assert set(space.to_tune()) == set(space.space)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("metric: val_fid\n", "a non-empty space"),
        ("metric: val_fid\nmode: best\nspace:\n  train.lr: {choice: [1]}\n", "mode must be min or max"),
        ("space:\n  train.lr: {loguniform: [0, 1]}\n", "loguniform needs 0 < low < high"),
        ("space:\n  train.lr: {uniform: [1]}\n", "uniform takes [low, high]"),
        ("space:\n  train.lr: {choice: []}\n", "choice takes a list of values"),
        ("space: [\n", "not valid YAML"),
    ],
)
def test_bad_space_files_name_the_problem(tmp_path, text, message):
    path = tmp_path / "space.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_space("vae", path)


def test_a_missing_space_file_and_an_unknown_key_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="search space file not found"):
        load_space("vae", tmp_path / "none.yaml")
    path = tmp_path / "space.yaml"
    path.write_text("space:\n  optimizer.lr: {choice: [1]}\n")
    with pytest.raises(ConfigError, match="unknown search key 'optimizer.lr'"):
        check_space_keys("vae", load_space("vae", path))


def test_sampled_values_become_config_sections():
    assert split_overrides({"train.lr": 0.1, "train.betas": (0.5, 0.9), "model.latent_dim": 8}) == {
        "train": {"lr": 0.1, "betas": [0.5, 0.9]},
        "model": {"latent_dim": 8},
    }


def test_bad_search_spaces_fail_before_ray_starts(tmp_path):
    from typer.testing import CliRunner

    from genimg.cli import app

    runner = CliRunner()
    space = tmp_path / "space.yaml"
    space.write_text("metric: val_nll_bound\nspace:\n  model.latnet_dim: {choice: [4, 8]}\n")
    result = runner.invoke(app, ["tune", "--model", "vae", "--dataset", "builtin:digits", "--space", str(space)])
    assert result.exit_code == 1 and "unknown search key 'model.latnet_dim'" in result.stderr
    result = runner.invoke(app, ["tune", "--model", "gan", "--dataset", "builtin:digits", "--metric", "val_nll_bound"])
    assert result.exit_code == 1 and "val_nll_bound needs a likelihood model" in result.stderr
    result = runner.invoke(app, ["tune", "--model", "vae", "--dataset", "builtin:digits", "--metric", "loss"])
    assert result.exit_code == 1 and "metric must be a validation metric" in result.stderr
    result = runner.invoke(app, ["tune", "--model", "vae", "--dataset", "builtin:digits", "--resume"])
    assert result.exit_code == 1 and "--resume needs the --name" in result.stderr
