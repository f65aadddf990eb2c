"""Fitness: CE of the sliced sub-network on search windows, in memory (under torchrun the search gives
ranks different candidates: tests/test_search_cli.py, tests/test_parallel_spread.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from tiny import TEXT, tiny_model, tiny_tokenizer

from headstart.config.search import FitnessConfig
from headstart.errors import ConfigError, DataError
from headstart.extraction import build_student
from headstart.lm_loss import sum_cross_entropy
from headstart.searching.fitness import Fitness
from headstart.selection import from_sizes, full
from headstart.teacher import Teacher


def make_data(root: Path, docs: int = 12, search_docs: int = 3) -> Path:
    """A prepared directory (tiny tokenizer) with train/search/val splits."""
    from headstart.data import prepare

    src = root / "corpus"
    src.mkdir(parents=True, exist_ok=True)
    for i in range(docs):
        (src / f"doc{i:02d}.txt").write_text((TEXT + f" {i} ") * 6)
    return prepare([str(src)], tiny_tokenizer(), root / "prepared", tokenizer_source="tiny",
                   search_frac=search_docs, val_frac=2, workers=1)


SPECS = [
    dict(layers=2, hidden=48, kv_groups=1, heads_per_group=2, mlp=64),
    dict(layers=4, hidden=64, kv_groups=2, heads_per_group=1, mlp=32),
    dict(layers=3, hidden=32, kv_groups=2, heads_per_group=2, mlp=96),
]


def test_fitness_is_the_mean_next_token_ce_of_the_built_student():
    teacher = Teacher.from_model(tiny_model("smollm2"))
    windows = torch.randint(0, 512, (5, 17), generator=torch.Generator().manual_seed(0))
    fitness = Fitness(teacher, windows, batch_size=2)
    for sizes in SPECS:
        spec = from_sizes(teacher.dims, **sizes)
        student = build_student(teacher, spec)
        with torch.no_grad():
            logits = student(input_ids=windows[:, :-1]).logits
        ref = torch.nn.functional.cross_entropy(logits.reshape(-1, 512), windows[:, 1:].reshape(-1))
        assert fitness(spec) == pytest.approx(float(ref), rel=1e-5)
    whole = full(teacher.dims)
    s, n = sum_cross_entropy(teacher.model, windows, batch_size=5, chunk=9)
    assert n == 5 * 16 and fitness(whole) == pytest.approx(s / n, rel=1e-6)
    bf16 = Fitness(teacher, windows, dtype="bfloat16")(whole)
    assert bf16 == pytest.approx(s / n, rel=2e-2) and bf16 != s / n


@pytest.mark.parametrize("family", ["smollm2", "gpt_neox"])
def test_a_built_student_owns_its_weights_unless_fitness_asks_to_share(family):
    teacher = Teacher.from_model(tiny_model(family))
    before = {k: v.clone() for k, v in teacher.model.state_dict().items()}
    whole = full(teacher.dims)  # keeps every weight whole: the case where slicing copies nothing
    student = build_student(teacher, whole)
    with torch.no_grad():
        for p in student.parameters():
            p.add_(1.0)  # training or a refit
    assert all(torch.equal(v, before[k]) for k, v in teacher.model.state_dict().items())
    shared = build_student(teacher, whole, share=True)
    teacher_ptrs = {t.data_ptr() for t in teacher.model.state_dict().values()}
    assert all(p.data_ptr() in teacher_ptrs for p in shared.parameters())  # fitness slices nothing it need not


def test_early_abandonment_scores_the_first_windows_of_a_clearly_worse_candidate():
    teacher = Teacher.from_model(tiny_model("smollm2"))
    windows = torch.randint(0, 512, (8, 17), generator=torch.Generator().manual_seed(1))
    fitness = Fitness(teacher, windows, batch_size=2, screen=FitnessConfig(abandon_after=0.25, abandon_margin=0.1))
    spec = from_sizes(teacher.dims, **SPECS[0])
    whole = fitness(spec)
    assert not fitness.abandoned and fitness.tokens == 8 * 16
    assert fitness(spec, threshold=whole + 1.0) == pytest.approx(whole, rel=1e-6) and not fitness.abandoned
    partial = fitness(spec, threshold=0.0)
    s, n = sum_cross_entropy(build_student(teacher, spec), windows[:2], batch_size=2)
    assert fitness.abandoned and fitness.tokens == 2 * 16 and partial == pytest.approx(s / n, rel=1e-6)
    with pytest.raises(ConfigError, match="abandon_after must be below 1"):
        Fitness(teacher, windows, screen=FitnessConfig(abandon_after=1.0))


def test_fitness_never_touches_the_disk(monkeypatch):
    teacher = Teacher.from_model(tiny_model("gpt_neox"))
    fitness = Fitness(teacher, torch.randint(0, 512, (3, 9)))
    spec = from_sizes(teacher.dims, layers=2, hidden=32, kv_groups=2, heads_per_group=1, mlp=48)
    fitness(spec)  # warm up lazy imports

    def no_disk(*args, **kwargs):
        raise AssertionError(f"fitness opened a file: {args[:1]}")

    monkeypatch.setattr("builtins.open", no_disk)
    monkeypatch.setattr(os, "open", no_disk)
    assert fitness(spec) > 0


def test_bad_windows_are_refused():
    teacher = Teacher.from_model(tiny_model("llama"))
    with pytest.raises(DataError, match="vocabulary"):
        Fitness(teacher, torch.full((2, 9), 600))
    with pytest.raises(DataError, match="windows"):
        Fitness(teacher, torch.zeros((0, 9), dtype=torch.long))


def test_too_small_search_split_is_refused(tmp_path):
    from headstart.data import fixed_windows

    data = make_data(tmp_path, docs=4, search_docs=1)
    with pytest.raises(DataError, match="search"):
        fixed_windows(data, "search", 256, 64)

