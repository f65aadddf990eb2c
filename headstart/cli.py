"""The ``headstart`` command line: one subcommand per pipeline stage, generated from its config dataclass.

``headstart <command> [--config file.yaml] [--flags]``: the file fills the command's options (for
``run``/``compare`` it is the recipe), flags win over the file, and the result is validated before any
work starts. Each command's work lives in ``headstart/commands/<name>.py`` as ``run(cfg) -> result``
and ``summary(result, cfg) -> str``; only this module prints. A :class:`HeadstartError` (and a file
system error) becomes one line on stderr and a non-zero exit code; a traceback means a bug.

Building the parser imports no torch (``headstart --help`` is instant).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from dataclasses import dataclass
from typing import Any

from headstart.config import Parser, add_arguments, build, check_required, merge, normalize, parsed_values, read_yaml
from headstart.errors import HeadstartError


@dataclass(frozen=True)
class Command:
    """A subcommand: its config class (``module:Class``), the module that runs it, and its extra flags."""

    config: str
    module: str
    recipe: bool = False  # --config is a recipe; the command runs the pipeline
    long: bool = False  # re-executed with steady allocator settings (see MALLOC_ENV)


COMMANDS: dict[str, Command] = {
    "inspect": Command("headstart.configs:InspectConfig", "inspect_"),
    "prepare": Command("headstart.configs:PrepareConfig", "prepare"),
    "extract": Command("headstart.configs:ExtractConfig", "extract"),
    "search": Command("headstart.configs:SearchConfig", "search", long=True),
    "train": Command("headstart.train.config:TrainConfig", "train", long=True),
    "cache-logits": Command("headstart.configs:CacheLogitsConfig", "cache_logits", long=True),
    "eval": Command("headstart.configs:EvalConfig", "eval"),
    "run": Command("headstart.recipe:RecipeConfig", "run", recipe=True, long=True),
    "compare": Command("headstart.recipe:RecipeConfig", "compare", recipe=True, long=True),
    "demo": Command("headstart.recipe:RecipeConfig", "demo", recipe=True, long=True),
}
_HELP = {
    "run": "run the whole pipeline from a recipe: prepare, importance + search, train, eval, report",
    "compare": "run a recipe's comparison (random init vs first-k vs searched, CE vs KD) and print its table",
    "demo": "the embedded demo: SmolLM2-135M -> a half-size student on Shakespeare, compared with random init",
}


def config_class(command: str) -> type:
    """The config dataclass of ``command``."""
    module, _, name = COMMANDS[command].config.partition(":")
    return getattr(importlib.import_module(module), name)


def _extra_arguments(name: str, p: argparse.ArgumentParser) -> None:
    p.add_argument("--trust-remote-code", dest="_trust_remote_code", action="store_true",
                   help="allow Python code shipped inside a checkpoint to run (off: never)")
    if name == "run":
        p.add_argument("--stage", dest="_stage", choices=("prepare", "search", "train", "eval", "report"),
                       help="stop after this stage (and what it needs)")
    if name == "demo":
        p.add_argument("--print-recipe", dest="_print_recipe", action="store_true",
                       help="print the demo recipe and exit")


def build_parser() -> argparse.ArgumentParser:
    """The parser with every subcommand, generated from the config dataclasses (no torch)."""
    parser = Parser(prog="headstart", description="Cut the best sub-network out of a pretrained LLM, export "
                    "it, and pretrain it with distillation.")
    parser.add_argument("-v", "--verbose", dest="_verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="_command", metavar="COMMAND", required=True, parser_class=Parser)
    for name, cmd in COMMANDS.items():
        cls = config_class(name)
        text = _HELP.get(name) or (cls.__doc__ or "").split(":", 1)[-1].strip().rstrip(".")
        p = sub.add_parser(name, help=text, description=text)
        p.add_argument("--config", dest="_config", metavar="YAML", required=cmd.recipe and name != "demo",
                       help="the recipe" if cmd.recipe else "read options from a YAML file (flags win over it)")
        _extra_arguments(name, p)
        add_arguments(p, cls)
    return parser


def load_config(command: str, args: argparse.Namespace) -> Any:
    """The validated config of ``command`` from ``--config`` and the flags (flags win)."""
    cmd, flags = COMMANDS[command], parsed_values(args)
    if cmd.recipe:
        from headstart.recipe import load_recipe

        if command == "demo":
            from headstart.commands.demo import demo_recipe

            return load_recipe(demo_recipe(), "the demo recipe", flags)
        return load_recipe(read_yaml(args._config, "recipe"), str(args._config), flags)
    cls = config_class(command)
    values = normalize(cls, read_yaml(args._config)) if args._config else {}
    cfg = build(cls, merge(values, flags), where=str(args._config) if args._config else "")
    check_required(cfg)
    return cfg


REMOTE_CODE_ENV = "HEADSTART_TRUST_REMOTE_CODE"  # set by --trust-remote-code; read by headstart.teacher
# glibc returning memory to the system dominates CPU training steps (page faults, 3-28 s steps);
# these settings make them steady. They only work when set before the process starts.
MALLOC_ENV = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": "68719476736", "MALLOC_TOP_PAD_": "1073741824"}
# Re-executed as `python -c` with the working directory taken off sys.path, so that a `headstart/`
# folder where the user stands is never imported instead of the installed package.
_REEXEC = "import sys; del sys.path[0]; from headstart.cli import main; sys.exit(main(sys.argv[1:]))"


def _reexec_with_malloc_settings(argv: list[str]) -> None:
    """Re-execute this command once with :data:`MALLOC_ENV` (long CPU jobs on Linux only)."""
    command = next((a for a in argv if not a.startswith("-")), None)
    if (command not in COMMANDS or not COMMANDS[command].long or not sys.platform.startswith("linux")
            or all(k in os.environ for k in MALLOC_ENV) or os.environ.get("HEADSTART_NO_REEXEC")):
        return
    env = {**os.environ, **{k: os.environ.get(k, v) for k, v in MALLOC_ENV.items()}, "HEADSTART_NO_REEXEC": "1"}
    os.execve(sys.executable, [sys.executable, "-c", _REEXEC, *argv], env)


def _fail(command: str, message: str, code: int) -> int:
    print(f"headstart {command}: error: {message}", file=sys.stderr)
    return code


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``headstart`` console script; returns the exit code."""
    if argv is None:
        argv = sys.argv[1:]
        _reexec_with_malloc_settings(argv)
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help, or a one-line usage error already printed
        return int(exc.code or 0)
    logging.basicConfig(level=logging.DEBUG if args._verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "urllib3", "huggingface_hub", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    command = args._command
    if args._trust_remote_code:
        os.environ[REMOTE_CODE_ENV] = "1"
    try:
        cfg = load_config(command, args)
        module = importlib.import_module(f"headstart.commands.{COMMANDS[command].module}")
        extras = {k[1:]: v for k, v in vars(args).items() if k in ("_stage", "_print_recipe")}
        result = module.run(cfg, **extras)
        if _is_main_rank():
            print(module.summary(result, cfg))
        return 0
    except HeadstartError as exc:
        return _fail(command, str(exc), getattr(exc, "exit_code", 2))
    except KeyboardInterrupt:
        return _fail(command, "interrupted", 130)
    except BrokenPipeError:  # the reader went away (`headstart ... | head`): nothing more to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except OSError as exc:  # permissions, a full disk, a path that is a file: the OS's words, one line
        where = f" ({exc.filename})" if exc.filename else ""
        return _fail(command, f"{exc.strerror or exc}{where}; check the path and free space", 1)


def _is_main_rank() -> bool:
    return os.environ.get("RANK", "0") == "0"


if __name__ == "__main__":
    sys.exit(main())
