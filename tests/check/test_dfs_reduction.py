"""Exhaustive DFS: counts, preemption bounds, and the soundness of sleep sets."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import pytest

from specfault.check import Scenario, Thread, explore, lookup
from specfault.check.litmus import LITMUS_PAIRS, Shared
from specfault.runtime import AtomicAdd, Load, Store
from specfault.sync import SpinLock


def _stores(fields_per_thread: list[list[str]]) -> Scenario:
    def setup(env: Any) -> Shared:
        return Shared(name="s", x=0, y=0, z=0, log=[])

    def thread(i: int, fields: list[str]) -> Callable[[Shared], Any]:
        async def body(st: Shared) -> None:
            for f in fields:
                await Store(st, f, i)
        return body

    return Scenario("stores", setup, [Thread(f"T{i}", thread(i, fs)) for i, fs in enumerate(fields_per_thread)],
                    observe=lambda st: (st.x, st.y, st.z), rcu=False)


def test_counts_of_a_known_space() -> None:
    # two threads of two ops: C(4, 2) = 6 interleavings
    dep = _stores([["x", "y"], ["x", "y"]])
    full = explore(dep, max_preemptions=None, reduction="none", observe=True)
    assert full.exhausted and full.complete == 6 and full.schedules == 6
    # independent ops: every interleaving is equivalent -> one complete run
    indep = _stores([["x", "x"], ["y", "y"]])
    red = explore(indep, max_preemptions=None, reduction="sleep", observe=True)
    assert red.exhausted and red.complete == 1
    assert explore(indep, max_preemptions=None, reduction="none").complete == 6


def test_preemption_bound_grows_the_space_monotonically() -> None:
    sc = _stores([["x", "y", "z"], ["z", "y", "x"]])
    counts = [explore(sc, max_preemptions=p, reduction="none").complete for p in (0, 1, 2, 3)]
    assert counts[0] == 2                       # who goes first, then no switches
    assert counts == sorted(counts) and counts[-1] < 20 and counts[2] < counts[3]
    assert explore(sc, max_preemptions=None, reduction="none").complete == 20   # C(6, 3)


def _random_program(rng: random.Random, n_threads: int, n_ops: int) -> Scenario:
    fields = ["x", "y", "z"]
    plans = [[(rng.choice(["load", "store", "add", "lock"]), rng.choice(fields), rng.randrange(3))
              for _ in range(n_ops)] for _ in range(n_threads)]

    def setup(env: Any) -> Shared:
        return Shared(name="s", x=0, y=0, z=0, seen=[[] for _ in plans], lock=SpinLock("L"))

    def thread(i: int) -> Callable[[Shared], Any]:
        async def body(st: Shared) -> None:
            for op, f, v in plans[i]:
                if op == "load":
                    st.seen[i].append(await Load(st, f))
                elif op == "store":
                    await Store(st, f, v)
                elif op == "add":
                    st.seen[i].append(await AtomicAdd(st, f, v))
                else:
                    await st.lock.lock()
                    st.seen[i].append(await Load(st, f))
                    await st.lock.unlock()
        return body

    return Scenario("random-program", setup, [Thread(f"T{i}", thread(i)) for i in range(n_threads)],
                    observe=lambda st: (st.x, st.y, st.z, tuple(map(tuple, st.seen))), rcu=False)


@pytest.mark.parametrize("seed", range(12))
def test_sleep_sets_are_sound_on_random_programs(seed: int) -> None:
    rng = random.Random(seed)
    sc = _random_program(rng, rng.choice([2, 3]), rng.choice([2, 3]))
    full = explore(sc, max_preemptions=None, reduction="none", observe=True, budget_seconds=None)
    red = explore(sc, max_preemptions=None, reduction="sleep", observe=True, budget_seconds=None)
    assert full.exhausted and red.exhausted
    assert red.observations == full.observations
    assert red.schedules <= full.schedules and red.complete <= full.complete


@pytest.mark.parametrize("name", [n for pair in LITMUS_PAIRS for n in pair if "broken" not in n])
def test_sleep_sets_are_sound_and_smaller_on_litmus(name: str) -> None:
    sc = lookup(name)
    full = explore(sc, max_preemptions=None, reduction="none", observe=True, budget_seconds=None)
    red = explore(sc, max_preemptions=None, reduction="sleep", observe=True, budget_seconds=None)
    assert full.ok and red.ok and full.exhausted and red.exhausted
    assert red.observations == full.observations
    assert red.complete <= full.complete
    if name != "litmus.spinlock":   # its critical sections leave two schedules in all
        assert red.complete < full.complete


def test_reduction_keeps_finding_broken_variants() -> None:
    for _, bad in LITMUS_PAIRS:
        res = explore(lookup(bad), max_preemptions=None, reduction="sleep")
        assert not res.ok, bad
