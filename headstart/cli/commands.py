"""The subcommands: each pairs a paths and an options dataclass with the stage function it calls and the
summary it prints. Building the parser imports no torch (``headstart --help`` is instant)."""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from headstart.config.flags import Parser, add_arguments


@dataclass(frozen=True)
class Command:
    """A subcommand: its paths and options classes (``module:Class``), its stage call and its summary
    (``module:function`` of :mod:`headstart.cli.summaries`)."""

    help: str
    paths: str | None
    options: str
    call: str  # module:function taking (paths, options, progress) -> result
    summary: str
    recipe: bool = False  # --config is a recipe; the command runs the pipeline
    long: bool = False  # re-executed with steady allocator settings (see MALLOC_ENV)


_C = "headstart.config"
COMMANDS: dict[str, Command] = {
    "inspect": Command("what a teacher is and which sub-networks it admits", f"{_C}:InspectPaths",
                       f"{_C}:InspectConfig", "headstart.describe:run", "inspect"),
    "prepare": Command("tokenize a corpus with the teacher's tokenizer into packed token shards",
                       f"{_C}:PreparePaths", f"{_C}:PrepareConfig", "headstart.data.stage:run", "prepare"),
    "extract": Command("cut a sub-network out of a teacher and export it as a Hugging Face checkpoint",
                       f"{_C}:ExtractPaths", f"{_C}:ExtractConfig", "headstart.extraction:run", "extract"),
    "search": Command("find the best sub-network of the teacher in each parameter budget", f"{_C}:SearchPaths",
                      f"{_C}:SearchConfig", "headstart.searching.stage:run", "search", long=True),
    "train": Command("pretrain a student with cross-entropy and distillation from the teacher", f"{_C}:TrainPaths",
                     f"{_C}:TrainConfig", "headstart.training.stage:run", "train", long=True),
    "export": Command("write a training run's checkpoint (the newest, or --step N) as a Hugging Face directory",
                      f"{_C}:ExportPaths", f"{_C}:ExportConfig", "headstart.training.export:run_export", "export"),
    "cache-logits": Command("cache the teacher's top-k log-probabilities over the training windows",
                            f"{_C}:CachePaths", f"{_C}:CacheConfig", "headstart.training.cache_stage:run",
                            "cache_logits", long=True),
    "eval": Command("perplexity, samples, size and lm-eval tasks of an exported checkpoint", f"{_C}:EvalPaths",
                    f"{_C}:EvalConfig", "headstart.evaluation:run", "evaluate"),
    "run": Command("run the whole pipeline from a recipe: prepare, importance + search, train, eval, report", None,
                   f"{_C}:RecipeConfig", "headstart.pipeline:Pipeline", "run", recipe=True, long=True),
    "compare": Command("run a recipe and print its comparison table (random init vs first-k vs searched)", None,
                       f"{_C}:RecipeConfig", "headstart.pipeline:Pipeline", "compare", recipe=True, long=True),
    "demo": Command("the embedded demo: SmolLM2-135M -> a ~50M student on Shakespeare, compared with random init",
                    None, f"{_C}:RecipeConfig", "headstart.pipeline:Pipeline", "run", recipe=True, long=True),
}
STAGES = ("prepare", "search", "train", "eval", "report")


def resolve(target: str) -> Any:
    """The object named ``module:attribute``."""
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def _switches(name: str, cmd: Command, p: argparse.ArgumentParser) -> None:
    """The command's own switches (not options of a stage): dests start with ``_``."""
    if name == "demo":
        p.add_argument("--print-recipe", dest="_print_recipe", action="store_true",
                       help="print the embedded recipe (to copy and edit) and exit")
    else:
        p.add_argument("--config", dest="_config", metavar="YAML", required=cmd.recipe,
                       help="the recipe" if cmd.recipe else "read options (and paths) from a YAML file; flags win")
    p.add_argument("--print-config", dest="_print_config", action="store_true",
                   help="print the resolved configuration as YAML and exit")
    p.add_argument("--no-progress", dest="_progress", action="store_false",
                   help="no progress bars or progress lines")
    p.add_argument("--trust-remote-code", dest="_trust_remote_code", action="store_true",
                   help="allow Python code shipped inside a checkpoint to run (default: never)")
    if cmd.recipe:
        p.add_argument("--stage", dest="_stage", choices=STAGES, help="stop after this stage (and what it needs)")
        p.add_argument("--overwrite", dest="_overwrite", action="store_true",
                       help="recompute finished stages whose settings changed (default: refuse)")


def build_parser(version: str) -> Parser:
    """The parser with every subcommand, generated from the config dataclasses (no torch)."""
    parser = Parser(prog="headstart", description="Cut the best sub-network out of a pretrained LLM, export it, "
                    "and pretrain it with distillation.")
    parser.add_argument("--version", action="version", version=f"headstart {version}")
    parser.add_argument("-v", "--verbose", dest="_verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="_command", metavar="COMMAND", required=True, parser_class=Parser)
    for name, cmd in COMMANDS.items():
        p = sub.add_parser(name, help=cmd.help, description=cmd.help)
        _switches(name, cmd, p)
        if cmd.paths:
            add_arguments(p, resolve(cmd.paths))
        add_arguments(p, resolve(cmd.options))
    return parser


def subparser(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    """The parser of subcommand ``name``."""
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices[name]


def stage_call(cmd: Command) -> Callable[..., Any]:
    """The stage function of ``cmd``."""
    return resolve(cmd.call)
