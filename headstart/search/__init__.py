"""Search: bin-constrained evolution over sub-network shapes of a teacher (``headstart search``).

* :mod:`~headstart.search.space` — the space (YAML + teacher defaults), index orders, the genome;
* :mod:`~headstart.search.bins` — parameter budgets and the legal size points inside each;
* :mod:`~headstart.search.operators` — sample / mutate / cross over / repair, always inside a bin;
* :mod:`~headstart.search.evolve` — evolution or random sampling per bin, with a fitness cache;
* :mod:`~headstart.search.fitness` — CE of the sliced, untrained sub-network on ``search`` windows;
* :mod:`~headstart.search.journal` — the JSONL journal that makes a search resumable;
* :mod:`~headstart.search.pipeline` — one job end to end; :mod:`~headstart.search.report` — outputs.
"""
