"""YAML config files for every subcommand: the file fills the same options as the flags.

``headstart <cmd> --config x.yaml --flag value``: keys of ``x.yaml`` are the subcommand's long
option names (``seq-len`` or ``seq_len``); flags given on the command line win over the file. An
unknown key is an error that names it and suggests the closest valid one.
"""

from __future__ import annotations

import argparse
import difflib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from headstart.errors import ConfigError


def read_yaml_mapping(path: str | Path, what: str = "config") -> dict[str, Any]:
    """Read a YAML file that must hold a mapping; :class:`ConfigError` for a missing file, invalid
    YAML or a non-mapping."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what} file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of option: value, not {type(data).__name__}")
    return data


def check_keys(values: Any, valid_keys: Iterable[str], where: str, section: str = "") -> dict[str, Any]:
    """``values`` with keys normalised to ``snake_case`` (``-`` and ``_`` are interchangeable);
    :class:`ConfigError` naming an unknown key (``section.key``) and the closest valid one."""
    if not isinstance(values, dict):
        raise ConfigError(f"{section or 'the file'} in {where} must be a mapping, got {type(values).__name__}")
    valid = sorted({k.replace("-", "_") for k in valid_keys})
    prefix = f"{section}." if section else ""
    out: dict[str, Any] = {}
    for key, value in values.items():
        norm = str(key).replace("-", "_")
        if norm not in valid:
            close = difflib.get_close_matches(norm, valid, n=1, cutoff=0.5)
            hint = f"; did you mean {prefix + close[0]!r}?" if close else f"; valid keys: {', '.join(valid)}"
            raise ConfigError(f"unknown key {prefix + str(key)!r} in {where}{hint}")
        out[norm] = value
    return out


def load_yaml_config(path: str | Path, valid_keys: Iterable[str], what: str = "config") -> dict[str, Any]:
    """Read a YAML mapping of options and check its keys (see :func:`check_keys`)."""
    return check_keys(read_yaml_mapping(path, what), valid_keys, str(path))


def option_dests(parser: argparse.ArgumentParser) -> list[str]:
    """The destinations of a parser's long options (what a config file may set)."""
    skip = {"help", "config"}
    return [a.dest for a in parser._actions if a.option_strings and a.dest not in skip]


def config_path_in(argv: list[str]) -> str | None:
    """The value of ``--config`` in ``argv``, if any (before the full parse)."""
    for i, arg in enumerate(argv):
        if arg == "--config" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--config="):
            return arg.split("=", 1)[1]
    return None


def apply_config_file(parser: argparse.ArgumentParser, path: str) -> None:
    """Make the values of the YAML file ``path`` the defaults of ``parser`` (flags still win).

    Options the file provides are no longer required on the command line.
    """
    values = load_yaml_config(path, option_dests(parser))
    for action in parser._actions:
        if action.dest in values:
            action.required = False
            if action.type is not None and isinstance(values[action.dest], str):
                values[action.dest] = action.type(values[action.dest])
    parser.set_defaults(**values)
