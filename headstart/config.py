"""Typed configuration: one dataclass per stage; flags, YAML files and recipes all come from it.

A stage's options are the fields of a dataclass (see :mod:`headstart.configs`) declared with
:func:`option`, which carries the help text and CLI details. From that one declaration:

* :func:`add_arguments` generates the subcommand's flags (``seq_len`` -> ``--seq-len``; a bool that
  defaults to true becomes ``--no-<name>``; nested dataclasses become ``--section.field``);
* :func:`build` turns a mapping (a YAML file, a recipe section, parsed flags) into the validated
  dataclass: keys are checked (``seq-len`` and ``seq_len`` both work; an unknown key is refused with
  the closest valid one), values are coerced to the field's type (``1e6`` is a number, ``"16384"``
  too; a string where a list belongs is refused), then the dataclass's ``__post_init__`` checks
  ranges and combinations, naming the flag.

Nothing here imports torch: ``headstart --help`` stays light.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import math
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml

from headstart.errors import ConfigError

T = TypeVar("T")


def option(default: Any = dataclasses.MISSING, help: str = "", *, choices: tuple[str, ...] | None = None,
           positional: bool = False, required: bool = False, flag: str | None = None, metavar: str | None = None,
           cli: bool = True) -> Any:
    """A config field with its help text and CLI details.

    ``required``: the command needs a value although the dataclass has a default (``None``): a recipe
    fills it. ``positional``: also accepted as a positional argument. ``flag``: the flag name when it
    is not ``--field-name``. ``cli=False``: settable from files only.
    """
    meta = {"help": help, "choices": choices, "positional": positional, "required": required, "flag": flag,
            "metavar": metavar, "cli": cli}
    if isinstance(default, (list, dict)):
        value = default
        return dataclasses.field(default_factory=lambda: type(value)(value), metadata=meta)
    if dataclasses.is_dataclass(default) and not isinstance(default, type):
        section = default
        return dataclasses.field(default_factory=lambda: dataclasses.replace(section), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def flag_of(f: dataclasses.Field, prefix: str = "") -> str:
    """The command-line flag of field ``f`` (``--seq-len``, ``--train.seq-len``)."""
    return f.metadata.get("flag") or "--" + prefix + f.name.replace("_", "-")


# -- types ---------------------------------------------------------------------------------------
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _split_optional(tp: Any) -> tuple[Any, bool]:
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
    origin = typing.get_origin(tp)
    if origin is list:
        item = typing.get_args(tp)[0]
        return "a list of " + {int: "integers", float: "numbers", str: "strings"}.get(item, _describe(item))
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false", dict: "a mapping"}.get(
        tp, getattr(tp, "__name__", str(tp)))


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip().replace("_", ""))
        except ValueError:
            return None
    return None


def coerce(value: Any, tp: Any, name: str) -> Any:
    """``value`` as type ``tp`` (``int``, ``float``, ``str``, ``bool``, ``list[X]``, ``dict``, optional
    ones); :class:`ConfigError` naming ``name`` when it is not one."""
    base, optional = _split_optional(tp)
    if value is None or (optional and isinstance(value, str) and value.strip().lower() in ("none", "null")):
        if optional:
            return None
        raise ConfigError(f"{name} must be {_describe(base)}, not empty")
    bad = ConfigError(f"{name} must be {_describe(base)}, got {value!r}")
    if base is bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("true", "yes", "on", "1"):
            return True
        if text in ("false", "no", "off", "0"):
            return False
        raise bad
    if base is int:
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
        if not isinstance(value, (list, tuple)):
            raise bad
        (item,) = typing.get_args(base)
        return [coerce(v, item, f"{name}[{i}]") for i, v in enumerate(value)]
    if base is dict or typing.get_origin(base) is dict:
        if not isinstance(value, Mapping):
            raise bad
        return dict(value)
    return value


# -- mapping -> dataclass --------------------------------------------------------------------------
def _closest(key: str, valid: list[str], prefix: str = "") -> str:
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
    return f"; did you mean {prefix + close[0]!r}?" if close else f"; valid keys: {', '.join(valid)}"


def build(cls: type[T], values: Mapping[str, Any] | None, where: str = "", prefix: str = "",
          exclude: frozenset[str] = frozenset()) -> T:
    """The dataclass ``cls`` from ``values`` (keys checked, values coerced, then validated).

    ``where`` names the source in messages (a file); ``prefix`` the section (``train.``);
    ``exclude`` lists fields the mapping may not set (a recipe fills them itself).
    """
    if values is None:
        values = {}
    suffix = f" in {where}" if where else ""
    if not isinstance(values, Mapping):
        raise ConfigError(f"{prefix.rstrip('.') or 'the config'}{suffix} must be a mapping of option: value, "
                          f"not {type(values).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    hints = _hints(cls)
    valid = sorted(n for n in fields if n not in exclude)
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        name = str(key).replace("-", "_")
        if name in exclude:
            raise ConfigError(f"{prefix}{key}{suffix} is set by the recipe itself; remove it")
        if name not in fields:
            raise ConfigError(f"unknown key {prefix + str(key)!r}{suffix}{_closest(name, valid, prefix)}")
        tp = hints[name]
        base, _ = _split_optional(tp)
        if is_config(base):
            excluded = _exclusions(cls, name)
            if isinstance(value, Mapping) or value is None:
                value = merge(_section_defaults(fields[name], excluded), normalize(base, value or {}))
            kwargs[name] = build(base, value, where, f"{prefix}{name}.", excluded)
            continue
        try:
            value = coerce(value, tp, prefix + name)
        except ConfigError as exc:
            raise ConfigError(f"{exc}{suffix}") from None
        check_choice(value, fields[name].metadata.get("choices"), prefix + name, suffix)
        kwargs[name] = value
    try:
        return cls(**kwargs)
    except ConfigError as exc:
        raise ConfigError(f"{prefix.rstrip('.') + ': ' if prefix else ''}{exc}{suffix}") from None


def check_choice(value: Any, choices: tuple | None, name: str, suffix: str = "") -> None:
    """:class:`ConfigError` when ``value`` (or an item of a list) is not one of ``choices``."""
    if not choices or value is None:
        return
    for item in value if isinstance(value, list) else [value]:
        if item not in choices:
            close = difflib.get_close_matches(str(item), [str(c) for c in choices], n=1, cutoff=0.5)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"{name} {item!r} is not one of {', '.join(map(str, choices))}{suffix}{hint}")


def _section_defaults(f: dataclasses.Field, excluded: frozenset[str]) -> dict[str, Any]:
    """The values a section's default instance sets (a recipe's defaults for that section)."""
    if f.default_factory is dataclasses.MISSING:  # type: ignore[misc]
        return {}
    default = f.default_factory()  # type: ignore[misc]
    return {k: v for k, v in dataclasses.asdict(default).items() if k not in excluded}


def _exclusions(cls: type, section: str) -> frozenset[str]:
    owned = getattr(cls, "OWNED", {})
    return frozenset(owned.get(section, ()))


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain data of a config dataclass (nested sections included), ready for YAML."""
    return dataclasses.asdict(cfg)


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


