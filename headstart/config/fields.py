"""Typed options: one declaration per option gives its help, its flag, its YAML key and its checks.

A stage's options are the fields of a dataclass declared with :func:`option`, which carries the help
text, the allowed choices and the numeric range. Every such dataclass derives from :class:`Section`,
whose ``__post_init__`` coerces and checks each field from its declaration (so the Python API, YAML
files, recipes and flags are validated by the same code), then runs the class's own :meth:`Section.check`
for rules that tie several fields together. :func:`build` turns a mapping (a YAML file, a recipe
section, parsed flags) into the dataclass, refusing unknown keys with the closest valid one.

Numbers: integers accept size suffixes (``8k``, ``1.5M``, ``2B``) and ``1e6``; floats must be finite
unless the field says otherwise; ranges are inclusive (``ge``/``le``) or exclusive (``gt``/``lt``).
Nothing here imports torch.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import operator
import re
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml

from headstart.errors import ConfigError

T = TypeVar("T")
SEED = {"ge": 0, "le": 2**63 - 1}  # the range of every seed
MAX_TOKENS = 2**53  # token budgets and counters: exact in a float64 and far inside int64


class FieldError(ConfigError):
    """A bad value of one option; ``key`` is its dotted name relative to the config that raised it."""

    def __init__(self, key: str, detail: str) -> None:
        self.key, self.detail = key, detail
        super().__init__(f"{key} {detail}")

    def under(self, prefix: str) -> FieldError:
        """The same error named from an enclosing section (``prefix`` like ``train.``)."""
        return FieldError(prefix + self.key, self.detail)


def option(default: Any = dataclasses.MISSING, help: str = "", *, choices: tuple[Any, ...] | None = None,
           ge: float | None = None, gt: float | None = None, le: float | None = None, lt: float | None = None,
           finite: bool = True, empty: bool = False, positional: bool = False, flag: str | None = None,
           metavar: str | None = None, cli: bool = True) -> Any:
    """A config field with its help text, its checks and its CLI details.

    ``ge``/``gt``/``le``/``lt`` bound a number (every item of a list); ``finite=False`` admits infinity;
    ``empty=True`` admits an empty string.
    ``positional``: also accepted as a positional argument. ``flag``: the flag name when it is not
    ``--field-name``. ``cli=False``: settable from files only.
    """
    meta = {"help": help, "choices": choices, "ge": ge, "gt": gt, "le": le, "lt": lt, "finite": finite, "empty": empty,
            "positional": positional, "flag": flag, "metavar": metavar, "cli": cli}
    if isinstance(default, (list, dict)):
        value = default
        return dataclasses.field(default_factory=lambda: type(value)(value), metadata=meta)
    if dataclasses.is_dataclass(default) and not isinstance(default, type):
        section = default
        return dataclasses.field(default_factory=lambda: dataclasses.replace(section), metadata=meta)
    if isinstance(default, type) and dataclasses.is_dataclass(default):
        return dataclasses.field(default_factory=default, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


# -- types -----------------------------------------------------------------------------------------
def hints(cls: type) -> dict[str, Any]:
    """The resolved type annotations of a config class."""
    return typing.get_type_hints(cls)


def split_optional(tp: Any) -> tuple[Any, bool]:
    """``(X, True)`` for ``X | None``; ``(tp, False)`` otherwise."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(tp)) == 2:
            return args[0], True
    return tp, False


def is_config(tp: Any) -> bool:
    """Whether ``tp`` is a config dataclass (a nested section)."""
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _describe(tp: Any) -> str:
    if tp is dict or typing.get_origin(tp) is dict:
        return "a mapping"
    if typing.get_origin(tp) is list:
        item = typing.get_args(tp)[0]
        return "a list of " + {int: "integers", float: "numbers", str: "strings"}.get(item, _describe(item))
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false", dict: "a mapping"}.get(
        tp, getattr(tp, "__name__", str(tp)))


