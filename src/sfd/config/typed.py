"""Typed values of config fields: a ``--set`` string or a JSON value parsed to the field's type
(bool, int, float, str, Literal, tuple of numbers); wrong types and unknown keys are errors that
name the key."""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any, Literal

from sfd.errors import ConfigError


def parse_value(raw: str, hint: Any, name: str) -> Any:
    """Parse ``raw`` into the type ``hint`` (bool, int, float, str, Literal, tuple of floats)."""
    origin = typing.get_origin(hint)
    try:
        if hint is bool:
            low = raw.lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if hint is int:
            return int(raw)
        if hint is float:
            value = float(raw)
            if not math.isfinite(value):
                raise ValueError
            return value
        if hint is str:
            return raw
        if origin is Literal:
            if raw not in typing.get_args(hint):
                raise ValueError
            return raw
        if origin is tuple:
            args = typing.get_args(hint)
            items = [x for x in raw.strip("()[] ").split(",") if x.strip()]
            if len(args) == 2 and args[1] is Ellipsis:  # tuple[float, ...]: any length
                args = (args[0],) * len(items)
            if len(items) != len(args):
                raise ValueError
            return tuple(parse_value(x.strip(), a, name) for x, a in zip(items, args, strict=True))
    except ValueError:
        raise ConfigError(f"cannot parse {raw!r} for {name}: expected {_describe(hint)}") from None
    raise TypeError(f"unsupported config type {hint!r} for {name}")


def _describe(hint: Any) -> str:
    if typing.get_origin(hint) is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(hint))
    if typing.get_origin(hint) is tuple:
        args = typing.get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a comma-separated list of {args[0].__name__}s"
        return "a comma-separated tuple of " + ", ".join(a.__name__ for a in args)
    if hint is float:
        return "a finite number"
    return getattr(hint, "__name__", str(hint))


_JSON_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


def _typed(value: Any, hint: Any, name: str) -> Any:
    """``value`` (parsed JSON) checked against the field type ``hint``, as ``--set`` would."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        hint = next(a for a in args if a is not type(None))
        origin = typing.get_origin(hint)
    ok = True
    if hint is bool:
        ok = isinstance(value, bool)
    elif hint is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif hint is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        ok = ok and math.isfinite(value)
        value = float(value) if ok else value
    elif hint is str:
        ok = isinstance(value, str)
    elif origin is Literal:
        ok = isinstance(value, str) and value in typing.get_args(hint)
    elif origin is tuple:
        args = typing.get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis and isinstance(value, list | tuple):
            args = (args[0],) * len(value)  # tuple[float, ...]: any length
        ok = isinstance(value, list | tuple) and len(value) == len(args)
        if ok:
            return tuple(_typed(v, a, name) for v, a in zip(value, args, strict=True))
    if not ok:
        expected = _JSON_NAMES.get(hint) or _describe(hint)
        if origin is tuple:
            n = len(typing.get_args(hint))
            ellipsis = Ellipsis in typing.get_args(hint)
            expected = "a list of numbers" if ellipsis else f"a list of {n} numbers"
        raise ConfigError(f"{name} must be {expected}; got {value!r}")
    return value


def from_dict(cls: type, data: dict[str, Any], prefix: str) -> Any:
    where = prefix.rstrip(".") or "the top level"
    if not isinstance(data, dict):
        raise ConfigError(
            f"config section {where} must be a mapping (a JSON object); got {type(data).__name__}"
        )
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        keys = ", ".join(f"{prefix}{k}" for k in unknown)
        raise ConfigError(
            f"unknown config key{'s' if len(unknown) > 1 else ''} {keys}; {where} has "
            f"{', '.join(sorted(names))}"
        )
    kwargs = {}
    for key, value in data.items():
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            kwargs[key] = from_dict(hint, value, f"{prefix}{key}.")
        else:
            kwargs[key] = _typed(value, hint, f"{prefix}{key}")
    return cls(**kwargs)
