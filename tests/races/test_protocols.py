"""All four fault protocols (classic, speculative, pervma, dufour) pass
every memory-manager race.

Each scenario runs under a seeded random walk and PCT (a few hundred
schedules each — the closing notes record the long runs); the small ones
also exhaustively up to one preemption.  A violation prints the report
(swimlane, schedule, replay command).
"""

from __future__ import annotations

import pytest

from specfault.check.explore import ExploreConfig, explore
from specfault.check.scenarios import PRESSURE_SPECS, PROTOCOLS, SPECS, TABLE_SPECS, build

CASES = [(s.name, p) for s in SPECS for p in PROTOCOLS if p in s.protocols]
#: the reclaim/swap races (scenarios/pressure.py) and the table-reclaim /
#: migration ones (scenarios/tables.py) are longer: fewer schedules each
#: here, the long runs in docs/protocols.md
PRESSURE = {s.name for s in PRESSURE_SPECS + TABLE_SPECS}


@pytest.mark.parametrize("spec,protocol", CASES)
def test_protocol_is_correct(spec: str, protocol: str) -> None:
    n = 25 if spec in PRESSURE else 150
    for cfg in (ExploreConfig(strategy="random", max_schedules=n, budget_seconds=None, seed=7),
                ExploreConfig(strategy="pct", max_schedules=n, budget_seconds=None, seed=7)):
        res = explore(build(spec, protocol), cfg)
        assert res.ok, res.report
        assert res.schedules == n


SMALL = ["fault-vs-munmap", "fault-vs-mprotect", "two-faults-same-page", "fault-vs-mmap-fixed"]


@pytest.mark.parametrize("spec", SMALL)
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_exhaustive_one_preemption(spec: str, protocol: str) -> None:
    res = explore(build(spec, protocol),
                  ExploreConfig(strategy="dfs", max_preemptions=1, budget_seconds=None))
    assert res.ok, res.report
    assert res.exhausted
    assert res.schedules > 10
