"""The Python API: one function per stage and one for the whole recipe; the CLI calls the same functions.

Paths are plain arguments; options are a config dataclass of :mod:`headstart.config` or a mapping of its
fields (validated the same way a YAML file or the flags are: ``{"tokens": "1M", "optim": {"lr": 5e-4}}``).
``progress`` is ``True`` (bars on a terminal, log lines elsewhere), ``False``, or your own
:class:`~headstart.progress.Progress`.

>>> import headstart
>>> report = headstart.run("recipe.yaml")                                        # doctest: +SKIP
>>> student = headstart.train("runs/x/students/bin0-50M/searched.yaml", "runs/x/data", "runs/y",
...                           teacher="builtin:smollm2-135m", config={"tokens": 200_000})  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from headstart.config import (
    CacheConfig,
    CachePaths,
    EvalConfig,
    EvalPaths,
    ExtractConfig,
    ExtractPaths,
    InspectConfig,
    InspectPaths,
    PrepareConfig,
    PreparePaths,
    RecipeConfig,
    SearchConfig,
    SearchPaths,
    TrainConfig,
    TrainPaths,
    build,
    load_recipe,
    read_yaml,
)
from headstart.progress import Feedback, Progress, quiet_libraries

if TYPE_CHECKING:
    from headstart.searching.outcome import SearchOutcome
    from headstart.training.stage import TrainResult

C = TypeVar("C")
ProgressArg = bool | Progress | None


def options(cls: type[C], config: C | Mapping[str, Any] | None) -> C:
    """``config`` as a validated ``cls`` (a mapping is built like a YAML file; ``None``: the defaults)."""
    if config is None or isinstance(config, Mapping):
        return build(cls, config or {})
    if not isinstance(config, cls):
        raise TypeError(f"config must be a {cls.__name__} or a mapping of its options, not {type(config).__name__}")
    return config


@contextlib.contextmanager
def feedback(progress: ProgressArg) -> Iterator[Progress | None]:
    """The :class:`Progress` of a ``progress`` argument (closed at the end)."""
    quiet_libraries()
    if progress is True:
        with Feedback() as shown:
            yield shown
    else:
        yield progress or None


def prepare(inputs: list[str], tokenizer: str, out: str | Path, *, builtin: str | None = None,
            config: PrepareConfig | Mapping[str, Any] | None = None, progress: ProgressArg = True) -> Path:
    """Tokenize ``inputs`` with ``tokenizer`` (a teacher) into packed token shards in ``out``."""
    from headstart.data import stage

    paths = PreparePaths(tokenizer=str(tokenizer), out=str(out), inputs=list(inputs), builtin=builtin)
    with feedback(progress) as shown:
        return stage.run(paths, options(PrepareConfig, config), progress=shown)


def search(teacher: str, data: str | Path, out: str | Path, *, resume: bool = False,
           config: SearchConfig | Mapping[str, Any] | None = None, progress: ProgressArg = True) -> SearchOutcome:
    """The best sub-network of ``teacher`` in each parameter budget of ``config.params``, written to ``out``."""
    from headstart.searching import stage

    paths = SearchPaths(teacher=str(teacher), data=str(data), out=str(out), resume=resume)
    with feedback(progress) as shown:
        return stage.run(paths, options(SearchConfig, config), progress=shown)


def extract(teacher: str, out: str | Path, *, spec: str | Path | None = None,
            config: ExtractConfig | Mapping[str, Any] | None = None, progress: ProgressArg = True) -> Path:
    """Cut a sub-network (``spec``, or the sizes in ``config``) out of ``teacher`` and export it to ``out``."""
    from headstart import extraction as stage

    paths = ExtractPaths(teacher=str(teacher), out=str(out), spec=None if spec is None else str(spec))
    with feedback(progress) as shown:
        return stage.run(paths, options(ExtractConfig, config), progress=shown)


def train(student: str | Path, data: str | Path, out: str | Path, *, teacher: str | None = None,
          teacher_cache: str | Path | None = None, resume: bool = False,
          config: TrainConfig | Mapping[str, Any] | None = None, progress: ProgressArg = True) -> TrainResult:
    """Pretrain ``student`` on ``data`` (CE + KD from ``teacher``) into ``out``; the exported student's result."""
    from headstart.training import stage

    paths = TrainPaths(student=str(student), data=str(data), out=str(out), teacher=teacher,
                       teacher_cache=None if teacher_cache is None else str(teacher_cache), resume=resume)
    with feedback(progress) as shown:
        return stage.run(paths, options(TrainConfig, config), progress=shown)


def evaluate(checkpoint: str | Path, *, data: str | Path | None = None, text: str | Path | None = None,
             json_out: str | Path | None = None, config: EvalConfig | Mapping[str, Any] | None = None,
             progress: ProgressArg = True) -> dict[str, Any]:
    """Perplexity (on ``data`` or ``text``), samples, size and lm-eval tasks of an exported ``checkpoint``."""
    from headstart import evaluation as stage

    paths = EvalPaths(checkpoint=str(checkpoint), data=None if data is None else str(data),
                      text=None if text is None else str(text), json_out=None if json_out is None else str(json_out))
    with feedback(progress) as shown:
        return stage.run(paths, options(EvalConfig, config), progress=shown)


def cache_logits(teacher: str, data: str | Path, out: str | Path, *,
                 config: CacheConfig | Mapping[str, Any] | None = None, progress: ProgressArg = True) -> Path:
    """The teacher's top-k log-probabilities over the training windows of ``data``, cached in ``out``."""
    from headstart.training import cache_stage

    paths = CachePaths(teacher=str(teacher), data=str(data), out=str(out))
    with feedback(progress) as shown:
        return cache_stage.run(paths, options(CacheConfig, config), progress=shown)


def inspect(teacher: str, *, config: InspectConfig | Mapping[str, Any] | None = None) -> dict[str, Any]:
    """What ``teacher`` is: its family, sizes, parameter and FLOP counts, and the sub-networks it admits."""
    from headstart import describe

    quiet_libraries()
    return describe.run(InspectPaths(teacher=str(teacher)), options(InspectConfig, config))


def recipe(source: str | Path | Mapping[str, Any] | RecipeConfig) -> RecipeConfig:
    """A validated recipe from a YAML path, a mapping or a :class:`RecipeConfig`."""
    if isinstance(source, RecipeConfig):
        return source
    if isinstance(source, Mapping):
        return load_recipe(dict(source), "the recipe")
    return load_recipe(read_yaml(source, "recipe"), str(source))


def run(source: str | Path | Mapping[str, Any] | RecipeConfig, *, stage: str | None = None, overwrite: bool = False,
        progress: ProgressArg = True) -> Path:
    """The whole pipeline of a recipe (a YAML path, a mapping or a :class:`RecipeConfig`), every stage cached and
    resumable; stops after ``stage`` if given. Returns the last stage's output (the report directory)."""
    from headstart.pipeline import Pipeline

    cfg = recipe(source)
    with feedback(progress) as shown:
        return Pipeline(cfg, progress=shown, overwrite=overwrite).run(only=stage)
