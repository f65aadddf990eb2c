"""``headstart run``: prepare → importance + search → specs → train (every comparison run) → eval → report.

Output layout (``OUT`` is the recipe's ``out``)::

    OUT/recipe.yaml                 the resolved recipe
    OUT/data/                       prepared token shards + manifest.json        (stage "prepare")
    OUT/search/                     journal, best-<bin>.yaml, summary.json, search.png   ("search")
    OUT/students/{searched,first-k}.yaml   the specs the runs start from              ("search")
    OUT/runs/<run>/                 metrics.jsonl/csv, checkpoints/, student/ (HF)   ("train:<run>")
    OUT/eval/<run>.json             perplexity on val, samples, size                  ("eval")
    OUT/report/                     report.md, loss_vs_tokens.png, loss_vs_flops.png, search.png,
                                    summary.json                                      ("report")
    OUT/.stages/<stage>.json        what each finished stage was computed from

A stage is skipped when its record matches the recipe and upstream stages and its outputs exist;
a stage whose outputs were deleted is recomputed; an interrupted training run resumes from its
newest checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from headstart.errors import ConfigError
from headstart.recipe import RUN_LABELS, RUNS, Recipe

log = logging.getLogger(__name__)

STAGES = ("prepare", "search", "train", "eval", "report")
INITIAL = "initial.json"  # validation loss of a run's starting point (tokens = 0)


def _hash(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _write_json(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str))
    os.replace(tmp, path)
    return path


class Pipeline:
    """Runs a :class:`Recipe` stage by stage, skipping what is already done."""

    def __init__(self, recipe: Recipe, say: Callable[[str], None] = print) -> None:
        self.recipe = recipe
        self.out = Path(recipe.out)
        self.say = say
        self._teacher = None
        self.keys: dict[str, str] = {}

    # -- bookkeeping ---------------------------------------------------------------------------
    @property
    def teacher(self):
        """The teacher, loaded once and shared by every stage that needs it."""
        if self._teacher is None:
            from headstart.teacher import load_teacher

            self.say(f"loading teacher {self.recipe.teacher}")
            self._teacher = load_teacher(self.recipe.teacher)
        return self._teacher

    def _record(self, stage: str) -> Path:
        return self.out / ".stages" / f"{stage.replace(':', '-')}.json"

    def _done(self, stage: str, key: str, outputs: list[Path]) -> bool:
        rec = self._record(stage)
        if not rec.is_file():
            return False
        try:
            saved = json.loads(rec.read_text())
        except json.JSONDecodeError:
            return False
        missing = [p for p in outputs if not p.exists()]
        if saved.get("key") == key and not missing:
            self.say(f"[{stage}] done earlier, skipped")
            return True
        if missing:
            self.say(f"[{stage}] outputs missing ({missing[0].name}); recomputing")
        return False

    def _stale(self, stage: str, key: str) -> bool:
        """True when ``stage`` finished before with other settings than ``key``."""
        rec = self._record(stage)
        return rec.is_file() and json.loads(rec.read_text()).get("key") != key

    def _finish(self, stage: str, key: str, **info: Any) -> None:
        _write_json(self._record(stage), {"key": key, "finished": time.time(), **info})

    # -- the whole run -------------------------------------------------------------------------
    def run(self, only: str | None = None) -> Path:
        """Run every stage (or only ``only``, with the stages it needs); return the report dir."""
        if only is not None and only not in STAGES:
            raise ConfigError(f"unknown stage {only!r}; stages: {', '.join(STAGES)}")
        self.out.mkdir(parents=True, exist_ok=True)
        tmp = self.out / ".recipe.yaml.tmp"
        tmp.write_text(yaml.safe_dump(self.recipe.to_dict(), sort_keys=False))
        os.replace(tmp, self.out / "recipe.yaml")
        self.prepare()
        if only == "prepare":
            return self.out / "data"
        self.search()
        if only == "search":
            return self.out / "search"
        for name in self.recipe.compare.runs:
            self.train(name)
        if only == "train":
            return self.out / "runs"
        self.evaluate()
        if only == "eval":
            return self.out / "eval"
        return self.report()

    # -- stages --------------------------------------------------------------------------------
    def prepare(self) -> Path:
        """Tokenize the corpus with the teacher's tokenizer."""
        from headstart.data import read_manifest
        from headstart.data.prepare import prepare_corpus
        from headstart.teacher import load_tokenizer

        r = self.recipe
        key = _hash({"teacher": r.teacher, "data": r.data.__dict__, "seed": r.seed})
        out = self.out / "data"
        if not self._done("prepare", key, [out / "manifest.json"]):
            self.say(f"[prepare] tokenizing {', '.join(r.data.inputs)}")
            tokenizer = self._teacher.tokenizer if self._teacher is not None else load_tokenizer(r.teacher)
            prepare_corpus(r.data.inputs, tokenizer, out, tokenizer_source=r.teacher, text_field=r.data.text_field,
                           search_frac=r.data.search_frac, val_frac=r.data.val_frac, seed=r.seed,
                           workers=r.data.workers, progress=True)
            self._finish("prepare", key)
        self.keys["prepare"] = _hash([key, read_manifest(out).get("key")])
        return out

    def search(self) -> Path:
        """Importance pass + bin-constrained search in the student's budget; write the two specs."""
        from headstart.search.pipeline import SearchJob, run_job

        r = self.recipe
        out = self.out / "search"
        job_args = {"seed": r.seed, **r.search, "teacher": r.teacher, "data": str(self.out / "data"), "out": str(out)}
        key = _hash([self.keys["prepare"], {k: v for k, v in job_args.items() if k != "out"}])
        students = self.out / "students"
        outputs = [out / "summary.json", out / "teacher.json", students / "searched.yaml", students / "first-k.yaml"]
        if not self._done("search", key, outputs):
            journal = out / "journal.jsonl"
            if self._stale("search", key) and out.exists():
                self.say("[search] settings changed since the last run; starting the search afresh")
                shutil.rmtree(out)
            resume = journal.is_file()
            self.say(f"[search] {'resuming' if resume else 'searching'} in budget {r.search['params']}")
            job = SearchJob(**job_args, resume=resume)
            outcome = run_job(job, teacher=self.teacher)
            self._write_specs(outcome, students)
            self._finish("search", key)
        self.keys["search"] = key
        return out

    def _write_specs(self, outcome: Any, students: Path) -> None:
        from headstart.spec import SubnetSpec

        best = outcome.runs[0].bins[0].best
        if best is None:
            raise ConfigError("the search found no candidate in the budget; widen search.params or its tolerance")
        students.mkdir(parents=True, exist_ok=True)
        counts = self.teacher.adapter.counts(seq_len=outcome.job.seq_len)
        _write_json(self.out / "search" / "teacher.json", {
            "source": self.recipe.teacher, "fingerprint": self.teacher.fingerprint, "params": counts.params,
            "flops_per_token": counts.flops_per_token, "seq_len": outcome.job.seq_len,
        })
        spec = best.spec
        meta = {"teacher": self.recipe.teacher, "search_loss": best.loss, "params": best.params}
        spec.save(students / "searched.yaml", extra=meta)
        first_k = SubnetSpec.from_sizes(
            self.teacher.dims, layers=spec.num_layers, hidden=spec.hidden_size, kv_groups=spec.num_kv_heads,
            heads_per_group=spec.heads_per_group, mlp=spec.intermediate_size, mode="first-k",
        )
        self.teacher.adapter.validate(first_k)
        first_k.save(students / "first-k.yaml", extra={"teacher": self.recipe.teacher, "params": best.params})

    def train_config(self, name: str) -> Any:
        """The :class:`TrainConfig` of comparison run ``name``."""
        from headstart.train.config import TrainConfig

        r = self.recipe
        init, distill = RUNS[name]
        spec = self.out / "students" / ("first-k.yaml" if init == "first-k" else "searched.yaml")
        student = f"random:{spec}" if init == "random" else str(spec)
        values = {"seed": r.seed, **r.train, **r.compare.overrides.get(name, {})}
        if not distill:
            values["kd"] = "none"
        elif values.get("kd") == "none":
            raise ConfigError(f"run {name} distills, but train.kd is 'none'; set train.kd (e.g. forward)")
        return TrainConfig(data=str(self.out / "data"), out=str(self.out / "runs" / name), student=student,
                           teacher=r.teacher, **values)

    def train(self, name: str) -> Path:
        """Train comparison run ``name`` (resuming it if it was interrupted)."""
        from headstart.train.build import run as train_run
        from headstart.train.checkpoint import latest_checkpoint

        cfg = self.train_config(name)
        stage = f"train:{name}"
        key = _hash([self.keys["search"], cfg.to_dict()])
        out = Path(cfg.out)
        if self._done(stage, key, [out / "student" / "config.json", out / "metrics.jsonl", out / INITIAL]):
            return out
        if self._stale(stage, key) and out.exists():
            self.say(f"[{stage}] settings changed since the last run; training afresh")
            shutil.rmtree(out)
        cfg.resume = latest_checkpoint(out) is not None
        if not cfg.resume and out.exists():
            shutil.rmtree(out)  # a run that died before its first checkpoint: nothing to keep
        self.say(f"[{stage}] {'resuming' if cfg.resume else 'training'} {RUN_LABELS[name]} for {cfg.tokens:,} tokens")
        result = train_run(cfg, teacher=self.teacher)
        if result.get("interrupted"):
            raise KeyboardInterrupt
        _write_json(out / INITIAL, self._initial_loss(cfg))
        self._finish(stage, key)
        return out

    def _initial_loss(self, cfg: Any) -> dict[str, float]:
        """Validation loss of the run's starting point, on the training loop's own validation windows."""
        from headstart.data import fixed_windows
        from headstart.evaluate import perplexity
        from headstart.train.build import load_student

        student, _ = load_student(cfg.student, self.teacher, cfg.seed)
        windows = fixed_windows(cfg.data, "val", cfg.seq_len, cfg.eval_windows, seed=cfg.seed)
        return {"tokens": 0, "val_loss": perplexity(student.eval(), windows, cfg.batch_size)["loss"]}

    def evaluate(self) -> Path:
        """Perplexity on the val split, samples and size of every trained student."""
        from headstart import evaluate as ev
        from headstart.data import fixed_windows

        e = self.recipe.eval
        out = self.out / "eval"
        for name in self.recipe.compare.runs:
            student = self.out / "runs" / name / "student"
            key = _hash([self._record(f"train:{name}").read_text(), e.__dict__])
            path = out / f"{name}.json"
            if self._done(f"eval:{name}", key, [path]):
                continue
            model, tokenizer = ev.load_checkpoint_dir(student)
            windows = fixed_windows(self.out / "data", "val", e.seq_len, e.windows, seed=self.recipe.seed)
            result = {"run": name, **ev.size_of(model, e.seq_len), **ev.perplexity(model, windows, e.batch_size)}
            if e.max_new_tokens > 0:
                result["samples"] = ev.sample(model, tokenizer, list(ev.DEFAULT_PROMPTS), e.max_new_tokens,
                                              seed=self.recipe.seed)
            _write_json(path, result)
            self._finish(f"eval:{name}", key)
        return out

    def report(self) -> Path:
        """report.md with the comparison table and plots."""
        from headstart.report import write_report

        return write_report(self.out, self.recipe)
