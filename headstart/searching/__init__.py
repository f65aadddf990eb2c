"""Search: bin-constrained evolution over sub-network shapes of a teacher (``headstart search``).

* :mod:`~headstart.searching.stage` — the stage: ``check`` and ``run`` (teacher + data -> specs per budget);
* :mod:`~headstart.searching.space` — the space (YAML + teacher defaults), index orders, the genome;
* :mod:`~headstart.searching.bins` — parameter budgets and the legal size points inside each;
* :mod:`~headstart.searching.operators` — sample / mutate / cross over / repair, always inside a bin;
* :mod:`~headstart.searching.evolve` — evolution or random sampling per bin, with a fitness cache;
* :mod:`~headstart.searching.fitness` — CE of the sliced, untrained sub-network on ``search`` windows;
* :mod:`~headstart.searching.rungs` — training-aware successive halving after the untrained screen;
* :mod:`~headstart.searching.journal` — the JSONL journal that makes a search resumable;
* :mod:`~headstart.searching.report` and :mod:`~headstart.searching.specs` — the outputs.
"""
