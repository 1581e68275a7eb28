"""Turn plain YAML mappings into frozen dataclasses, rejecting typos, wrong types and out-of-range values.

Each dataclass field declares its constraints once with `setting(...)`; `build()` reads a mapping against those
declarations and raises `SchemaError` whose message names the full dotted key, e.g.
`data.sine.dt must be > 0, got -1`. `params.py` adds the file name in front.
"""

import dataclasses
import math
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

T = TypeVar("T")


class SchemaError(Exception):
    """One invalid value; the message is complete except for the file name."""


def setting(default: Any = dataclasses.MISSING, *, gt: float | None = None, ge: float | None = None,
            lt: float | None = None, le: float | None = None, choices: tuple[str, ...] | None = None) -> Any:
    """A dataclass field with the bounds or choices that `build()` enforces."""
    bounds = {"gt": gt, "ge": ge, "lt": lt, "le": le, "choices": choices}
    return dataclasses.field(default=default, metadata={k: v for k, v in bounds.items() if v is not None})


def fail(key: str, message: str) -> typing.NoReturn:
    raise SchemaError(f"{key} {message}")


def shown(value: Any) -> str:
    """A value as a user wrote it: strings quoted, numbers plain."""
    return repr(value) if isinstance(value, str) else str(value)


def _number(key: str, value: Any, kind: type) -> Any:
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            fail(key, f"must be an integer, got {shown(value)}")
        return value
    if isinstance(value, str):  # PyYAML reads `1e-3` (no dot) as a string; accept any spelling of a number
        try:
            value = float(value)
        except ValueError:
            fail(key, f"must be a number, got {shown(value)}")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        fail(key, f"must be a number, got {shown(value)}")
    if not math.isfinite(value):
        fail(key, f"must be a finite number, got {shown(value)}")
    return float(value)


def _convert(key: str, value: Any, annotation: Any) -> Any:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(annotation) if a is not type(None)]
        if value is None and len(options) < len(typing.get_args(annotation)):
            return None  # `float | None`: null keeps the default behaviour
        if len(options) == 1:
            return _convert(key, value, options[0])
        return _one_or_list(key, value, options)
    if origin is tuple:
        item_type = typing.get_args(annotation)[0]
        if not isinstance(value, list):
            fail(key, f"must be a list, got {shown(value)}")
        return tuple(_convert(f"{key}[{i}]", item, item_type) for i, item in enumerate(value))
    if annotation is bool:
        if not isinstance(value, bool):
            fail(key, f"must be true or false, got {shown(value)}")
        return value
    if annotation in (int, float):
        return _number(key, value, annotation)
    if annotation is str:
        if not isinstance(value, str) or not value:
            fail(key, f"must be a non-empty string, got {shown(value)}")
        return value
    raise TypeError(f"schema cannot read fields of type {annotation!r}")  # a programming error, not a user one


_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}


def _one_or_list(key: str, value: Any, options: list[Any]) -> Any:
    """`int | tuple[int, ...]`: one value, or a list of them (a memory dataset's length or length range). A
    value of neither form is one message naming both."""
    many = [a for a in options if typing.get_origin(a) is tuple]
    one = [a for a in options if typing.get_origin(a) is not tuple]
    if len(many) != 1 or len(one) != 1 or one[0] not in _NAMES:
        raise TypeError(f"schema cannot read fields of type {options!r}")  # a programming error
    if isinstance(value, list):
        return _convert(key, value, many[0])
    try:
        return _convert(key, value, one[0])
    except SchemaError:
        fail(key, f"must be {_NAMES[one[0]]} or a list of them, got {shown(value)}")


def _check_bounds(key: str, value: Any, meta: Mapping[str, Any], written: Any) -> None:
    """`written` is the value as the user wrote it, so that messages quote -1 rather than -1.0."""
    pairs = zip(value, written) if isinstance(value, tuple) else ((value, written),)
    for item, as_written in pairs:
        if item is None:
            continue
        if "choices" in meta and item not in meta["choices"]:
            fail(key, f"must be one of: {', '.join(meta['choices'])}; got {shown(as_written)}")
        if "gt" in meta and not item > meta["gt"]:
            fail(key, f"must be > {meta['gt']}, got {shown(as_written)}")
        if "ge" in meta and not item >= meta["ge"]:
            fail(key, f"must be >= {meta['ge']}, got {shown(as_written)}")
        if "lt" in meta and not item < meta["lt"]:
            fail(key, f"must be < {meta['lt']}, got {shown(as_written)}")
        if "le" in meta and not item <= meta["le"]:
            fail(key, f"must be <= {meta['le']}, got {shown(as_written)}")


def require_mapping(key: str, raw: Any) -> Mapping[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        fail(key, f"must be a mapping of keys to values, got {shown(raw)}")
    return raw


def build(cls: type[T], raw: Any, key: str, ignore: tuple[str, ...] = ()) -> T:
    """Validate `raw` (the mapping found at dotted `key`) into `cls`; keys in `ignore` are read elsewhere."""
    raw = require_mapping(key, raw)
    declared = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    renamed = getattr(cls, "RENAMED", {})  # an old key: what replaced it, so that old params files say what to do
    for name in raw:
        if name in renamed:
            fail(f"{key}.{name}", renamed[name])
        if name not in declared and name not in ignore:
            choices = ", ".join(sorted(set(declared) | set(ignore)))
            raise SchemaError(f"unknown key '{key}.{name}'; expected one of: {choices}")
    values = {}
    for name, f in declared.items():
        sub = f"{key}.{name}"
        if name not in raw:
            if f.default is dataclasses.MISSING:
                raise SchemaError(f"missing key '{sub}'; add it (the README lists every setting)")
            continue
        value = _convert(sub, raw[name], hints[name])
        _check_bounds(sub, value, f.metadata, raw[name])
        values[name] = value
    obj = cls(**values)
    check = getattr(obj, "check", None)
    if check is not None:
        check(key)
    return obj
