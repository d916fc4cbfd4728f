"""Every mutant's saved counterexample (tests/regressions/<mutant>.schedule,
written by ``specfault check --mutants --save tests/regressions``) still
breaks the mutant when replayed — and the same scenario under the correct
protocol passes a search of the same kind."""

from __future__ import annotations

from pathlib import Path

import pytest

from specfault.check.explore import ExploreConfig, explore, replay
from specfault.check.mutants import MUTANTS as ALL_MUTANTS
from specfault.check.scenario import lookup
from specfault.check.schedule import Schedule

#: the kill table: the mutants the scenario portfolio kills (the others,
#: ``expect="fuzz"``, are the fuzzer's input: docs/protocols.md)
MUTANTS = {n: m for n, m in ALL_MUTANTS.items() if m.expect == "scenarios"}

REGRESSIONS = Path(__file__).resolve().parent.parent / "regressions"


def test_every_mutant_has_a_saved_kill() -> None:
    missing = [m for m in MUTANTS if not (REGRESSIONS / f"{m}.schedule").exists()]
    assert not missing, f"no saved counterexample for {missing}"


@pytest.mark.parametrize("mutant", sorted(MUTANTS))
def test_saved_counterexample_still_kills(mutant: str) -> None:
    path = REGRESSIONS / f"{mutant}.schedule"
    if not path.exists():
        pytest.fail(f"{path} missing: run specfault check --mutants --save tests/regressions")
    sched = Schedule.parse(path.read_text().strip())
    assert sched.scenario.endswith("+" + mutant)
    ex = replay(lookup(sched.scenario), sched)
    assert ex.failure is not None, f"{mutant}: the saved schedule no longer fails"


@pytest.mark.parametrize("mutant", sorted(MUTANTS))
def test_correct_protocol_survives_the_same_scenario(mutant: str) -> None:
    path = REGRESSIONS / f"{mutant}.schedule"
    if not path.exists():
        pytest.skip("no saved schedule")
    sched = Schedule.parse(path.read_text().strip())
    correct = sched.scenario.rsplit("+", 1)[0]
    res = explore(lookup(correct), ExploreConfig(strategy=sched.strategy if sched.strategy != "dfs"
                                          else "random", max_schedules=200,
                                          budget_seconds=None, seed=sched.seed))
    assert res.ok, res.report
