"""The specs a recipe's runs start from: per budget, the searched sub-network and first-k of the same sizes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from headstart.config.fields import read_yaml
from headstart.errors import ConfigError
from headstart.io import write_json
from headstart.selection import Orders, pick
from headstart.spec import SubnetSpec


def write_budget_specs(teacher: Any, search_dir: Path, students: Path, labels: list[str], source: str,
                       seq_len: int) -> None:
    """``students/<label>/searched.yaml`` (the search's best) and ``first-k.yaml`` (the same sizes, leading
    indices: whittle's choice) for every budget label, and ``search_dir/teacher.json``."""
    counts = teacher.adapter.counts(seq_len=seq_len)
    write_json(search_dir / "teacher.json", {"source": source, "fingerprint": teacher.fingerprint,
                                             "params": counts.params, "flops_per_token": counts.flops_per_token,
                                             "seq_len": seq_len})
    for label in labels:
        best = search_dir / f"best-{label}.yaml"
        if not best.is_file():
            raise ConfigError(f"the search found no candidate in {label}; widen search.params or search.tolerance")
        spec, meta = SubnetSpec.load(best), read_yaml(best, "spec")
        folder = students / label
        folder.mkdir(parents=True, exist_ok=True)
        spec.save(folder / "searched.yaml", extra={"teacher": source, "search_loss": meta["loss"],
                                                   "params": meta["params"]})
        first_k = pick(Orders.first_k(teacher.dims), range(spec.num_hidden_layers), spec.shape)
        teacher.adapter.validate(first_k).save(folder / "first-k.yaml", extra={"teacher": source,
                                                                               "params": meta["params"]})
