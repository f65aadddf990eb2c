"""The ``headstart`` command line: one subcommand per stage, generated from its paths and options dataclasses.

``headstart <command> [--config file.yaml] [--flags]``: the file fills the command's paths and options (for
``run``/``compare`` it is the recipe), flags win over the file, and everything is validated before any work
starts. Each command calls its stage's library function (:mod:`headstart.cli.commands`) and prints a summary
(:mod:`headstart.cli.summaries`); only this package prints. A :class:`HeadstartError` (and a file-system
error) becomes one line on stderr and a non-zero exit code; a traceback means a bug.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
from typing import Any

import yaml

from headstart import __version__
from headstart.cli.commands import COMMANDS, build_parser, resolve, stage_call, subparser
from headstart.config.fields import build, closest, merge, normalize, read_yaml
from headstart.config.flags import normalize_argv, parsed_values, suggest
from headstart.errors import ConfigError, HeadstartError

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


def _split(cls: type, values: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``values`` split into the fields of ``cls`` and the rest."""
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in values.items() if k in names}, {k: v for k, v in values.items() if k not in names}


def load(command: str, args: Any) -> tuple[Any, Any]:
    """The validated ``(paths, options)`` of ``command`` (``paths`` is ``None`` for recipe commands)."""
    from headstart.config.recipe import load_recipe

    cmd, flags = COMMANDS[command], parsed_values(args)
    if cmd.recipe:
        if command == "demo":
            from headstart.cli.summaries import demo_recipe

            return None, load_recipe(demo_recipe(), "the demo recipe", flags)
        return None, load_recipe(read_yaml(args._config, "recipe"), str(args._config), flags)
    paths_cls, options_cls = resolve(cmd.paths), resolve(cmd.options)
    where = str(args._config) if args._config else ""
    given = normalize(options_cls, normalize(paths_cls, read_yaml(args._config))) if args._config else {}
    valid = sorted({f.name for f in dataclasses.fields(paths_cls)} | {f.name for f in dataclasses.fields(options_cls)})
    for key in given:  # a file may set paths and options: suggest from both
        if key not in valid:
            raise ConfigError(f"unknown key {key!r} in {where}{closest(key, valid)}")
    file_paths, file_options = _split(paths_cls, given)
    flag_paths, flag_options = _split(paths_cls, flags)
    options = build(options_cls, merge(file_options, flag_options), where=where)
    values = {**file_paths, **flag_paths}
    required = [f for f in dataclasses.fields(paths_cls)
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    missing = [f.name for f in required if f.name not in values]
    if missing:
        flag = missing[0].replace("_", "-")
        positional = dataclasses.fields(paths_cls)[0].metadata.get("positional") and missing[0] == \
            dataclasses.fields(paths_cls)[0].name
        raise ConfigError(f"{missing[0].upper() if positional else '--' + flag} is required (see headstart {command} "
                          "--help)")
    return build(paths_cls, values, where=where), options


def _print_config(paths: Any, options: Any) -> str:
    data = options.to_dict() if paths is None else {**paths.to_dict(), **options.to_dict()}
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=None, width=120).rstrip()


def execute(command: str, args: Any) -> str:
    """Run ``command`` with parsed ``args``; the summary to print."""
    from headstart.cli import summaries
    from headstart.progress import Feedback, quiet_libraries

    if command == "demo" and getattr(args, "_print_recipe", False):
        return summaries.demo_text().rstrip()
    paths, options = load(command, args)
    if args._print_config:
        return _print_config(paths, options)
    quiet_libraries()
    cmd = COMMANDS[command]
    with Feedback(show=args._progress) as progress:
        if cmd.recipe:
            pipeline = stage_call(cmd)(options, progress=progress, overwrite=args._overwrite)
            result = pipeline.run(only=args._stage)
        elif command == "inspect":
            result = stage_call(cmd)(paths, options)
        else:
            result = stage_call(cmd)(paths, options, progress=progress)
    return getattr(summaries, cmd.summary)(result, options)


def _fail(command: str, message: str, code: int) -> int:
    print(f"headstart {command}: error: {message}", file=sys.stderr)
    return code


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``headstart`` console script; returns the exit code."""
    if argv is None:
        argv = sys.argv[1:]
        _reexec_with_malloc_settings(argv)
    parser = build_parser(__version__)
    argv = normalize_argv(argv)
    try:
        args, unknown = parser.parse_known_args(argv)
        if unknown:
            subparser(parser, args._command).error(suggest(subparser(parser, args._command), unknown))
    except SystemExit as exc:  # --help, --version, or a one-line usage error already printed
        return int(exc.code or 0)
    logging.basicConfig(level=logging.DEBUG if args._verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    command = args._command
    if args._trust_remote_code:
        os.environ[REMOTE_CODE_ENV] = "1"
    try:
        summary = execute(command, args)
        if _is_main_rank():
            print(summary)
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
