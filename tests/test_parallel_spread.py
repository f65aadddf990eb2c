"""``parallel.spread``: each item computed by one process alone, results gathered in order on every
process, a failure raised on every process (2 gloo processes); the cost-balanced plan."""

from __future__ import annotations

import json
import os
import socket
import time

import torch.multiprocessing as mp

from headstart import parallel
from headstart.errors import ConfigError


def test_the_plan_balances_costs_and_defaults_to_round_robin():
    assert parallel._plan([1.0] * 5, 2) == [0, 1, 0, 1, 0]
    # costliest first, each to the least loaded rank (ties: the lower): 9 -> 0, 5 -> 1, 4 -> 1, 3 -> 0
    assert parallel._plan([3.0, 9.0, 4.0, 5.0], 2) == [0, 0, 1, 1]


def test_without_a_group_spread_is_a_map_run_solo():
    seen = []

    def fn(x):
        seen.append((x, parallel.rank(), parallel.world_size(), parallel.is_main()))
        return x * x

    assert parallel.spread(fn, [3, 1, 2]) == [9, 1, 4]
    assert seen == [(3, 0, 1, True), (1, 0, 1, True), (2, 0, 1, True)]
    assert not parallel._solo


def _square(x):
    if x == 5:
        raise ConfigError("item 5 is refused")
    return {"x": x * x, "solo": (parallel.rank(), parallel.world_size(), parallel.is_distributed()),
            "by": int(os.environ["RANK"])}


def _slow(x):
    time.sleep(2.5 * x)
    return x


def _worker(rank: int, world: int, port: int, root: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    assert parallel.init(backend="gloo")
    try:
        got = {"ok": parallel.spread(_square, list(range(5)), costs=[1, 1, 1, 1, 10])}
        try:
            parallel.spread(_square, [5, 1, 2])  # item 5 fails on rank 0; rank 1 must not wait forever
        except ConfigError as exc:
            got["error"] = str(exc)
        got["after"] = (parallel.rank(), parallel.world_size())
        # a rank busy for longer than the group's timeout (a long rung run): the others wait, none times out
        from datetime import timedelta

        from torch.distributed.distributed_c10d import _set_pg_timeout

        _set_pg_timeout(timedelta(seconds=1))
        got["slow"] = parallel.spread(_slow, [0, 1])
        with open(os.path.join(root, f"rank{rank}.json"), "w") as f:
            json.dump(got, f)
    finally:
        parallel.destroy()


def test_two_processes_split_the_items_and_agree_on_the_results(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    mp.spawn(_worker, args=(2, port, str(tmp_path)), nprocs=2, join=True)
    got = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert got[0]["ok"] == got[1]["ok"]  # every process holds every result, in item order
    ok = got[0]["ok"]
    assert [r["x"] for r in ok] == [0, 1, 4, 9, 16]
    assert all(r["solo"] == [0, 1, False] for r in ok)  # computed alone: rank 0 of 1, no collectives
    # by cost: item 4 (10) to rank 0, then items 0..3 (1 each) all to rank 1, the less loaded
    assert [r["by"] for r in ok] == [1, 1, 1, 1, 0]
    assert got[0]["error"] == got[1]["error"] == "item 5 is refused"
    assert got[0]["after"] == [0, 2] and got[1]["after"] == [1, 2]
    assert got[0]["slow"] == got[1]["slow"] == [0, 1]

