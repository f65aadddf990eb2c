"""Bin-constrained search: evolution (or random sampling) inside every parameter bin.

Each bin keeps its own population and random stream. Evolution: a random initial population, then
generations of children: each child from two tournament-selected parents, uniform crossover (half of
the time), mutation, repair into the bin. A generation's children (``generation_size``, default: the
population size) are all drawn from the population as it stood at the generation's start; then each
in turn replaces the worst member if it is better (so the best is never lost). ``generation_size=1`` is
classic steady-state evolution. A child whose sub-network was already seen in this run is redrawn,
so no genome (or two genomes with the same sub-network) is evaluated twice. Random sampling draws
every candidate uniformly from the bin. Bins take turns, one generation each.

A generation of every bin is scored at once: under torchrun each rank scores different candidates
(every window of each), and the results are gathered on every rank. Since proposals and abandonment
thresholds are fixed at the generation's start and each loss is computed by one process as a single
process computes it, the journal is the same for any number of ranks.

The search is a deterministic function of the seed and the losses it sees. That is how resume
works: the run is replayed from the start with the journal's losses, evaluating nothing the journal
already holds, and continues exactly where the interrupted run stopped.
"""

from __future__ import annotations

import hashlib
import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from headstart import parallel
from headstart.config.search import EvolutionConfig
from headstart.progress import Progress, report
from headstart.searching.bins import Bin, BinTable
from headstart.searching.journal import Journal, loss_of
from headstart.searching.operators import crossover, mutate, sample, seed_genomes
from headstart.searching.space import Genome, SearchSpace
from headstart.spec import SubnetSpec

log = logging.getLogger(__name__)



TOURNAMENT = 3  # parents are the best of this many random members
CROSSOVER_RATE = 0.5  # share of children made by crossover before mutation
MAX_REDRAWS = 100  # proposals tried before a bin counts as exhausted


@dataclass
class Candidate:
    """One evaluated sub-network."""

    genome: Genome
    spec: SubnetSpec
    spec_hash: str
    loss: float
    params: int
    flops: int
    bin: Bin
    abandoned: bool = False  # scored on the first part of the windows only (clearly worse than the population)


@dataclass
class BinRun:
    """The state and outcome of one bin in one run."""

    table: BinTable
    rng: random.Random
    population: list[Candidate] = field(default_factory=list)
    candidates: list[Candidate] = field(default_factory=list)
    seen: set[str] = field(default_factory=set)
    queue: list[Genome] = field(default_factory=list)  # proposals drawn before any random one (seeded points)
    exhausted: bool = False

    @property
    def best(self) -> Candidate | None:
        """The lowest-loss candidate so far."""
        return min(self.candidates, key=lambda c: c.loss, default=None)


def spec_hash(spec: SubnetSpec) -> str:
    """A short digest of a spec's canonical form (equal sub-networks, equal digests)."""
    return hashlib.sha256(spec.canonical_json().encode()).hexdigest()[:20]


Fitness = Callable[[SubnetSpec], float]
Counter = Callable[[SubnetSpec], tuple[int, int]]  # spec -> (params, flops per token)


@dataclass(frozen=True)
class Proposal:
    """One candidate of a generation, before it is scored."""

    bin: Bin
    genome: Genome
    spec: SubnetSpec
    spec_hash: str
    extra: dict[str, Any] = field(default_factory=dict)  # more journal fields
    threshold: float | None = None  # abandonment threshold, fixed at the generation's start


