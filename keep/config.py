"""Typed configuration: dataclass defaults -> `-opt file.yml` -> command-line flags -> `--set a.b=c` overrides.

A config is a (nested) dataclass whose fields mirror constructors' keyword arguments one to one.
`load_config(cls, path, overrides)` reads YAML onto it; an unknown key or a value of the wrong type
is a `KeepError` naming the dotted key, the expected type and the value.

    cfg = load_config(TrainConfig, "configs/keep.yml", ["train.lr=1e-4", "model.cfa_scales=[16]"])
    save_config(cfg, run_dir / "config.yml")

Allowed values live in the field's annotation, the one place a reader looks for them:
`total_steps: PositiveInt`, `ema_decay: Annotated[float, Range(0, 1, high_open=True)]`,
`name: FolderName`, also inside tuples (`intervals: tuple[PositiveInt, ...]`). A config dataclass checks
its own fields in `__post_init__` with `check_fields(self)`, so a config built in Python is checked as
one read from a file; a value outside is a `KeepError` naming the dotted key, the range and the value.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import math
import re
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, TypeVar

import yaml

from .errors import KeepError
from .paths import write_atomically

T = TypeVar("T")
_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")
YAML11_BOOLS = {"yes": True, "no": False, "on": True, "off": False}  # YAML 1.1 booleans that are also words


# ------------------------------------------------------------------------------------------ value rules
@dataclasses.dataclass(frozen=True)
class Range:
    """The numbers a field allows: `Annotated[int, Range(1)]` is >= 1, `Range(0, low_open=True)` > 0,
    `Range(0, 1)` between 0 and 1. NaN and infinities are never allowed."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def allows(self, value: Any) -> bool:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return False
        above = self.low is None or (value > self.low if self.low_open else value >= self.low)
        below = self.high is None or (value < self.high if self.high_open else value <= self.high)
        return above and below

    def __str__(self) -> str:
        if self.low is not None and self.high is not None and not (self.low_open or self.high_open):
            return f"between {self.low} and {self.high}"
        parts = []
        if self.low is not None:
            parts.append(f"{'>' if self.low_open else '>='} {self.low}")
        if self.high is not None:
            parts.append(f"{'<' if self.high_open else '<='} {self.high}")
        return " and ".join(parts)


@dataclasses.dataclass(frozen=True)
class PlainName:
    """A folder name inside a results folder, never a path: `--set name=../..` must not write elsewhere."""

    def allows(self, value: Any) -> bool:
        return (
            isinstance(value, str)
            and value not in ("", ".")
            and ".." not in value  # not even inside a name: nothing that reads as a way up
            and not set(value) & {"/", "\\", "\0"}
        )

    def __str__(self) -> str:
        return "a plain folder name (not empty or '.'; no '/', '\\' or '..')"


PositiveInt = Annotated[int, Range(1)]  # counts, sizes, steps
NonNegativeInt = Annotated[int, Range(0)]  # where 0 means "off" or "all"
PositiveFloat = Annotated[float, Range(0, low_open=True)]  # learning rates, factors
NonNegativeFloat = Annotated[float, Range(0)]  # loss weights (0 = off), norms, sigmas
Probability = Annotated[float, Range(0, 1)]
FolderName = Annotated[str, PlainName()]
FIDELITY = Range(0, 1)  # the CFT weight (CodeFormer's w): 0 quality .. 1 fidelity to the input (keep.restorer)
Fidelity = Annotated[float, FIDELITY]


class ConfigValueError(KeepError):
    """A value outside what its field allows; `from_dict` prefixes the section's dotted path."""

    def __init__(self, key: str, rule: str, value: Any):
        self.key, self.rule, self.value = key, rule, value
        super().__init__(f"config key '{key}' must be {rule}, got {value!r}")

    def under(self, prefix: str) -> ConfigValueError:
        return ConfigValueError(prefix + self.key, self.rule, self.value)


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls, include_extras=True)