_SIZE = re.compile(r"^\s*([+-]?(?:\d+\.?\d*|\.\d+)(?:e[+-]?\d+)?)\s*([kmbg]?)\s*$", re.IGNORECASE)
_SUFFIX = {"": 1, "k": 10**3, "m": 10**6, "b": 10**9, "g": 10**9}


def parse_size(text: str) -> float | None:
    """``"8k"`` -> 8000.0, ``"1.5M"`` -> 1.5e6, ``"1e6"`` -> 1e6, ``"12_000"`` -> 12000.0; ``None`` if not a size."""
    m = _SIZE.match(text.replace("_", ""))
    if m is None:
        lowered = text.strip().lower()
        return float(lowered) if lowered in ("inf", "+inf", "-inf", "nan", "infinity") else None
    return float(m.group(1)) * _SUFFIX[m.group(2).lower()]


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        return parse_size(value)
    return None


def coerce(value: Any, tp: Any, name: str) -> Any:
    """``value`` as type ``tp`` (``int``, ``float``, ``str``, ``bool``, ``list[X]``, ``dict``, optional
    ones); :class:`FieldError` naming ``name`` when it is not one."""
    base, optional = split_optional(tp)
    if value is None or (optional and isinstance(value, str) and value.strip().lower() in ("none", "null")):
        if optional:
            return None
        raise FieldError(name, f"must be {_describe(base)}, not empty")
    bad = FieldError(name, f"must be {_describe(base)}, got {value!r}")
    if base is bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("true", "yes", "on", "1", "false", "no", "off", "0"):
            return text in ("true", "yes", "on", "1")
        raise bad
    if base is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        x = _number(value)
        if x is None or not math.isfinite(x) or x != int(x):
            raise bad
        return int(x)
    if base is float:
        x = _number(value)
        if x is None:
            raise bad
        return x
    if base is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise bad
    if typing.get_origin(base) is list:
        (item,) = typing.get_args(base)
        if item in (int, float) and isinstance(value, (str, list, tuple)):  # "0.96,0.02,0.02", also as a flag
            parts = [value] if isinstance(value, str) else value
            value = [v for p in parts for v in (p.split(",") if isinstance(p, str) else [p])
                     if not isinstance(v, str) or v.strip()]
        if not isinstance(value, (list, tuple)):
            raise bad
        return [coerce(v, item, f"{name}[{i}]") for i, v in enumerate(value)]
    if base is dict or typing.get_origin(base) is dict:
        if not isinstance(value, Mapping):
            raise bad
        return dict(value)
    return value


def check_value(value: Any, meta: Mapping[str, Any], name: str) -> None:
    """The range, finiteness and choice checks of one option's declaration."""
    for item in value if isinstance(value, list) else [value]:
        if item is None:
            continue
        choices = meta.get("choices")
        if choices and item not in choices:
            close = difflib.get_close_matches(str(item), [str(c) for c in choices], n=1, cutoff=0.5)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise FieldError(name, f"{item!r} is not one of {', '.join(map(str, choices))}{hint}")
        if isinstance(item, str) and not item.strip() and not meta.get("empty", False):
            raise FieldError(name, "must not be empty")
        if isinstance(item, bool) or not isinstance(item, (int, float)):
            continue
        if isinstance(item, float) and math.isnan(item):
            raise FieldError(name, "must be a number, got nan")
        if meta.get("finite", True) and not math.isfinite(item):
            raise FieldError(name, f"must be finite, got {item}")
        for key, holds, words in _BOUNDS:
            limit = meta.get(key)
            if limit is not None and not holds(item, limit):
                raise FieldError(name, f"must be {words} {_show(limit)}, got {_show(item)}")


_BOUNDS = (("ge", operator.ge, "at least"), ("gt", operator.gt, "above"), ("le", operator.le, "at most"),
           ("lt", operator.lt, "below"))


def _show(x: float) -> str:
    return f"{x:,}" if isinstance(x, int) and abs(x) >= 10_000 else f"{x:g}" if isinstance(x, float) else str(x)