class Evaluator:
    """Fitness with a cache and a journal: what the journal holds is never computed again.

    A (run, bin, sub-network) the journal already has returns its loss silently (a replay); a
    sub-network evaluated elsewhere (another run or bin) reuses its loss and is journaled as reused.
    The rest of a generation is scored in parallel under torchrun: each candidate by one rank, on
    every window (:func:`headstart.parallel.spread`), so the losses do not depend on the number of ranks.
    """

    def __init__(self, fitness: Fitness, counter: Counter, journal: Journal | None = None) -> None:
        self.fitness = fitness
        self.counter = counter
        self.journal = journal
        self.losses: dict[str, float] = {}  # complete evaluations only (an abandoned one is never reused)
        self.done: dict[tuple[str, int, str], tuple[float, bool]] = {}  # -> (loss, abandoned)
        self.computed = 0
        self.flops: dict[str, int] = {}  # per run: forward FLOPs spent scoring candidates (reuses cost nothing)
        for rec in journal.records if journal is not None else []:
            if "rung" in rec:  # training-aware rungs are replayed by headstart.searching.rungs
                continue
            self.done[(rec["run"], int(rec["bin"]), rec["spec_hash"])] = (loss_of(rec), bool(rec.get("abandoned")))
            self.flops[rec["run"]] = self.flops.get(rec["run"], 0) + int(rec.get("scored_flops", 0))
            if not rec.get("abandoned"):
                self.losses[rec["spec_hash"]] = loss_of(rec)

    def score(self, run: str, proposals: list[Proposal]) -> list[tuple[float, bool]]:
        """``(loss, abandoned)`` of every proposal, in order; each sub-network is evaluated at most once
        across runs, bins and resumes, and a proposal with a ``threshold`` may be abandoned early (see
        :class:`~headstart.searching.fitness.Fitness`). Journals the generation, in proposal order."""
        todo = [i for i, p in enumerate(proposals)
                if (run, p.bin.index, p.spec_hash) not in self.done and p.spec_hash not in self.losses]
        work = [proposals[i] for i in todo]
        scored = dict(zip(todo, parallel.spread(self._compute, work, costs=[self.counter(p.spec)[1] for p in work])))
        out = []
        for i, p in enumerate(proposals):
            if (run, p.bin.index, p.spec_hash) in self.done:
                out.append(self.done[(run, p.bin.index, p.spec_hash)])
                continue
            reused = i not in scored
            loss, abandoned, tokens, seconds = (self.losses[p.spec_hash], False, 0, 0.0) if reused else scored[i]
            self.computed += 0 if reused else 1
            params, flops = self.counter(p.spec)
            self.flops[run] = self.flops.get(run, 0) + flops * tokens
            if not abandoned:
                self.losses[p.spec_hash] = loss
            self.done[(run, p.bin.index, p.spec_hash)] = (loss, abandoned)
            out.append((loss, abandoned))
            if self.journal is not None:
                self.journal.append({
                    "run": run, "bin": p.bin.index, "spec_hash": p.spec_hash, "loss": loss, "params": params,
                    "flops": flops,
                    "seconds": round(seconds, 4), "reused": reused, "abandoned": abandoned,
                    "scored_flops": flops * tokens, "sizes": p.spec.sizes(), "layers": list(p.spec.layers),
                    "genome": p.genome.to_dict(), "time": round(time.time(), 3), **p.extra,
                })
        return out

    def _compute(self, p: Proposal) -> tuple[float, bool, int, float]:
        """``(loss, abandoned, tokens scored, seconds)`` of one proposal, scored in this process."""
        start = time.perf_counter()
        abandons = p.threshold is not None and getattr(self.fitness, "abandons", False)
        loss = float(self.fitness(p.spec, p.threshold) if abandons else self.fitness(p.spec))
        abandoned = abandons and bool(getattr(self.fitness, "abandoned", False))
        tokens = int(getattr(self.fitness, "tokens", 0))
        return loss if math.isfinite(loss) else math.inf, abandoned, tokens, time.perf_counter() - start