def check_fields(cfg: Any, kind: type | None = None) -> None:
    """Check each field of the dataclass `cfg` against the rules of its annotation (see the module
    docstring); call it from `__post_init__`. Nested sections check themselves when they are built.
    kind: only the fields of this dataclass, one `cfg`'s class derives from (default: `cfg`'s class)."""
    for name, tp in _hints(kind or type(cfg)).items():
        _check(tp, getattr(cfg, name), name)


def _check(tp: Any, value: Any, key: str) -> None:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Annotated:
        for rule in tp.__metadata__:
            if isinstance(rule, (Range, PlainName)) and not rule.allows(value):
                raise ConfigValueError(key, str(rule), value)
        _check(args[0], value, key)
    elif origin in (typing.Union, types.UnionType):
        options = [a for a in args if a is not type(None)]
        if value is not None and len(options) == 1:
            _check(options[0], value, key)
    elif origin is tuple and isinstance(value, (tuple, list)):
        kinds = [args[0]] * len(value) if len(args) == 2 and args[1] is Ellipsis else args
        for i, (kind, item) in enumerate(zip(kinds, value, strict=False)):
            _check(kind, item, f"{key}[{i}]")


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is Annotated:
        return _type_name(typing.get_args(tp)[0])
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(tp: Any, value: Any, key: str) -> Any:
    """Check `value` against the annotation `tp` (converting lists to tuples, ints to floats)."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin is Annotated:  # the rules in the annotation are checked by the dataclass (check_fields)
        return _coerce(typing.get_args(tp)[0], value, key)
    if origin in (typing.Union, types.UnionType):
        return _coerce_union(tp, value, key)
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise KeepError(f"config key '{key}': expected a mapping for section {tp.__name__}, got {value!r}")
        return from_dict(tp, value, prefix=f"{key}.")
    if origin in (tuple, list, dict):
        return _coerce_container(tp, value, key)
    if origin is typing.Literal:
        if value not in typing.get_args(tp):
            raise KeepError(f"config key '{key}': expected one of {list(typing.get_args(tp))}, got {value!r}")
        return value
    return _coerce_plain(tp, value, key)


def _coerce_union(tp: Any, value: Any, key: str) -> Any:
    args = typing.get_args(tp)
    if value is None and type(None) in args:
        return None
    options = [a for a in args if a is not type(None)]
    if len(options) == 1:  # `X | None`: X's own message (a section's bad key, a range)
        return _coerce(options[0], value, key)
    for option in options:
        try:
            return _coerce(option, value, key)
        except KeepError:
            pass
    raise KeepError(f"config key '{key}': expected {_type_name(tp)}, got {value!r}")


def _coerce_container(tp: Any, value: Any, key: str) -> Any:
    """Tuples (`tuple[int, ...]` or fixed length), lists and dicts, each item checked."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is dict:
        if not isinstance(value, dict):
            raise KeepError(f"config key '{key}': expected a mapping, got {value!r}")
        return {k: _coerce(args[1], v, f"{key}.{k}") for k, v in value.items()} if args else dict(value)
    if not isinstance(value, (list, tuple)):
        raise KeepError(f"config key '{key}': expected a list, got {value!r}")
    if origin is list:
        return [_coerce(args[0], v, f"{key}[{i}]") for i, v in enumerate(value)] if args else list(value)
    if len(args) == 2 and args[1] is Ellipsis:
        return tuple(_coerce(args[0], v, f"{key}[{i}]") for i, v in enumerate(value))
    if not args:
        return tuple(value)
    if len(args) != len(value):
        raise KeepError(f"config key '{key}': expected {len(args)} values, got {value!r}")
    return tuple(_coerce(a, v, f"{key}[{i}]") for i, (a, v) in enumerate(zip(args, value, strict=True)))


def _coerce_plain(tp: Any, value: Any, key: str) -> Any:
    """float (also from YAML 1.1's dotless `5e-5` string), int, str (also from a whole number), bool, None."""
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
    if tp is bool and isinstance(value, str) and value.lower() in YAML11_BOOLS:
        value = YAML11_BOOLS[value.lower()]
    if tp is str and isinstance(value, int) and not isinstance(value, bool):
        value = str(value)  # YAML reads `faces=0` (track 0) as a number: text fields take a whole number's digits
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
    hints = _hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in values if k not in names]
    if unknown:
        raise KeepError(f"unknown config key '{prefix}{unknown[0]}' (section {cls.__name__} has: {', '.join(names)})")
    kwargs = {k: _coerce(hints[k], v, f"{prefix}{k}") for k, v in values.items()}
    try:
        return cls(**kwargs)
    except ConfigValueError as exc:
        raise exc.under(prefix) from None
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


