"""Typed configuration: dataclass defaults -> `-opt file.yml` -> `--set a.b=c` overrides.

A config is a (nested) dataclass whose fields mirror constructors' keyword arguments one to one.
`load_config(cls, path, overrides)` reads YAML onto it; an unknown key or a value of the wrong type
is a `KeepError` naming the dotted key, the expected type and the value.

    cfg = load_config(TrainConfig, "configs/keep.yml", ["train.lr=1e-4", "model.cfa_scales=[16]"])
    save_config(cfg, run_dir / "config.yml")
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from .errors import KeepError

T = TypeVar("T")
_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(tp: Any, value: Any, key: str) -> Any:
    """Check `value` against the annotation `tp` (converting lists to tuples, ints to floats)."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in (a for a in args if a is not type(None)):
            try:
                return _coerce(option, value, key)
            except KeepError as exc:
                errors.append(str(exc))
        raise KeepError(f"config key '{key}': expected {_type_name(tp)}, got {value!r}")
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise KeepError(f"config key '{key}': expected a mapping for section {tp.__name__}, got {value!r}")
        return from_dict(tp, value, prefix=f"{key}.")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise KeepError(f"config key '{key}': expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(args[0], v, f"{key}[{i}]") for i, v in enumerate(value))
        if args and len(args) != len(value):
            raise KeepError(f"config key '{key}': expected {len(args)} values, got {value!r}")
        return (
            tuple(_coerce(a, v, f"{key}[{i}]") for i, (a, v) in enumerate(zip(args, value, strict=True)))
            if args
            else tuple(value)
        )
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise KeepError(f"config key '{key}': expected a list, got {value!r}")
        return [_coerce(args[0], v, f"{key}[{i}]") for i, v in enumerate(value)] if args else list(value)
    if origin is dict:
        if not isinstance(value, dict):
            raise KeepError(f"config key '{key}': expected a mapping, got {value!r}")
        return {k: _coerce(args[1], v, f"{key}.{k}") for k, v in value.items()} if args else dict(value)
    if origin is typing.Literal:
        if value not in args:
            raise KeepError(f"config key '{key}': expected one of {list(args)}, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str) and _FLOAT.fullmatch(value.strip()):
            value = float(value)  # YAML 1.1 reads `5e-5` (no dot) as a string
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise KeepError(f"config key '{key}': expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise KeepError(f"config key '{key}': expected an integer, got {value!r}")
        return value
    if tp in (str, bool):
        if not isinstance(value, tp):
            raise KeepError(f"config key '{key}': expected {tp.__name__}, got {value!r}")
        return value
    if tp is type(None):
        if value is not None:
            raise KeepError(f"config key '{key}': expected null, got {value!r}")
        return None
    raise KeepError(f"config key '{key}': unsupported type {_type_name(tp)}")


def from_dict(cls: type[T], values: dict[str, Any], *, prefix: str = "") -> T:
    """Build dataclass `cls` from a dict; unknown keys and wrong types raise `KeepError`."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in values if k not in names]
    if unknown:
        raise KeepError(f"unknown config key '{prefix}{unknown[0]}' (section {cls.__name__} has: {', '.join(names)})")
    kwargs = {k: _coerce(hints[k], v, f"{prefix}{k}") for k, v in values.items()}
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise KeepError(f"config section '{prefix.rstrip('.') or cls.__name__}': {exc}") from None


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain YAML-friendly dict (tuples become lists)."""

    def plain(v: Any) -> Any:
        if isinstance(v, (tuple, list)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return plain(dataclasses.asdict(cfg))


def apply_overrides(values: dict[str, Any], overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """Apply `a.b=c` strings (value parsed as YAML) to a nested dict, returning a new dict."""
    import copy

    values = copy.deepcopy(values)
    for item in overrides:
        if "=" not in item:
            raise KeepError(f"--set expects key=value, got '{item}'")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            raise KeepError(f"--set {key}: cannot parse value {raw!r}: {exc}") from None
        node = values
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise KeepError(f"--set {key}: '{part}' is not a section")
        node[parts[-1]] = value
    return values


def load_config(cls: type[T], path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> T:
    """Defaults of `cls`, then the YAML file, then `--set` overrides; validated once."""
    values: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise KeepError(f"config file not found: {path}")
        try:
            values = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise KeepError(f"cannot parse {path}: {exc}") from None
        if not isinstance(values, dict):
            raise KeepError(f"{path}: expected a mapping at the top level")
    return from_dict(cls, apply_overrides(values, overrides))


def save_config(cfg: Any, path: str | Path) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
