"""The ``headstart`` command line: one subcommand per pipeline stage.

Each subcommand lives in ``headstart/commands/<name>.py`` and exposes ``HELP`` (one line),
``add_arguments(parser)`` and ``run(args) -> int``. Every :class:`HeadstartError` becomes a
one-line message on stderr and exit code 2; nothing else is caught.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from headstart.config import apply_config_file, config_path_in
from headstart.errors import HeadstartError

# name -> module under headstart.commands (imported lazily, so `--help` stays fast)
COMMANDS: dict[str, str] = {
    "inspect": "inspect_",
    "prepare": "prepare",
    "extract": "extract",
    "search": "search",
    "eval": "eval",
    "train": "train",
    "cache-logits": "cache_logits",
    "run": "run",
    "compare": "compare",
    "demo": "demo",
}


def _module(command: str):
    return importlib.import_module(f"headstart.commands.{COMMANDS[command]}")


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """The argument parser with every subcommand registered, and the subparsers by name."""
    parser = argparse.ArgumentParser(
        prog="headstart",
        description="Cut the best sub-network out of a pretrained LLM, export it, and pretrain it with distillation.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    subparsers: dict[str, argparse.ArgumentParser] = {}
    for name in COMMANDS:
        module = _module(name)
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        p.add_argument("--config", metavar="YAML", help="recipe file" if getattr(module, "CONFIG_IS_RECIPE", False)
                       else "read options from a YAML file (flags override it)")
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
        subparsers[name] = p
    return parser, subparsers


# glibc returning memory to the system dominates CPU training steps (page faults, 3-28 s steps);
# these settings make them steady. They only work when set before the process starts.
MALLOC_ENV = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": "68719476736", "MALLOC_TOP_PAD_": "1073741824"}
LONG_COMMANDS = {"train", "search", "run", "compare", "demo", "cache-logits"}


def _reexec_with_malloc_settings(argv: list[str]) -> None:
    """Re-execute this command once with :data:`MALLOC_ENV` (long CPU jobs on Linux only)."""
    command = next((a for a in argv if not a.startswith("-")), None)
    if (command not in LONG_COMMANDS or not sys.platform.startswith("linux")
            or all(k in os.environ for k in MALLOC_ENV) or os.environ.get("HEADSTART_NO_REEXEC")):
        return
    env = {**os.environ, **{k: os.environ.get(k, v) for k, v in MALLOC_ENV.items()}, "HEADSTART_NO_REEXEC": "1"}
    os.execve(sys.executable, [sys.executable, "-m", "headstart", *argv], env)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``headstart`` console script."""
    if argv is None:
        argv = sys.argv[1:]
        _reexec_with_malloc_settings(argv)
    parser, subparsers = build_parser()
    command = next((a for a in argv if a in subparsers), None)
    config = config_path_in(argv)
    if command and config and not getattr(_module(command), "CONFIG_IS_RECIPE", False):
        try:
            apply_config_file(subparsers[command], config)
        except HeadstartError as exc:
            print(f"headstart {command}: error: {exc}", file=sys.stderr)
            return 2
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    for noisy in ("httpx", "urllib3", "huggingface_hub", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        return int(args._run(args) or 0)
    except HeadstartError as exc:
        print(f"headstart {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"headstart {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
