"""Every preset in genimg/configs/ resolves to a valid model and training config."""

import pytest

from genimg.configs import CONFIGS_DIR
from genimg.training.run import load_config_file, resolve_run_config

CONFIGS = CONFIGS_DIR
PRESETS = {path.name: path for path in sorted(CONFIGS.glob("*.yaml")) if not path.name.startswith(("tune-", "retrain"))}
MODEL_OF = {
    "gan-mlp-": "gan-mlp",
    "gan-resnet": "gan-resnet",
    "gan-": "gan",
    "gan.": "gan",
    "vae": "vae",
    "rvae-": "rvae",
}


def model_of(name: str) -> str:
    stem = name.removeprefix("cifar10-")
    for prefix, model in MODEL_OF.items():
        if stem.startswith(prefix):
            return model
    raise AssertionError(f"which model is {name} for?")


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_resolves(name):
    run = resolve_run_config(model_of(name), load_config_file(PRESETS[name]))
    assert run.train.steps > 0


def test_the_cifar10_presets_use_diffaugment_and_a_conditional_one_exists():
    for name in ("cifar10-gan.yaml", "cifar10-gan-resnet.yaml", "cifar10-gan-resnet-conditional.yaml"):
        assert load_config_file(PRESETS[name])["model"]["augment"] == "color,translation,cutout", name
    assert load_config_file(PRESETS["cifar10-gan-resnet-conditional.yaml"])["model"]["conditional"] is True
