"""The setup share: a recipe's importance pass, screen and rungs are sized from its training budget
(headstart/searching/budget.py), from the analytic counts alone (no weights, no training)."""

from __future__ import annotations

from importlib.resources import files

import pytest
import yaml
from transformers import LlamaConfig

from headstart.config import load_recipe
from headstart.config.search import STANDALONE
from headstart.searching.budget import MIN_RUNG_STEPS, plan_setup, resolve_setup

# SmolLM2-135M, the builtin teacher, as its config.json describes it (sizes only)
SMOLLM2 = LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                      num_attention_heads=9, num_key_value_heads=3, head_dim=64, max_position_embeddings=8192,
                      tie_word_embeddings=True)


def _demo() -> dict:
    return yaml.safe_load((files("headstart") / "recipes" / "demo.yaml").read_text())


@pytest.mark.parametrize("name", ["demo", "1M tokens"])
def test_the_setup_stays_under_the_share(name):
    recipe = load_recipe(_demo()) if name == "demo" else load_recipe({"search": {"params": "50M"},
                                                                     "train": {"tokens": "1M"}})
    assert recipe.setup_share == (0.2 if name == "demo" else 0.02)  # the demo states its own; 2 % is the default
    resolved, plan = resolve_setup(recipe, SMOLLM2)
    assert plan is not None and 0 < plan.total <= recipe.setup_share * plan.training, plan.describe()
    assert plan.importance > 0 and plan.screen > 0
    search = resolved.search
    assert search.fitness.windows == plan.windows >= (8 if name == "demo" else 2)  # the demo sets its own 8
    assert search.rungs.count == plan.rung_count
    if name == "demo":  # 16k training tokens buy no rung worth running, and the plan says so
        assert plan.rung_count == 0 and "rungs skipped" in plan.describe()


def test_a_longer_training_buys_rungs_of_at_least_the_minimum_steps():
    recipe = load_recipe({"search": {"params": "50M", "seq_len": 128}, "train": {"tokens": "4M"}})
    resolved, plan = resolve_setup(recipe, SMOLLM2)
    assert plan.rung_count >= 1 and plan.rungs > 0 and plan.total <= 0.02 * plan.training * (1 + 1e-9)
    rungs = resolved.search.rungs
    assert rungs.tokens == plan.rung_tokens >= MIN_RUNG_STEPS * resolved.search.batch_size * 128
    assert rungs.candidates == plan.rung_candidates


def test_what_the_recipe_sets_is_kept_and_null_keeps_the_search_defaults():
    recipe = load_recipe({"search": {"params": "50M", "fitness": {"windows": 5}, "rungs": {"count": 0}},
                          "train": {"tokens": "1M"}})
    resolved, plan = resolve_setup(recipe, SMOLLM2)
    assert resolved.search.fitness.windows == 5 and resolved.search.rungs.count == 0
    assert "rungs are off" in plan.describe()
    plain, none = resolve_setup(load_recipe({"search": {"params": "50M"}, "setup_share": None}), SMOLLM2)
    assert none is None and plain.search.fitness.windows == STANDALONE["windows"]
    assert (plain.search.rungs.count, plain.search.rungs.candidates, plain.search.rungs.tokens) == (
        STANDALONE["count"], STANDALONE["candidates"], STANDALONE["tokens"])


def test_a_larger_share_buys_more_search():
    small = plan_setup(load_recipe({"search": {"params": "50M"}, "train": {"tokens": "1M"}}), SMOLLM2)
    large = plan_setup(load_recipe({"search": {"params": "50M"}, "train": {"tokens": "1M"}, "setup_share": 0.1}),
                       SMOLLM2)
    assert large.total > small.total and large.windows >= small.windows
    assert (large.rung_count, large.rung_candidates) >= (small.rung_count, small.rung_candidates)
