"""The YAML configs shipped with genimg: model and training presets (`cifar10-gan.yaml`, …),
Ray Tune search spaces (`tune-<model>.yaml`) and the retrain flow's default (`retrain.yaml`).

They are package data, so a wheel install has them too. `locate_config` resolves what a user
passes to `--config`: an existing file first, else a packaged preset named `NAME`, `NAME.yaml`
or `configs/NAME.yaml` (the form the README and `retrain.yaml` have always used).
"""

from __future__ import annotations

from pathlib import Path, PurePath

from genimg.errors import ConfigError

CONFIGS_DIR: Path = Path(__file__).resolve().parent

SUFFIX = ".yaml"


def available_configs() -> list[str]:
    """File names of the packaged configs, sorted (`cifar10-gan.yaml`, …, `vae-digits.yaml`)."""
    return sorted(p.name for p in CONFIGS_DIR.glob(f"*{SUFFIX}") if p.is_file())


def _listing() -> str:
    return ", ".join(available_configs()) or "none"


def packaged_config(name: str) -> Path:
    """The packaged file `name` (`retrain.yaml`, `tune-vae.yaml`), or ConfigError naming it."""
    path = CONFIGS_DIR / name
    if PurePath(name).name != name or name in ("", ".", "..") or not path.is_file():
        raise ConfigError(f"packaged config not found: {name} (available: {_listing()})")
    return path


def _preset_name(value: str | Path) -> str | None:
    """`NAME.yaml` for `configs/NAME.yaml`, `NAME.yaml` or `NAME`; None for any other path."""
    parts = PurePath(value).parts
    if len(parts) == 2 and parts[0] == "configs":
        parts = parts[1:]
    if len(parts) != 1 or parts[0] in (".", ".."):
        return None
    name = parts[0]
    return name if name.endswith(SUFFIX) else name + SUFFIX


def locate_config(value: str | Path) -> Path:
    """An existing config file at `value` (`~` expanded), else the packaged preset it names.

    `configs/cifar10-gan.yaml`, `cifar10-gan.yaml` and `cifar10-gan` all name the packaged
    `genimg/configs/cifar10-gan.yaml` when no such file exists relative to the working folder;
    anything else that does not exist is a ConfigError listing the packaged presets.
    """
    path = Path(value).expanduser()
    if path.is_file():
        return path
    name = _preset_name(value)
    if name is not None and (CONFIGS_DIR / name).is_file():
        return CONFIGS_DIR / name
    raise ConfigError(f"config file not found: {value} (packaged presets: {_listing()})")
