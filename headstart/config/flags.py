"""Command-line flags generated from config dataclasses (no torch).

Every field becomes a flag: ``seq_len`` -> ``--seq-len``, a nested section ``optim`` -> ``--optim.lr``; a
bool that defaults to true becomes ``--no-<name>``; a list takes several values. Defaults are suppressed,
so only what the user typed is parsed (and wins over a YAML file). Flags are exact: no abbreviations;
``_`` and ``-`` are the same in a flag name (:func:`normalize_argv`); an unknown flag is answered with
the closest known one (:func:`suggest`).
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import typing
from typing import Any

from headstart.config.fields import hints, is_config, split_optional


class Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line, that takes no abbreviations."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> typing.NoReturn:  # argparse's hook
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def flag_of(f: dataclasses.Field, prefix: str = "") -> str:
    """The command-line flag of field ``f`` (``--seq-len``, ``--optim.lr``)."""
    return f.metadata.get("flag") or "--" + prefix + f.name.replace("_", "-")


def normalize_argv(argv: list[str]) -> list[str]:
    """Flags with ``_`` written as ``-`` (``--seq_len`` == ``--seq-len``); values are left alone."""
    out = []
    for arg in argv:
        if arg.startswith("--") and len(arg) > 2:
            name, eq, value = arg.partition("=")
            arg = name.replace("_", "-") + eq + value
        out.append(arg)
    return out


def add_arguments(parser: Any, cls: type, prefix: str = "", root: argparse.ArgumentParser | None = None) -> None:
    """Flags for every field of ``cls`` and its sections (each section a help group of ``root``, the parser:
    argparse deprecates groups inside groups)."""
    types_, root = hints(cls), root or parser
    for f in dataclasses.fields(cls):
        if not f.init or not f.metadata.get("cli", True):
            continue
        tp, _ = split_optional(types_[f.name])
        if is_config(tp):
            group = root.add_argument_group(f"{prefix}{f.name} options")
            add_arguments(group, tp, f"{prefix}{f.name}.", root)  # type: ignore[arg-type]
            continue
        _add_field(parser, f, tp, prefix)


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def _add_field(parser: Any, f: dataclasses.Field, tp: Any, prefix: str) -> None:
    meta, dest, default = f.metadata, prefix + f.name, _default(f)
    shown = "" if default in (None, [], dataclasses.MISSING) or isinstance(default, bool) else f" (default: {default})"
    text = (meta.get("help") or "") + shown
    kwargs: dict[str, Any] = {"dest": dest, "default": argparse.SUPPRESS}
    if tp is bool:
        if default is True:
            name = "--" + prefix + "no-" + f.name.replace("_", "-")
            parser.add_argument(name, action="store_false", help=f"turn off (on by default): {text}", **kwargs)
        else:
            parser.add_argument(flag_of(f, prefix), action="store_true", help=text, **kwargs)
        return
    if typing.get_origin(tp) is list:
        kwargs["nargs"] = "+"
    if meta.get("choices"):
        kwargs["metavar"] = "{" + ",".join(map(str, meta["choices"])) + "}"
    else:
        kwargs["metavar"] = meta.get("metavar") or f.name.upper()
    if meta.get("positional"):
        parser.add_argument(f"_pos_{dest}", nargs="*" if "nargs" in kwargs else "?", default=argparse.SUPPRESS,
                            help=text, metavar=kwargs.get("metavar", f.name.upper()))
        text = f"same as the positional {f.name.upper()}"
    if default is dataclasses.MISSING:
        text = "(required) " + text
    parser.add_argument(flag_of(f, prefix), help=text, **kwargs)


def parsed_values(namespace: argparse.Namespace) -> dict[str, Any]:
    """The flags the user gave, as a nested mapping (``optim.lr`` -> ``{"optim": {"lr": ...}}``); dests
    starting with ``_`` are the command's own switches and are left out."""
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


def suggest(parser: argparse.ArgumentParser, unknown: list[str]) -> str:
    """One line for the unknown flags ``unknown``, with the closest known flag of ``parser``."""
    known = sorted({s for a in parser._actions for s in a.option_strings})
    first = next((u.partition("=")[0] for u in unknown if u.startswith("-")), unknown[0])
    close = difflib.get_close_matches(first, known, n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]}?" if close else ""
    return f"unrecognized arguments: {' '.join(unknown)}{hint}"
