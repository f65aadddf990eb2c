"""Untrained loss of the full-hidden points of the search-quality bin: how low can an untrained cut go there?

The search-quality benchmark's winners keep all of the teacher's hidden channels. This probe scores,
for every (layers, key/value groups, heads per group) with the full hidden size and 16-30 layers, the
point with the largest MLP the bin allows (layers kept in importance order), on the ``search`` windows
the search uses and on the held-out ``val`` windows of ``bench/search_quality.py``. It tells whether a
held-out target is reachable by any untrained cut of this space (README, search benchmark).

    python bench/full_hidden_probe.py [--out docs/full_hidden_probe.json]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import search_quality  # noqa: E402  (the same teacher, data, bin and windows)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(search_quality.ROOT / "docs" / "full_hidden_probe.json"))
    p.add_argument("--layers", default="16,20,24,26,28,30", help="layer counts probed")
    search_quality._reexec_with_malloc_settings()
    opts = p.parse_args()
    out, layers = Path(opts.out), {int(x) for x in opts.layers.split(",")}
    from headstart.extraction import build_student
    from headstart.importance import load_or_compute_importance
    from headstart.io import write_json
    from headstart.lm_loss import sum_cross_entropy
    from headstart.searching.bins import SizeGrid, make_bins
    from headstart.searching.space import Genome, SearchSpace, default_space
    from headstart.searching.stage import load_windows
    from headstart.selection import Orders

    args = argparse.Namespace(model="builtin:smollm2-135m", corpus="builtin:shakespeare", seq_len=256,
                              heldout_windows=16, results=str(search_quality.RESULTS), fraction=0.5, evaluations=60,
                              population=8, generation_size=1, windows=16, rung_tokens=8192)
    teacher, data, heldout, budget, results = search_quality.setup(args)
    windows, calib = load_windows(*search_quality._job(args, data, budget, results), teacher)
    order = Orders.from_importance(teacher.dims, load_or_compute_importance(teacher, calib))
    space = SearchSpace(default_space(teacher.dims), teacher.adapter, order)
    [table] = make_bins(SizeGrid(space), [budget], 0.1)
    widest: dict[tuple[int, int, int], tuple] = {}
    for c, li in table.points:
        sizes = table.sizes_at(int(c), int(li))
        key = (sizes[0], sizes[2], sizes[3])
        if sizes[1] == teacher.dims.hidden_size and sizes[0] in layers and sizes[4] > widest.get(key, (0,) * 5)[4]:
            widest[key] = sizes
    rows = []
    for sizes in (widest[k] for k in sorted(widest)):
        spec = space.to_spec(space.fit(Genome(*sizes, depth="top")))
        model = build_student(teacher, spec)
        (s, n), (h, m) = sum_cross_entropy(model, windows), sum_cross_entropy(model, heldout)
        rows.append({"sizes": list(sizes), "params": teacher.adapter.counts(spec.shape).params,
                     "search": round(s / n, 4), "heldout": round(h / m, 4)})
        print(rows[-1], flush=True)
    write_json(out, {"bin": table.bin.to_dict(), "points": sorted(rows, key=lambda r: r["heldout"])})


if __name__ == "__main__":
    main()
