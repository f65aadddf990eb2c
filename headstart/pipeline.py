"""``headstart run``: prepare -> importance + search -> specs -> train every run of every budget -> eval -> report.

Each stage calls the same ``run(cfg)`` function as its subcommand, with the config the recipe
derives. Output layout (``OUT`` is the recipe's ``out``; ``B`` is a budget's bin label, e.g. ``bin0-50M``)::

    OUT/recipe.yaml                     the resolved recipe
    OUT/data/                           prepared token shards + manifest.json       (stage "prepare")
    OUT/search/                         journal, best-B.yaml, summary.json, search.png, teacher.json
    OUT/students/B/{searched,first-k}.yaml   the specs the runs of budget B start from   ("search")
    OUT/runs/B/<run>/                   metrics, checkpoints/, initial.json, student/ (HF)   ("train")
    OUT/eval/B/<run>.json               perplexity on val, samples, size              ("eval")
    OUT/report/                         report.md, plots, summary.json                ("report")
    OUT/.stages/<stage>.json            what each finished stage was computed from

A stage is skipped when its record matches the recipe and upstream stages and its outputs exist;
a stage whose outputs were deleted is recomputed; an interrupted training run resumes from its
newest checkpoint; a run whose settings changed starts afresh.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from headstart.errors import ConfigError
from headstart.io import write_json, write_yaml
from headstart.recipe import RUN_LABELS, RUNS, RecipeConfig
from headstart.selection import Orders, pick

log = logging.getLogger(__name__)

STAGES = ("prepare", "search", "train", "eval", "report")
INITIAL = "initial.json"  # validation loss of a run's starting point (tokens = 0)


def _hash(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


class Pipeline:
    """Runs a :class:`RecipeConfig` stage by stage, skipping what is already done."""

    def __init__(self, recipe: RecipeConfig, say: Callable[[str], None] = log.info) -> None:
        self.recipe = recipe
        self.out = Path(recipe.out)
        self.say = say
        self._teacher: Any = None
        self.keys: dict[str, str] = {}
        self.labels: list[str] = []

    # -- bookkeeping ---------------------------------------------------------------------------
    @property
    def teacher(self) -> Any:
        """The teacher, loaded once and shared by every stage that needs it."""
        if self._teacher is None:
            from headstart.teacher import load_teacher

            self.say(f"loading teacher {self.recipe.teacher}")
            self._teacher = load_teacher(self.recipe.teacher)
        return self._teacher

    def _record(self, stage: str) -> Path:
        return self.out / ".stages" / f"{stage.replace(':', '-').replace('/', '-')}.json"

    def _saved_key(self, stage: str) -> str | None:
        try:
            return json.loads(self._record(stage).read_text()).get("key")
        except (OSError, ValueError, AttributeError):  # missing or damaged record: the stage runs again
            return None

    def _done(self, stage: str, key: str, outputs: list[Path]) -> bool:
        if self._saved_key(stage) != key:
            return False
        missing = [p for p in outputs if not p.exists()]
        if missing:
            self.say(f"[{stage}] outputs missing ({missing[0].name}); recomputing")
            return False
        self.say(f"[{stage}] done earlier, skipped")
        return True

    def _stale(self, stage: str, key: str) -> bool:
        """True when ``stage`` finished before with other settings than ``key``."""
        saved = self._saved_key(stage)
        return saved is not None and saved != key

    def _finish(self, stage: str, key: str, **info: Any) -> None:
        write_json(self._record(stage), {"key": key, "finished": time.time(), **info})

    # -- the whole run -------------------------------------------------------------------------
    def run(self, only: str | None = None) -> Path:
        """Run every stage (or up to ``only``); return the last stage's output directory."""
        if only is not None and only not in STAGES:
            raise ConfigError(f"unknown stage {only!r}; stages: {', '.join(STAGES)}")
        self.out.mkdir(parents=True, exist_ok=True)
        write_yaml(self.out / "recipe.yaml", self.recipe.to_dict())
        steps: list[tuple[str, Callable[[], Path]]] = [
            ("prepare", self.prepare), ("search", self.search), ("train", self.train_all),
            ("eval", self.evaluate), ("report", self.report)]
        result = self.out
        for name, step in steps:
            result = step()
            if name == only:
                break
        return result

    # -- stages --------------------------------------------------------------------------------
    def prepare(self) -> Path:
        """Tokenize the corpus with the teacher's tokenizer."""
        from headstart.commands import prepare
        from headstart.data import read_manifest

        cfg = dataclasses.replace(self.recipe.data, tokenizer=self.recipe.teacher, out=str(self.out / "data"))
        key = _hash(dataclasses.asdict(cfg))
        if not self._done("prepare", key, [Path(cfg.out) / "manifest.json"]):
            self.say(f"[prepare] tokenizing {', '.join(cfg.inputs)}")
            tokenizer = self._teacher.tokenizer if self._teacher is not None else None
            prepare.run(cfg, tokenizer=tokenizer)
            self._finish("prepare", key)
        self.keys["prepare"] = _hash([key, read_manifest(cfg.out).get("key")])
        return Path(cfg.out)

    def search(self) -> Path:
        """Importance pass + bin-constrained search in every budget; write each budget's two specs."""
        from headstart.commands import search
        from headstart.search.bins import format_params

        out = self.out / "search"
        cfg = dataclasses.replace(self.recipe.search, teacher=self.recipe.teacher, data=str(self.out / "data"),
                                  out=str(out), resume=False)
        key = _hash([self.keys["prepare"], dataclasses.asdict(cfg)])
        self.labels = [f"bin{i}-{format_params(b)}" for i, b in enumerate(self.recipe.budgets())]
        students = self.out / "students"
        specs = [students / label / name for label in self.labels for name in ("searched.yaml", "first-k.yaml")]
        if not self._done("search", key, [out / "summary.json", out / "teacher.json", *specs]):
            if self._stale("search", key) and out.exists():
                self.say("[search] settings changed since the last run; starting the search afresh")
                shutil.rmtree(out)
            cfg.resume = (out / "journal.jsonl").is_file()
            self.say(f"[search] {'resuming' if cfg.resume else 'searching'} in budget(s) {cfg.params}")
            search.run(cfg, teacher=self.teacher)
            self._write_specs(cfg)
            self._finish("search", key)
        self.keys["search"] = key
        return out

    def _write_specs(self, cfg: Any) -> None:
        from headstart.spec import SubnetSpec

        teacher, out = self.teacher, self.out / "search"
        counts = teacher.adapter.counts(seq_len=cfg.seq_len)
        write_json(out / "teacher.json", {
            "source": self.recipe.teacher, "fingerprint": teacher.fingerprint, "params": counts.params,
            "flops_per_token": counts.flops_per_token, "seq_len": cfg.seq_len})
        for label in self.labels:
            best = out / f"best-{label}.yaml"
            if not best.is_file():
                raise ConfigError(f"the search found no candidate in {label}; widen search.params or its tolerance")
            spec = SubnetSpec.load(best)
            meta = yaml.safe_load(best.read_text())
            folder = self.out / "students" / label
            folder.mkdir(parents=True, exist_ok=True)
            spec.save(folder / "searched.yaml", extra={"teacher": self.recipe.teacher, "search_loss": meta["loss"],
                                                       "params": meta["params"]})
            first_k = pick(Orders.first_k(teacher.dims), range(spec.num_hidden_layers), spec.shape)
            first_k = teacher.adapter.validate(first_k)
            first_k.save(folder / "first-k.yaml", extra={"teacher": self.recipe.teacher, "params": meta["params"]})

    def train_all(self) -> Path:
        """Every comparison run of every budget."""
        for label in self.labels:
            for name in self.recipe.compare.runs:
                self.train(label, name)
        return self.out / "runs"

    def train(self, label: str, name: str) -> Path:
        """Train comparison run ``name`` of budget ``label`` (resuming it if it was interrupted)."""
        from headstart.commands import train
        from headstart.train.checkpoint import latest_checkpoint

        init, _ = RUNS[name]
        spec = self.out / "students" / label / ("first-k.yaml" if init == "first-k" else "searched.yaml")
        start_tokens = 0
        if init == "rung":  # the search's winner as its last rung left it; the rung's tokens count
            source, start_tokens = self._rung_winner(label)
        elif init != "random" and self.recipe.extract.reconstruct:
            source = self._reconstructed(label, spec)
        else:
            source = spec
        cfg = self.recipe.train_config(name, label, source)
        cfg = dataclasses.replace(cfg, tokens=cfg.tokens - start_tokens) if start_tokens else cfg
        stage, out = f"train:{label}:{name}", Path(cfg.out)
        key = _hash([self.keys["search"], cfg.to_dict()])
        if self._done(stage, key, [out / "student" / "config.json", out / "metrics.jsonl", out / INITIAL]):
            return out
        if self._stale(stage, key) and out.exists():
            self.say(f"[{stage}] settings changed since the last run; training afresh")
            shutil.rmtree(out)
        cfg.resume = latest_checkpoint(out) is not None
        if not cfg.resume and out.exists():
            shutil.rmtree(out)  # a run that died before its first checkpoint: nothing to keep
        self.say(f"[{stage}] {'resuming' if cfg.resume else 'training'} {RUN_LABELS[name]} for {cfg.tokens:,} tokens")
        train.run(cfg, teacher=self.teacher)
        write_json(out / INITIAL, {**self._initial_loss(cfg), "tokens": start_tokens})
        self._finish(stage, key)
        return out

    def _rung_winner(self, label: str) -> tuple[Path, int]:
        """The trained student the search's rungs left for budget ``label``, and its training tokens."""
        meta = yaml.safe_load((self.out / "search" / f"best-{label}.yaml").read_text())
        student = Path(meta.get("rung_student") or "")
        if not meta.get("rung_student") or not (student / "config.json").is_file():
            raise ConfigError(f"compare run rung-kd needs the rung winner's student of {label}, but the search left "
                              f"none ({student}); rerun the search with search.rungs >= 1")
        return student, int(meta["rung_tokens"])

    def _reconstructed(self, label: str, spec_file: Path) -> Path:
        """The student of ``spec_file`` extracted with reconstructed weights (``extract.reconstruct``), made once."""
        from headstart.calibration import calibration_tokens
        from headstart.extract import build_student, export
        from headstart.reconstruct import reconstruct
        from headstart.spec import SubnetSpec

        out = spec_file.with_suffix("")
        extract = self.recipe.extract
        stage, key = f"extract:{label}:{out.name}", _hash([self.keys["search"], dataclasses.asdict(extract)])
        if not self._done(stage, key, [out / "config.json"]):
            shutil.rmtree(out, ignore_errors=True)
            teacher, spec = self.teacher, SubnetSpec.load(spec_file)
            tokens = calibration_tokens(str(self.out / "data"), teacher.tokenizer, extract.calib_samples,
                                        extract.calib_seq_len, extract.seed)
            student = build_student(teacher, spec)
            stats = reconstruct(teacher, spec, student, tokens, **extract.reconstruction())
            export(teacher, spec, out, student=student, metadata={"reconstruction": stats})
            self._finish(stage, key, flops=stats["flops"])
        return out

    def _initial_loss(self, cfg: Any) -> dict[str, float]:
        """Validation loss of the run's starting point, on the training loop's own validation windows."""
        from headstart.data import fixed_windows
        from headstart.evaluate import perplexity
        from headstart.train.build import load_student

        student, _ = load_student(cfg.student, self.teacher, cfg.seed)
        windows = fixed_windows(cfg.data, "val", cfg.seq_len, cfg.eval_windows, seed=cfg.val_seed())
        return {"tokens": 0, "val_loss": perplexity(student.eval(), windows, cfg.batch_size, dtype=cfg.dtype)["loss"]}

    def evaluate(self) -> Path:
        """Perplexity on the val split, samples and size of every trained student."""
        from headstart.commands import eval as eval_command

        out = self.out / "eval"
        for label in self.labels:
            for name in self.recipe.compare.runs:
                path = out / label / f"{name}.json"
                path.parent.mkdir(parents=True, exist_ok=True)
                cfg = dataclasses.replace(
                    self.recipe.eval, checkpoint=str(self.out / "runs" / label / name / "student"),
                    data=str(self.out / "data"), split="val", json_out=str(path))
                stage = f"eval:{label}:{name}"
                key = _hash([self._saved_key(f"train:{label}:{name}"), dataclasses.asdict(cfg)])
                if not self._done(stage, key, [path]):
                    eval_command.run(cfg)
                    self._finish(stage, key)
        return out

    def report(self) -> Path:
        """report.md with every budget's comparison table and plots."""
        from headstart.report import write_report

        return write_report(self.out, self.recipe, self.labels)
