"""``headstart run``: prepare -> importance + search -> specs -> train every run of every budget -> eval -> report.

Each stage calls the stage module's own ``run`` (the function its subcommand calls) with the paths and
options the recipe derives. Output layout (``OUT`` is the recipe's ``out``; ``B`` is a budget's bin label,
e.g. ``bin0-50M``)::

    OUT/recipe.yaml                     the resolved recipe
    OUT/data/                           prepared token shards + manifest.json       (stage "prepare")
    OUT/search/                         journal, best-B.yaml, summary.json, search.png, teacher.json
    OUT/students/B/{searched,first-k}.yaml   the specs the runs of budget B start from   ("search")
    OUT/runs/B/<run>/                   metrics, checkpoints/, initial.json, student/ (HF)   ("train")
    OUT/eval/B/<run>.json               perplexity on val, samples, size              ("eval")
    OUT/report/                         report.md, plots, summary.json                ("report")
    OUT/.stages/<stage>.json            what each finished stage was computed from

The whole recipe is checked before the first file is written (:func:`check`). A stage is skipped when
its record matches the recipe and upstream stages and its outputs exist; a stage whose outputs were
deleted is recomputed; an interrupted training run resumes from its newest checkpoint. A finished stage
whose settings changed is only recomputed with ``overwrite`` (else the run stops, naming what changed).
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from headstart.config.evaluate import EvalPaths
from headstart.config.prepare import PreparePaths
from headstart.config.recipe import RUN_LABELS, RUNS, RecipeConfig
from headstart.config.search import SearchPaths
from headstart.config.train import TrainPaths, flatten
from headstart.errors import CheckpointError, ConfigError
from headstart.io import write_json, write_yaml
from headstart.locking import main_process_lock
from headstart.progress import Progress, report

log = logging.getLogger(__name__)

STAGES = ("prepare", "search", "train", "eval", "report")
INITIAL = "initial.json"  # validation loss of a run's starting point (tokens = 0)


def _hash(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


class Pipeline:
    """Runs a :class:`RecipeConfig` stage by stage, skipping what is already done."""

    def __init__(self, recipe: RecipeConfig, progress: Progress | None = None, overwrite: bool = False,
                 say: Callable[[str], None] = log.info) -> None:
        self.recipe, self.out, self.progress, self.overwrite, self.say = recipe, Path(recipe.out), progress, \
            overwrite, say
        self._teacher: Any = None
        self.fingerprints: dict[str, str] = {}  # stage -> hash of what it was computed from
        self.labels = [f"bin{i}-{_format(b)}" for i, b in enumerate(recipe.budgets())]

    # -- bookkeeping ---------------------------------------------------------------------------
    @property
    def teacher(self) -> Any:
        """The teacher, loaded once and shared by every stage that needs it."""
        if self._teacher is None:
            from headstart.teacher import load_teacher

            report(self.progress, "load teacher", 0, 1)
            self._teacher = load_teacher(self.recipe.teacher)
            report(self.progress, "load teacher", 1, 1)
        return self._teacher

    def _record(self, stage: str) -> Path:
        return self.out / ".stages" / f"{stage.replace(':', '-').replace('/', '-')}.json"

    def _saved(self, stage: str) -> dict[str, Any]:
        try:
            saved = json.loads(self._record(stage).read_text())
            return saved if isinstance(saved, dict) else {}
        except (OSError, ValueError):  # missing or damaged record: the stage runs again
            return {}

    def _done(self, stage: str, key: str, outputs: list[Path], settings: Any = None,
              output: Path | None = None) -> bool:
        """Whether ``stage`` finished with these settings; refuses to replace one finished with others unless
        ``overwrite`` (``output``, if given, is then removed)."""
        saved = self._saved(stage)
        if saved.get("key") == key:
            missing = [p for p in outputs if not p.exists()]
            if not missing:
                self.say(f"[{stage}] done earlier, skipped")
                return True
            self.say(f"[{stage}] outputs missing ({missing[0].name}); recomputing")
            return False
        if saved.get("key") is not None and output is not None and output.exists():
            if not self.overwrite:
                raise CheckpointError(f"{output} was computed with other settings ({_changes(saved, settings)}); "
                                      "pass --overwrite to recompute it, or choose another out")
            self.say(f"[{stage}] settings changed ({_changes(saved, settings)}); recomputing")
            shutil.rmtree(output)
        return False

    def _finish(self, stage: str, key: str, settings: Any = None, **info: Any) -> None:
        write_json(self._record(stage), {"key": key, "settings": settings, "finished": time.time(), **info},
                   default=str)

    # -- the whole run -------------------------------------------------------------------------
    def run(self, only: str | None = None) -> Path:
        """Run every stage (or up to ``only``); return the last stage's output directory."""
        if only is not None and only not in STAGES:
            raise ConfigError(f"unknown stage {only!r}; stages: {', '.join(STAGES)}")
        self.recipe = check(self.recipe, self.say)
        steps: list[tuple[str, Callable[[], Path]]] = [
            ("prepare", self.prepare), ("search", self.search), ("train", self.train_all),
            ("eval", self.evaluate), ("report", self.report)]
        result = self.out
        with main_process_lock(self.out, what="out"):  # one pipeline per output directory
            write_yaml(self.out / "recipe.yaml", self.recipe.to_dict())
            for name, step in steps:
                result = step()
                if name == only:
                    break
        return result

    # -- stages --------------------------------------------------------------------------------
    def prepare(self) -> Path:
        """Tokenize the corpus with the teacher's tokenizer."""
        from headstart.data import read_manifest
        from headstart.data import stage as data_stage

        paths = self.prepare_paths()
        settings = {"corpus": [_resolved(x) for x in paths.inputs], "teacher": _resolved(self.recipe.teacher),
                    "options": asdict(self.recipe.prepare)}
        key = _hash(settings)
        if not self._done("prepare", key, [Path(paths.out) / "manifest.json"]):
            self.say(f"[prepare] tokenizing {', '.join(paths.inputs)}")
            tokenizer = self._teacher.tokenizer if self._teacher is not None else None
            data_stage.run(paths, self.recipe.prepare, tokenizer=tokenizer, progress=self.progress)
            self._finish("prepare", key, settings)
        check_prepared(self.recipe, paths.out)
        self.fingerprints["prepare"] = _hash([key, read_manifest(paths.out).get("key")])
        return Path(paths.out)

    def prepare_paths(self) -> PreparePaths:
        """Where the recipe's corpus is prepared."""
        return PreparePaths(tokenizer=self.recipe.teacher, out=str(self.out / "data"), inputs=list(self.recipe.corpus))

    def search_paths(self) -> SearchPaths:
        """Where the recipe's search reads and writes."""
        return SearchPaths(teacher=self.recipe.teacher, data=str(self.out / "data"), out=str(self.out / "search"))

    def search(self) -> Path:
        """Importance pass + bin-constrained search in every budget; write each budget's two specs."""
        from headstart.searching import stage as search_stage
        from headstart.searching.specs import write_budget_specs

        paths, cfg = self.search_paths(), self.recipe.search
        out = Path(paths.out)
        settings = {"prepare": self.fingerprints["prepare"], "options": asdict(cfg)}
        key = _hash(settings)
        specs = [self.out / "students" / label / n for label in self.labels for n in ("searched.yaml", "first-k.yaml")]
        if not self._done("search", key, [out / "summary.json", out / "teacher.json", *specs], settings, out):
            paths.resume = (out / "journal.jsonl").is_file()
            self.say(f"[search] {'resuming' if paths.resume else 'searching'} in budget(s) {cfg.params}")
            search_stage.run(paths, cfg, teacher=self.teacher, progress=self.progress)
            write_budget_specs(self.teacher, out, self.out / "students", self.labels, self.recipe.teacher, cfg.seq_len)
            self._log_search(out)
            self._finish("search", key, settings)
        self.fingerprints["search"] = key
        return out

    def _log_search(self, out: Path) -> None:
        """The search in the train section's metrics backends, if any (TensorBoard, W&B)."""
        from headstart.io import read_jsonl
        from headstart.training.metrics import log_search

        logging_ = self.recipe.train.logging
        if logging_.tensorboard or logging_.wandb:
            rungs = json.loads((out / "summary.json").read_text()).get("rungs", [])
            log_search(out, read_jsonl(out / "journal.jsonl"), rungs, tensorboard=logging_.tensorboard,
                       wandb=logging_.wandb, group=logging_.wandb_group or self.out.name)

    def train_all(self) -> Path:
        """Every comparison run of every budget."""
        for label in self.labels:
            for name in self.recipe.compare.runs:
                self.train(label, name)
        return self.out / "runs"

    def train(self, label: str, name: str) -> Path:
        """Train comparison run ``name`` of budget ``label`` (resuming it if it was interrupted)."""
        from dataclasses import replace

        from headstart.training import stage as train_stage
        from headstart.training.checkpoint import latest_checkpoint

        init, _ = RUNS[name]
        spec = self.out / "students" / label / ("first-k.yaml" if init == "first-k" else "searched.yaml")
        start_tokens = 0
        if init == "rung":  # the search's winner as its last rung left it; the rung's tokens count
            source, start_tokens = self._rung_winner(label)
        elif init != "random" and self.recipe.reconstruct.enabled:
            source = self._reconstructed(label, spec)
        else:
            source = spec
        cfg = self.recipe.train_config(name)
        cfg = replace(cfg, tokens=cfg.tokens - start_tokens) if start_tokens else cfg
        out = self.recipe.run_dir(label, name)
        paths = TrainPaths(student=f"random:{source}" if init == "random" else str(source),
                           data=str(self.out / "data"), out=str(out), teacher=self.recipe.teacher)
        stage, settings = f"train:{label}:{name}", {"search": self.fingerprints["search"], "options": asdict(cfg)}
        key = _hash(settings)
        if self._done(stage, key, [out / "student" / "config.json", out / "metrics.jsonl", out / INITIAL], settings,
                      out):
            return out
        paths.resume = latest_checkpoint(out) is not None
        if not paths.resume and out.exists():
            shutil.rmtree(out)  # a run that died before its first checkpoint: nothing to keep
        self.say(f"[{stage}] {'resuming' if paths.resume else 'training'} {RUN_LABELS[name]} for {cfg.tokens:,} "
                 "tokens")
        train_stage.run(paths, cfg, teacher=self.teacher, progress=self.progress)
        write_json(out / INITIAL, {**self._initial_loss(paths, cfg), "tokens": start_tokens})
        self._finish(stage, key, settings)
        return out

    def _rung_winner(self, label: str) -> tuple[Path, int]:
        """The trained student the search's rungs left for budget ``label``, and its training tokens."""
        from headstart.config.fields import read_yaml

        meta = read_yaml(self.out / "search" / f"best-{label}.yaml", "spec")
        student = Path(meta.get("rung_student") or "")
        if not meta.get("rung_student") or not (student / "config.json").is_file():
            raise ConfigError(f"compare run rung-kd needs the rung winner's student of {label}, but the search left "
                              f"none ({student}); rerun the search with search.rungs.count >= 1")
        return student, int(meta["rung_tokens"])

    def _reconstructed(self, label: str, spec_file: Path) -> Path:
        """The student of ``spec_file`` extracted with reconstructed weights (``reconstruct``), made once."""
        from headstart.calibration import calibration_tokens
        from headstart.config.extract import ExtractConfig
        from headstart.extraction import build_student, export
        from headstart.reconstruct import reconstruct
        from headstart.spec import SubnetSpec

        out, options = spec_file.with_suffix(""), self.recipe.reconstruct
        stage, key = f"extract:{label}:{out.name}", _hash([self.fingerprints["search"], asdict(options)])
        if not self._done(stage, key, [out / "config.json"]):
            shutil.rmtree(out, ignore_errors=True)
            teacher, spec, calib = self.teacher, SubnetSpec.load(spec_file), ExtractConfig(seed=self.recipe.seed)
            tokens = calibration_tokens(str(self.out / "data"), teacher.tokenizer, calib.calib_samples,
                                        calib.calib_seq_len, calib.seed)
            student = build_student(teacher, spec)
            stats = reconstruct(teacher, spec, student, tokens, **options.arguments())
            export(teacher, spec, out, student=student, metadata={"reconstruction": stats})
            self._finish(stage, key, flops=stats["flops"])
        return out

    def _initial_loss(self, paths: TrainPaths, cfg: Any) -> dict[str, float]:
        """Validation loss of the run's starting point, on the training loop's own validation windows."""
        from headstart.data import fixed_windows
        from headstart.evaluation import perplexity
        from headstart.training.student import load_student

        student, _ = load_student(paths.student, self.teacher, cfg.seed)
        windows = fixed_windows(paths.data, "val", cfg.seq_len, cfg.validation.windows, seed=cfg.val_seed())
        loss = perplexity(student.eval(), windows, cfg.batch_size, dtype=cfg.runtime.dtype)["loss"]
        return {"tokens": 0, "val_loss": loss}

    def evaluate(self) -> Path:
        """Perplexity on the val split, samples and size of every trained student."""
        from headstart import evaluation as eval_stage

        out = self.out / "eval"
        for label in self.labels:
            for name in self.recipe.compare.runs:
                path = out / label / f"{name}.json"
                path.parent.mkdir(parents=True, exist_ok=True)
                paths = EvalPaths(checkpoint=str(self.recipe.run_dir(label, name) / "student"),
                                  data=str(self.out / "data"), json_out=str(path))
                stage = f"eval:{label}:{name}"
                key = _hash([self._saved(f"train:{label}:{name}").get("key"), asdict(self.recipe.eval)])
                if not self._done(stage, key, [path]):
                    eval_stage.run(paths, self.recipe.eval, progress=self.progress)
                    self._finish(stage, key)
        self._teacher_reference(out / "teacher.json")
        return out

    def _teacher_reference(self, path: Path) -> None:
        """The teacher's loss on the runs' validation windows (the report's reference line), computed once."""
        from headstart.data import fixed_windows
        from headstart.evaluation import perplexity

        cfg = self.recipe.train_config(self.recipe.compare.baseline)
        windows = f"{cfg.validation.windows} windows x {cfg.seq_len} tokens of val"
        key = _hash([self.fingerprints["prepare"], self.recipe.teacher, windows, cfg.val_seed()])
        if self._done("eval:teacher", key, [path]):
            return
        val = fixed_windows(str(self.out / "data"), "val", cfg.seq_len, cfg.validation.windows, seed=cfg.val_seed())
        result = perplexity(self.teacher.model, val, cfg.batch_size, dtype=cfg.runtime.dtype)
        write_json(path, {**result, "windows": windows, "teacher": self.recipe.teacher})
        self._finish("eval:teacher", key)

    def report(self) -> Path:
        """report.md with every budget's comparison table and plots."""
        from headstart.report import write_report

        return write_report(self.out, self.recipe, self.labels)


