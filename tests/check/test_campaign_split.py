"""check/split.py: a search split into pieces (DFS by schedule prefix,
sleep sets included; the random walk by seed block) and merged in order
gives the result of the serial search — the same executions counted, the
same verdict, the same first failure — in one process and in several."""

from __future__ import annotations

from dataclasses import replace

import pytest

from specfault.check.explore import ExploreConfig, explore
from specfault.check.scenario import lookup, registered
from specfault.check.split import PieceSearch, explore_all

LITMUS = [n for n in registered() if n.startswith("litmus.")]
MM = ["mm.fault-vs-munmap@speculative", "mm.two-faults-same-page@pervma",
      "mm.fault-vs-munmap@speculative+no_seq2_check", "mm.fault-vs-mprotect@dufour"]


def _same(serial: list, split: list) -> None:
    assert len(serial) == len(split)
    for a, b in zip(serial, split, strict=True):
        da, db = a.to_json(), b.to_json()
        for d in (da, db):
            d.pop("elapsed")
            if d["failure"]:                  # messages name objects by number (mm#N)
                d["failure"] = d["failure"]["kind"]
                d.pop("trace")
        assert da == db, (a.summary(), b.summary())
        assert a.observations == b.observations


CONFIGS = {
    "dfs, 2 preemptions": ExploreConfig(strategy="dfs", max_preemptions=2),
    "dfs, unbounded, sleep sets": ExploreConfig(strategy="dfs", max_preemptions=None, observe=True),
    "dfs, 1 preemption, a budget": ExploreConfig(strategy="dfs", max_preemptions=1, max_schedules=37),
    "random, a budget": ExploreConfig(strategy="random", max_schedules=150, seed=5),
    "ipb to 3": ExploreConfig(strategy="ipb", max_bound=3),
    "delay to 2, a budget": ExploreConfig(strategy="delay", max_bound=2, max_schedules=90),
    "dfs, 2 preemptions, sleep sets": ExploreConfig(strategy="dfs", max_preemptions=2, reduction="sleep"),
    "dpor (one piece)": ExploreConfig(strategy="dpor", max_preemptions=None),
    "pct (one piece)": ExploreConfig(strategy="pct", max_schedules=60),
}


@pytest.mark.parametrize("what", list(CONFIGS))
def test_litmus_split_in_one_process_is_the_serial_search(what: str) -> None:
    cfg = replace(CONFIGS[what], budget_seconds=None)
    serial = [explore(lookup(n), cfg) for n in LITMUS]
    assert any(not r.ok for r in serial) and any(r.ok for r in serial)
    _same(serial, list(explore_all(LITMUS, cfg, limit=3)))      # a split every 3 executions


def test_the_split_really_splits() -> None:
    """A piece of 3 executions leaves the rest in several pieces, the
    first at the current path, each other one at a node's next alternative."""
    cfg = ExploreConfig(strategy="dfs", max_preemptions=None, budget_seconds=None, max_schedules=3)
    search = PieceSearch(None, "sleep")
    explore(lookup("litmus.seqcount"), cfg, search=search)
    pieces = search.split(4)
    assert 2 <= len(pieces) <= 4
    nodes, floor = pieces[0]
    assert floor > 0 and len(nodes) == len(search.stack)
    floors = [f for _, f in pieces[1:]]
    assert floors == sorted(floors, reverse=True) and all(len(n) == f + 1 for n, f in pieces[1:])


def test_mm_races_split_over_two_processes_are_the_serial_search() -> None:
    cfg = ExploreConfig(strategy="dfs", max_preemptions=1, budget_seconds=None)
    serial = [explore(lookup(n), cfg) for n in MM]
    assert [r.ok for r in serial] == [True, True, False, True]
    assert sum(r.schedules for r in serial) > 200
    _same(serial, list(explore_all(MM, cfg, limit=20, jobs=2)))