def run_search(space: SearchSpace, tables: list[BinTable], evaluate: Evaluator, evolution: EvolutionConfig, seed: int,
               run: str, progress: Progress | None = None, max_redraws: int = MAX_REDRAWS) -> list[BinRun]:
    """Search every bin of ``tables`` as ``evolution`` says, from ``seed``; ``run`` names the run in the journal.

    Generation by generation: every bin proposes ``evolution.children`` candidates from its population as
    it stands (abandonment threshold included), they are scored together (spread over the ranks under
    torchrun), then enter their bins' populations in proposal order. Stops when every bin has had
    ``evolution.evaluations`` evaluations, the time limit is reached, or a bin's space is exhausted (no
    unseen candidate within ``max_redraws`` draws). ``progress`` hears of every evaluation.
    """
    plan = _Plan(evolution, max_redraws)
    states = [BinRun(t, random.Random(f"{seed}:{run}:{t.bin.index}")) for t in tables]
    deadline = None if evolution.time_limit is None else time.monotonic() + evolution.time_limit
    total = evolution.evaluations * len(states)
    while True:
        active = [s for s in states if not s.exhausted and len(s.candidates) < evolution.evaluations]
        if not active:
            break
        # rank 0 decides, so that under torchrun every rank stops at the same generation
        if deadline is not None and parallel.broadcast_object(time.monotonic() > deadline):
            log.info("%s: time limit reached", run)
            break
        batch = [(state, p) for state in active for p in _generation(space, state, plan, run)]
        scores = evaluate.score(run, [p for _, p in batch])
        for (state, p), (loss, abandoned) in zip(batch, scores):
            params, flops = evaluate.counter(p.spec)
            cand = Candidate(p.genome, p.spec, p.spec_hash, loss, params, flops, state.table.bin, abandoned)
            state.candidates.append(cand)
            _update_population(state, cand, evolution)
            best = " ".join(f"{s.best.loss:.3f}" if s.best is not None else "-" for s in states)
            report(progress, f"search {run}", sum(len(s.candidates) for s in states), total, f"best/bin [{best}]")
    return states


@dataclass(frozen=True)
class _Plan:
    evolution: EvolutionConfig
    max_redraws: int


def _generation(space: SearchSpace, state: BinRun, plan: _Plan, run: str) -> list[Proposal]:
    """The next generation's proposals of one bin (fewer when the bin is nearly done or exhausted)."""
    evolution = plan.evolution
    full = len(state.population) >= evolution.population
    threshold = max(c.loss for c in state.population) if full else None
    out: list[Proposal] = []
    for _ in range(min(evolution.children, evolution.evaluations - len(state.candidates))):
        proposal = _propose(space, state, plan, pending=len(out))
        if proposal is None:
            state.exhausted = True
            log.info("%s, %s: no unseen candidate left after %d evaluations", run, state.table.bin.label,
                     len(state.candidates) + len(out))
            break
        genome, spec, key = proposal
        extra = {"strategy": evolution.strategy, "order": space.orders.name, "n": len(state.candidates) + len(out)}
        out.append(Proposal(state.table.bin, genome, spec, key, extra, threshold))
    return out


def _propose(space: SearchSpace, state: BinRun, plan: _Plan, pending: int = 0) -> tuple[Genome, SubnetSpec, str] | None:
    rng, table, evolution = state.rng, state.table, plan.evolution
    if evolution.strategy == "evolution" and not state.seen and not state.queue:
        state.queue = seed_genomes(space, table, rng)
    for _ in range(plan.max_redraws):
        if state.queue:
            genome = state.queue.pop(0)
        elif evolution.strategy == "random" or len(state.population) + pending < evolution.population:
            genome = sample(space, table, rng)
        else:
            a = _tournament(state.population, TOURNAMENT, rng)
            if rng.random() < CROSSOVER_RATE:
                b = _tournament(state.population, TOURNAMENT, rng)
                a = crossover(space, table, a, b, rng)
            genome = mutate(space, table, a, rng)
        spec = space.to_spec(genome)
        key = spec_hash(spec)
        if key not in state.seen:
            state.seen.add(key)
            return genome, spec, key
    return None


def _tournament(population: list[Candidate], k: int, rng: random.Random) -> Genome:
    entrants = rng.sample(population, min(k, len(population)))
    return min(entrants, key=lambda c: c.loss).genome


def _update_population(state: BinRun, cand: Candidate, evolution: EvolutionConfig) -> None:
    pop = state.population
    pop.append(cand)
    if len(pop) > evolution.population:
        pop.pop(0 if evolution.aging else max(range(len(pop)), key=lambda i: (pop[i].loss, i)))