def check_keys(values: Mapping[str, Any], valid: list[str], where: str) -> dict[str, Any]:
    """``values`` with keys in ``snake_case``; :class:`ConfigError` naming an unknown key and the closest valid one."""
    out = {}
    for key, value in values.items():
        name = str(key).replace("-", "_")
        if name not in valid:
            raise ConfigError(f"unknown key {str(key)!r} in {where}{_closest(name, sorted(valid))}")
        out[name] = value
    return out


def normalize(cls: type, values: Any) -> Any:
    """``values`` with the option keys of ``cls`` (and its sections) in ``snake_case``; values of
    mapping-typed options (run names, say) are left as they are."""
    if not isinstance(values, Mapping):
        return values
    hints, out = _hints(cls), {}
    for key, value in values.items():
        name = str(key).replace("-", "_")
        base, _ = _split_optional(hints.get(name, None))
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


# -- dataclass -> flags ----------------------------------------------------------------------------
class Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line: what is wrong and where to look."""

    def error(self, message: str) -> typing.NoReturn:  # noqa: D102 (argparse's hook)
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def add_arguments(parser: argparse.ArgumentParser, cls: type, prefix: str = "",
                  exclude: frozenset[str] = frozenset()) -> None:
    """Flags for every field of ``cls`` (defaults suppressed: only what the user typed is parsed)."""
    hints = _hints(cls)
    for f in dataclasses.fields(cls):
        if not f.init or f.name in exclude or not f.metadata.get("cli", True):
            continue
        tp, _ = _split_optional(hints[f.name])
        if is_config(tp):
            group = parser.add_argument_group(f"{f.name} section")
            add_arguments(group, tp, f"{prefix}{f.name}.", _exclusions(cls, f.name))  # type: ignore[arg-type]
            continue
        _add_field(parser, f, tp, prefix)


def _default_text(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        value = f.default
    elif f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
    else:
        return ""
    if value is None or value == [] or isinstance(value, bool):
        return ""
    return f" (default: {value})"


def _add_field(parser: Any, f: dataclasses.Field, tp: Any, prefix: str) -> None:
    meta, dest = f.metadata, prefix + f.name
    text = (meta.get("help") or "") + _default_text(f)
    choices = meta.get("choices")
    kwargs: dict[str, Any] = {"dest": dest, "default": argparse.SUPPRESS}
    if tp is bool:
        if f.default is True:
            parser.add_argument("--" + prefix + "no-" + f.name.replace("_", "-"), action="store_false", help=text,
                                **kwargs)
        else:
            parser.add_argument(flag_of(f, prefix), action="store_true", help=text, **kwargs)
        return
    if typing.get_origin(tp) is list:
        kwargs["nargs"] = "+"
    if choices:
        kwargs["metavar"] = "{" + ",".join(map(str, choices)) + "}"
    elif meta.get("metavar"):
        kwargs["metavar"] = meta["metavar"]
    if meta.get("positional"):
        parser.add_argument(f"_pos_{dest}", nargs="*" if "nargs" in kwargs else "?", default=argparse.SUPPRESS,
                            help=text, metavar=kwargs.get("metavar", f.name.upper()))
        text = f"same as the positional {f.name.upper()}"
    if meta.get("required") or (f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING):
        text = "(required) " + text
    parser.add_argument(flag_of(f, prefix), help=text, **kwargs)


def parsed_values(namespace: argparse.Namespace) -> dict[str, Any]:
    """The flags the user gave, as a nested mapping (``train.tokens`` -> ``{"train": {"tokens": ...}}``)."""
    out: dict[str, Any] = {}
    given = vars(namespace)
    for dest, value in given.items():
        if dest.startswith("_pos_"):  # a positional stands in for its flag when the flag is absent
            dest = dest[len("_pos_"):]
            if value in (None, []) or dest in given:
                continue
        elif dest.startswith("_"):
            continue
        node = out
        *sections, name = dest.split(".")
        for s in sections:
            node = node.setdefault(s, {})
        node[name] = value
    return out


def check_required(cfg: Any, prefix: str = "") -> None:
    """:class:`ConfigError` naming the flag of the first ``required`` option left unset."""
    for f in dataclasses.fields(cfg):
        if f.metadata.get("required") and getattr(cfg, f.name) in (None, [], ""):
            raise ConfigError(f"{flag_of(f, prefix)} is required")