class Section:
    """Base of every config dataclass: fields coerced and checked from their declarations on construction,
    then :meth:`check` (cross-field rules). Raises :class:`FieldError` naming the field."""

    def __post_init__(self) -> None:
        types_ = hints(type(self))
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            if not f.init:
                continue
            value = getattr(self, f.name)
            base, _ = split_optional(types_[f.name])
            if is_config(base):
                if isinstance(value, Mapping):
                    setattr(self, f.name, build(base, value, prefix=f"{f.name}."))
                elif value is not None and not isinstance(value, base):
                    raise FieldError(f.name, f"must be a mapping of {f.name} options, got {value!r}")
                continue
            value = coerce(value, types_[f.name], f.name)
            check_value(value, f.metadata, f.name)
            setattr(self, f.name, value)
        self.check()

    def check(self) -> None:
        """Rules that tie several fields together (subclasses override)."""

    def to_dict(self) -> dict[str, Any]:
        """Plain data (nested sections included), ready for YAML."""
        return dataclasses.asdict(self)  # type: ignore[call-overload]


# -- mapping -> dataclass --------------------------------------------------------------------------
def closest(key: str, valid: list[str], prefix: str = "") -> str:
    """``"; did you mean 'x'?"`` for the valid key closest to ``key``, else the list of valid keys."""
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
    return f"; did you mean {prefix + close[0]!r}?" if close else f"; valid keys: {', '.join(valid)}"


def build(cls: type[T], values: Mapping[str, Any] | None, where: str = "", prefix: str = "") -> T:
    """The dataclass ``cls`` from ``values`` (keys checked, nested sections merged over their defaults).

    ``where`` names the source in messages (a file); ``prefix`` the section (``train.``).
    """
    suffix = f" in {where}" if where else ""
    values = {} if values is None else values
    if not isinstance(values, Mapping):
        raise ConfigError(f"{prefix.rstrip('.') or 'the config'}{suffix} must be a mapping of option: value, "
                          f"not {type(values).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    types_ = hints(cls)
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        name = str(key).replace("-", "_")
        if name not in fields:
            raise ConfigError(f"unknown key {prefix + str(key)!r}{suffix}{closest(name, sorted(fields), prefix)}")
        base, _ = split_optional(types_[name])
        if is_config(base) and (isinstance(value, Mapping) or value is None):
            value = build(base, merge(section_defaults(fields[name]), normalize(base, value or {})), where,
                          f"{prefix}{name}.")
        kwargs[name] = value
    try:
        return cls(**kwargs)
    except FieldError as exc:
        if not where:
            raise exc.under(prefix) from None
        raise ConfigError(f"{exc.under(prefix)}{suffix}") from None


def section_defaults(f: dataclasses.Field) -> dict[str, Any]:
    """The values a section field's default instance sets."""
    if f.default_factory is dataclasses.MISSING:  # type: ignore[misc]
        return {}
    return dataclasses.asdict(f.default_factory())  # type: ignore[misc]


def normalize(cls: type, values: Any) -> Any:
    """``values`` with the option keys of ``cls`` (and its sections) in ``snake_case``; values of
    mapping-typed options (run names, say) are left as they are."""
    if not isinstance(values, Mapping):
        return values
    types_, out = hints(cls), {}
    for key, value in values.items():
        name = str(key).replace("-", "_")
        base, _ = split_optional(types_.get(name, None))
        out[name] = normalize(base, value) if is_config(base) else value
    return out


def merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` updated with ``over``, recursively for nested mappings."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def check_keys(values: Mapping[str, Any], valid: list[str], where: str) -> dict[str, Any]:
    """``values`` with keys in ``snake_case``; :class:`ConfigError` naming an unknown key and the closest valid one."""
    out = {}
    for key, value in values.items():
        name = str(key).replace("-", "_")
        if name not in valid:
            raise ConfigError(f"unknown key {str(key)!r} in {where}{closest(name, sorted(valid))}")
        out[name] = value
    return out


def read_yaml(path: str | Path, what: str = "config") -> dict[str, Any]:
    """A YAML file that must hold a mapping; :class:`ConfigError` for a missing file, bad YAML or another type."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what} file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of option: value, not {type(data).__name__}")
    return data