def check(recipe: RecipeConfig, say: Callable[[str], None] = log.info) -> RecipeConfig:
    """Everything the recipe's stages can check before anything is written: the inputs, the teacher and its
    positions against every window length, the budgets against the search space, the metrics backends.
    Returns the recipe with its search's setup decided (:func:`~headstart.searching.budget.resolve_setup`)."""
    from headstart import preflight
    from headstart.data import stage as data_stage
    from headstart.searching import stage as search_stage
    from headstart.searching.budget import resolve_setup
    from headstart.teacher import model_config
    from headstart.training.stage import check_backends

    out = Path(recipe.out)
    preflight.out_path(out, "out")
    data_stage.check(PreparePaths(tokenizer=recipe.teacher, out=str(out / "data"), inputs=list(recipe.corpus)),
                     recipe.prepare)
    config = model_config(recipe.teacher)
    recipe, plan = resolve_setup(recipe, config)
    if plan is not None:
        say(plan.describe())
    search_stage.check_options(config, recipe.search)
    for what, length in (("train.seq_len", recipe.train.seq_len), ("eval.seq_len", recipe.eval.seq_len)):
        preflight.seq_len(config, length, "the teacher", flag=what)
    for name in recipe.compare.runs:
        check_backends(recipe.train_config(name).logging)
    return recipe


