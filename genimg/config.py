"""Typed configuration helpers shared by models and training.

Configs are frozen dataclasses. They travel as JSON (checkpoints, exports, MLflow params) and as
`section.key=value` overrides from the command line, so this module converts both ways and
rejects unknown keys or ill-typed values with a message that names the key.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar, Union, cast, get_args, get_origin

from genimg.errors import ConfigError

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

T = TypeVar("T")


def read_yaml_mapping(path: Path, what: str) -> dict[str, Any]:
    """A YAML file holding a mapping (empty file: {}), or ConfigError naming the file."""
    import yaml

    if not path.is_file():
        raise ConfigError(f"{what} not found: {path}")
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset {exc.start})") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read {what} ({exc.strerror or exc})") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: expected a mapping, got {type(loaded).__name__}")
    return loaded


def config_to_dict(config: Any) -> dict[str, Any]:
    """A JSON-ready dict of a config dataclass (tuples become lists)."""
    return cast(dict[str, Any], json.loads(json.dumps(dataclasses.asdict(config))))


def config_from_dict(cls: type[T], values: Mapping[str, Any], *, where: str = "") -> T:
    """Build `cls` from plain values, checking every key and coercing to the declared types."""
    prefix = f"{where}." if where else ""
    hints = typing.get_type_hints(cls)
    # `cls` is a config dataclass by contract (T stays unbound so callers keep their own type).
    known = {f.name for f in dataclasses.fields(cast("type[DataclassInstance]", cls))}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"unknown config key {prefix}{unknown[0]!s} (known: {', '.join(sorted(known))})")
    kwargs = {name: coerce(value, hints[name], f"{prefix}{name}") for name, value in values.items()}
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"invalid {cls.__name__}: {exc}") from exc


def replace_config(config: T, overrides: Mapping[str, Any], *, where: str = "") -> T:
    """`config` with some fields replaced, validated like `config_from_dict`."""
    merged = config_to_dict(config)
    merged.update(overrides)
    return config_from_dict(type(config), merged, where=where)


def coerce(value: Any, annotation: Any, key: str) -> Any:
    """Convert a JSON / command-line value to `annotation`, or raise ConfigError naming `key`."""
    origin = get_origin(annotation)
    args = get_args(annotation)
    if annotation is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        if isinstance(value, str) and value.lower() in ("none", "null") and type(None) in args:
            return None
        errors = []
        for option in args:
            if option is type(None):
                continue
            try:
                return coerce(value, option, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"invalid value for {key}: {value!r}")
    if origin is Literal:
        if value in args:
            return value
        raise ConfigError(f"invalid value for {key}: {value!r} (expected one of {', '.join(map(repr, args))})")
    if origin is tuple:
        items = parse_list(value, key)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(coerce(item, args[0], f"{key}[{i}]") for i, item in enumerate(items))
        if len(items) != len(args):
            raise ConfigError(f"invalid value for {key}: expected {len(args)} items, got {value!r}")
        return tuple(coerce(item, a, f"{key}[{i}]") for i, (item, a) in enumerate(zip(items, args, strict=True)))
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on"):
            return True
        if isinstance(value, str) and value.lower() in ("false", "0", "no", "off"):
            return False
        raise ConfigError(f"invalid value for {key}: {value!r} (expected true or false)")
    if annotation is int:
        if isinstance(value, bool):
            raise ConfigError(f"invalid value for {key}: {value!r} (expected an integer)")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        raise ConfigError(f"invalid value for {key}: {value!r} (expected an integer)")
    if annotation is float:
        number = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):
            try:
                number = float(value)
            except ValueError:
                pass
        if number is None:
            raise ConfigError(f"invalid value for {key}: {value!r} (expected a number)")
        # NaN and inf pass every `> 0` check and then poison the weights: refused here, named.
        if not math.isfinite(number):
            raise ConfigError(f"invalid value for {key}: {value!r} (expected a finite number)")
        return number
    if annotation is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"invalid value for {key}: {value!r} (expected a string)")
    raise ConfigError(f"unsupported config type for {key}: {annotation!r}")


def parse_list(value: Any, key: str) -> list[Any]:
    if isinstance(value, (list, tuple)):
        return list(value)
    if isinstance(value, str):
        text = value.strip()
        if text.startswith(("[", "(")) and text.endswith(("]", ")")):
            text = text[1:-1]
        return [part.strip() for part in text.split(",") if part.strip()]
    raise ConfigError(f"invalid value for {key}: {value!r} (expected a list)")


def parse_overrides(pairs: list[str]) -> dict[str, dict[str, str]]:
    """`["model.latent_dim=32", "train.lr=1e-3"]` → `{"model": {...}, "train": {...}}`."""
    sections: dict[str, dict[str, str]] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        section, dot, name = key.strip().partition(".")
        if not sep or not dot or not section or not name:
            raise ConfigError(f"invalid override {pair!r}: expected SECTION.KEY=VALUE, e.g. model.latent_dim=32")
        sections.setdefault(section, {})[name] = value.strip()
    return sections
