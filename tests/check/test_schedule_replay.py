"""Schedules as data: format, parse, and the replay round-trip."""

from __future__ import annotations

import pytest

from specfault.check import Schedule, ScheduleError, explore, lookup, replay
from specfault.check.engine import Execution
from specfault.check.litmus import LITMUS_PAIRS
from specfault.check.random_walk import RandomWalk


def test_format_and_parse() -> None:
    s = Schedule("litmus.rcu-broken", "random", 42, [0, 0, 1, 1, 1, 2, 0])
    line = str(s)
    assert line == "litmus.rcu-broken:random:42:0*2.1*3.2.0"
    assert Schedule.parse(line) == s
    assert Schedule.parse("tests.mod:attr:dfs:0:-") == Schedule("tests.mod:attr", "dfs", 0, [])
    assert s.replay_command() == f"specfault check --replay '{line}'"


@pytest.mark.parametrize("bad", ["", "x", "a:b:c:0", "a:b:1:0*0", "a:b:1:x", "a:b:1:-1", ":dfs:0:0"])
def test_bad_lines_are_rejected(bad: str) -> None:
    with pytest.raises(ScheduleError):
        Schedule.parse(bad)


ALL = [n for pair in LITMUS_PAIRS for n in pair]


@pytest.mark.parametrize("name", ALL)
def test_replay_round_trip(name: str) -> None:
    """run -> print schedule -> parse -> replay -> identical trace (and fate)."""
    scenario = lookup(name)
    walk = RandomWalk(seed=11)
    for _ in range(15):
        seed, chooser = walk.next()
        ex = Execution(scenario).run(chooser)
        line = str(Schedule(name, "random", seed, ex.choices))
        again = replay(scenario, Schedule.parse(line))
        assert again.trace_lines() == ex.trace_lines()
        assert again.choices == ex.choices
        assert (again.failure is None) == (ex.failure is None)
        if ex.failure is not None:
            assert again.failure is not None and again.failure.message == ex.failure.message


def test_reported_schedule_replays_to_the_same_failure() -> None:
    res = explore(lookup("litmus.vma-lock-broken"), strategy="random", max_schedules=5000, seed=3)
    assert not res.ok and res.schedule is not None
    again = replay(lookup("litmus.vma-lock-broken"), str(res.schedule))
    assert again.failure is not None and again.failure.kind == res.failure.kind  # type: ignore[union-attr]
    assert again.trace_lines() == res.trace


def test_divergent_schedule_is_an_error() -> None:
    # spinlock: T0 takes the lock, T1 then blocks; asking T1 to run is impossible
    with pytest.raises(ScheduleError, match="diverged"):
        replay(lookup("litmus.spinlock"), "litmus.spinlock:replay:0:0.1.1.1")


def test_prefix_continues_without_preemption() -> None:
    ex = replay(lookup("litmus.spinlock"), "litmus.spinlock:replay:0:1")
    assert ex.failure is None
    assert ex.choices == [1] * 4 + [0] * 4
    assert ex.preemptions == 0