def set_key(values: dict[str, Any], key: str, value: Any, *, source: str = "--set") -> None:
    """Set the dotted `key` (`a.b.c`) of the nested dict `values` in place, making sections as needed."""
    node = values
    parts = key.strip().split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise KeepError(f"{source} {key}: '{part}' is not a section")
    node[parts[-1]] = value


def apply_overrides(values: dict[str, Any], overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """Apply `a.b=c` strings (value parsed as YAML) to a nested dict, returning a new dict."""
    values = copy.deepcopy(values)
    for item in overrides:
        if "=" not in item:
            raise KeepError(f"--set expects key=value, got '{item}'")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            raise KeepError(f"--set {key}: cannot parse value {raw!r}: {_yaml_problem(exc)}") from None
        if isinstance(value, bool) and raw.strip().lower() in YAML11_BOOLS:
            value = raw.strip()  # the word: `overlap=off` names a mode; a bool field still reads it (_coerce_plain)
        set_key(values, key, value)
    return values


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """One line for a YAML error (PyYAML's own text spans lines, with a caret under the place)."""
    if isinstance(exc, yaml.reader.ReaderError):
        if exc.encoding == "unicode":  # decoded fine, but a character YAML does not allow (NUL, controls)
            return f"character #x{exc.character:04x} at position {exc.position} is not allowed in YAML text"
        return f"not {exc.encoding.upper()} text (byte 0x{exc.character:02x} at offset {exc.position}: {exc.reason})"
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        text = "; ".join(part for part in (exc.context, exc.problem) if part)
        if isinstance(exc, yaml.constructor.ConstructorError):
            text += " (configs are plain YAML: tags that build Python objects are refused)"
        return where + text
    return " ".join(str(exc).split())


def read_yaml_mapping(path: str | Path) -> dict[str, Any]:
    """The top-level mapping of a YAML file (`yaml.safe_load`: nothing read runs code); a folder, an
    unreadable file, a binary or non-UTF text file, bad YAML or another top level is one KeepError line."""
    path = Path(path)
    if path.is_dir():
        raise KeepError(f"config {path} is a folder, not a YAML file (such as configs/keep.yml)")
    try:
        with open(path, "rb") as stream:  # bytes: PyYAML reads the encoding (UTF-8/16) and stops at a bad byte
            values = yaml.safe_load(stream)
    except FileNotFoundError:
        raise KeepError(f"config file not found: {path}") from None
    except OSError as exc:
        raise KeepError(f"cannot read config {path}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise KeepError(f"cannot parse config {path}: {_yaml_problem(exc)}") from None
    if values is None:  # an empty file: every default
        return {}
    if not isinstance(values, dict):
        raise KeepError(f"config {path}: expected a mapping (key: value lines) at the top level, got {values!r:.60}")
    return values


def load_config(
    cls: type[T],
    path: str | Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    flags: Mapping[str, Any] | None = None,
) -> T:
    """Defaults of `cls`, then the YAML file, then the entry point's own flags, then `--set` overrides;
    validated once. The one way every entry point turns its command line into a config.

    flags: dotted key -> the value a command-line flag gave (`{"model.source": args.model}`); None means
        the flag was not given and leaves the key alone. Typed values, set as they are (no YAML parsing).
    """
    values = read_yaml_mapping(path) if path is not None else {}
    for key, value in (flags or {}).items():
        if value is not None:
            set_key(values, key, value, source="flag for")
    return from_dict(cls, apply_overrides(values, overrides))


def save_config(cfg: Any, path: str | Path) -> None:
    """The resolved config as YAML, written whole or not at all (KeepError naming the file if it cannot be)."""
    write_atomically(path, yaml.safe_dump(to_dict(cfg), sort_keys=False))
