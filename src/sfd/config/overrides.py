"""Typed ``section.key=value`` overrides (``--set``) and config files, both checked field by
field."""

from __future__ import annotations

import dataclasses
import json
import typing
from pathlib import Path

from sfd.config.sections import Config
from sfd.config.typed import parse_value
from sfd.errors import ConfigError


def apply_overrides(cfg: Config, overrides: list[str] | tuple[str, ...]) -> Config:
    """Return ``cfg`` with ``section.key=value`` overrides applied, each parsed to its field type.

    Unknown sections or keys and values that do not parse to the field's type are errors.
    """
    data = cfg.to_dict()
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like section.key=value")
        path, raw = item.split("=", 1)
        parts = path.strip().split(".")
        if len(parts) != 2:
            raise ConfigError(f"override key {path!r} must be section.key, e.g. train.lr")
        section, key = parts
        sub_cls = _section_class(section)
        fields = {f.name: f for f in dataclasses.fields(sub_cls)}
        if key not in fields:
            raise ConfigError(
                f"unknown key {key!r} in section {section!r}; "
                f"expected one of {', '.join(sorted(fields))}"
            )
        hint = typing.get_type_hints(sub_cls)[key]
        data[section][key] = parse_value(raw.strip(), hint, f"{section}.{key}")
    return Config.from_dict(data)


def _section_class(section: str) -> type:
    hints = typing.get_type_hints(Config)
    if section not in hints or not dataclasses.is_dataclass(hints[section]):
        names = [
            f.name for f in dataclasses.fields(Config) if dataclasses.is_dataclass(hints[f.name])
        ]
        raise ConfigError(f"unknown config section {section!r}; expected one of {', '.join(names)}")
    return hints[section]


def load_config_file(path: str | Path) -> Config:
    """A config JSON file (``sfd train --dry-run`` output, a run's ``config.json``), checked
    like ``--set``: wrong types, unknown keys and bad values are errors naming the file and
    the key. Keys left out keep their defaults."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"config file {path} cannot be read: {err}") from None
    except json.JSONDecodeError as err:
        raise ConfigError(
            f"config file {path} is not valid JSON (line {err.lineno}, column {err.colno}: "
            f"{err.msg})"
        ) from None
    try:
        return Config.from_dict(data)
    except ConfigError as err:
        raise ConfigError(f"config file {path}: {err}") from None