def check_prepared(recipe: RecipeConfig, data: str) -> None:
    """What needs the prepared corpus: enough windows in the val and search splits for every stage."""
    from headstart.data import TokenStream

    needs = [("val", recipe.train.seq_len, recipe.train.validation.windows, "train.validation.windows"),
             ("val", recipe.eval.seq_len, recipe.eval.windows, "eval.windows"),
             ("search", recipe.search.seq_len, recipe.search.fitness.windows, "search.fitness.windows")]
    for split, seq_len, windows, key in needs:
        available = len(TokenStream(data, split)) // (seq_len + 1)
        if windows > available:
            raise ConfigError(f"{key} {windows}: the {split} split of {data} holds only {available} windows of "
                              f"{seq_len + 1} tokens; lower it, shorten the windows, or hold out more documents "
                              "(prepare.search_frac / val_frac)")


def _changes(saved: dict[str, Any], settings: Any) -> str:
    """What differs between a stage's recorded settings and these (a few dotted keys)."""
    old, new = flatten(saved.get("settings") or {}), flatten(settings or {})
    diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    shown = ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in diff[:3])
    return (shown + (f" and {len(diff) - 3} more" if len(diff) > 3 else "")) or "its inputs changed"


def _resolved(source: str) -> str:
    """A local path as its absolute path (so a recipe names the same input however it is written); other names
    (``builtin:``, hub ids, ``hf:``) as they are."""
    path = Path(source).expanduser()
    return str(path.resolve()) if path.exists() else source


def _format(params: int) -> str:
    from headstart.searching.bins import format_params

    return format_params(params)
