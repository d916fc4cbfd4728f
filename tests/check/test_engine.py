"""The controlled scheduler's verdicts: deadlock, livelock, errors, exits,
invariants; strategies; minimisation and the report; the pytest helper."""

from __future__ import annotations

from typing import Any

import pytest

from specfault.check import ExploreConfig, Scenario, Thread, explore, lookup, replay
from specfault.check.litmus import Shared
from specfault.check.pct import Pct
from specfault.check.pytest import assert_correct, assert_finds_bug
from specfault.runtime import Load, Store, Work, Yield
from specfault.sync import SpinLock


def _abba() -> Scenario:
    def setup(env: Any) -> Shared:
        return Shared(a=SpinLock("A"), b=SpinLock("B"))

    def take(x: str, y: str) -> Any:
        async def body(st: Shared) -> None:
            await getattr(st, x).lock()
            await getattr(st, y).lock()
            await getattr(st, y).unlock()
            await getattr(st, x).unlock()
        return body

    return Scenario("abba", setup, [Thread("T0", take("a", "b")), Thread("T1", take("b", "a"))], rcu=False)


def test_deadlock_is_detected_when_lockdep_is_off() -> None:
    res = explore(_abba(), lockdep=False)
    assert res.failure is not None and res.failure.kind == "deadlock"
    assert "T0 waits in spin_lock B" in res.failure.message and "T1 waits in spin_lock A" in res.failure.message
    assert res.execution is not None and res.execution.preemptions == 1


def test_livelock_is_the_step_limit() -> None:
    def setup(env: Any) -> Shared:
        return Shared(flag=0)

    async def spin(st: Shared) -> None:
        while not await Load(st, "flag"):
            await Yield()

    sc = Scenario("spin", setup, [Thread("spinner", spin)], rcu=False)
    res = explore(sc, step_limit=50)
    assert res.failure is not None and res.failure.kind == "livelock" and "50" in res.failure.message


def test_task_exception_and_held_at_exit() -> None:
    def setup(env: Any) -> Shared:
        return Shared(lock=SpinLock("ptl"))

    async def boom(st: Shared) -> None:
        await Work("x")
        raise KeyError("model bug")

    async def leak(st: Shared) -> None:
        await st.lock.lock()

    res = explore(Scenario("boom", setup, [Thread("T", boom)], rcu=False))
    assert res.failure is not None and res.failure.kind == "error" and "model bug" in res.failure.message
    res = explore(Scenario("leak", setup, [Thread("T", leak)], rcu=False))
    assert res.failure is not None and res.failure.kind == "HeldAtExit" and "ptl" in res.failure.message


def test_invariant_is_checked_after_every_step() -> None:
    def setup(env: Any) -> Shared:
        return Shared(x=0)

    async def body(st: Shared) -> None:
        await Store(st, "x", 1)
        await Store(st, "x", 0)

    sc = Scenario("inv", setup, [Thread("T", body)], invariant=lambda st: st.x == 0, rcu=False)
    res = explore(sc)
    assert res.failure is not None and res.failure.kind == "invariant" and res.failure.step == 1


def _noisy_race() -> Scenario:
    """A lost update hidden among unrelated work."""

    def setup(env: Any) -> Shared:
        return Shared(n=0)

    async def body(st: Shared) -> None:
        for _ in range(8):
            await Work("noise")
        n = await Load(st, "n")
        await Store(st, "n", n + 1)
        for _ in range(8):
            await Work("noise")

    return Scenario("noisy", setup, [Thread("T0", body), Thread("T1", body)],
                    check=lambda st: st.n == 2 or f"lost update: n={st.n}", rcu=False)


def test_random_walk_and_pct_find_bugs_and_are_deterministic() -> None:
    for strategy in ("random", "pct"):
        a = explore(_noisy_race(), strategy=strategy, seed=5, max_schedules=2000, minimize=False)
        b = explore(_noisy_race(), strategy=strategy, seed=5, max_schedules=2000, minimize=False)
        assert not a.ok, strategy
        assert a.schedules == b.schedules and a.original == b.original


def test_pct_depth_one_never_preempts() -> None:
    res = explore(_noisy_race(), strategy="pct", pct_depth=1, max_schedules=200)
    assert res.ok   # with d = 1 PCT runs each task to completion in priority order
    with pytest.raises(ValueError):
        Pct(depth=0)


def test_minimisation_shrinks_preemptions() -> None:
    res = explore(_noisy_race(), strategy="random", seed=1, max_schedules=2000)
    assert not res.ok and res.execution is not None and res.original is not None
    orig = replay(_noisy_race(), res.original)
    assert orig.preemptions > 1
    assert res.execution.preemptions == 1
    assert res.execution.steps <= orig.steps


def test_report_has_property_swimlane_schedule_and_command() -> None:
    res = explore(lookup("litmus.tlb-broken"))
    assert not res.ok and res.schedule is not None
    text = res.report
    assert text.startswith("VIOLATION property: stale TLB write")
    assert "cpu0 [user]" in text and "cpu1 [wp]" in text
    assert "user write 2 to page 0" in text and ">>" in text
    assert f"specfault check --replay '{res.schedule}'" in text


def test_budget_by_count_and_time() -> None:
    sc = lookup("litmus.rwsem")
    assert explore(sc, strategy="random", max_schedules=7).schedules == 7
    res = explore(sc, strategy="random", budget_seconds=0.2, max_schedules=None)
    assert res.schedules > 1 and res.elapsed < 2


def test_config_from_env() -> None:
    cfg = ExploreConfig.from_env({"SPECFAULT_CHECK_STRATEGY": "pct", "SPECFAULT_CHECK_MAX_PREEMPTIONS": "none",
                           "SPECFAULT_CHECK_PCT_DEPTH": "4", "SPECFAULT_CHECK_MINIMIZE": "0"}, seed=9)
    assert (cfg.strategy, cfg.max_preemptions, cfg.pct_depth, cfg.minimize, cfg.seed) == ("pct", None, 4, False, 9)


def test_pytest_helpers() -> None:
    res = assert_correct(lookup("litmus.vma-lock"), preemptions=2)
    assert res.exhausted and res.complete > 1
    with pytest.raises(AssertionError, match="found a violation"):
        assert_correct(lookup("litmus.vma-lock-broken"), preemptions=2)
    assert_finds_bug(lookup("litmus.rcu-broken"), kind="UseAfterFree")
    with pytest.raises(AssertionError, match="no violation"):
        assert_finds_bug(lookup("litmus.rcu"), max_preemptions=2)


def test_rcu_callbacks_are_a_schedulable_choice() -> None:
    """The callback runs at different points in different schedules."""
    sc = lookup("litmus.rcu")
    positions = set()
    from specfault.check.dfs import Dfs
    from specfault.check.engine import Execution

    dfs = Dfs(None, "none")
    while (nxt := dfs.next()) is not None:
        ex = Execution(sc).run(nxt[1])
        dfs.done_with(ex)
        positions.add(tuple(i for i, (a, _) in enumerate(ex.trace) if a == ex.rcu_actor))
    assert len(positions) > 2


def test_fairness_a_yielding_spinner_lets_the_other_task_run() -> None:
    def setup(env: Any) -> Shared:
        return Shared(flag=0, seen=0)

    async def spin(st: Shared) -> None:
        while not await Load(st, "flag"):
            await Yield()
        await Store(st, "seen", 1)

    async def setter(st: Shared) -> None:
        await Work("x")
        await Store(st, "flag", 1)

    sc = Scenario("fair", setup, [Thread("spinner", spin), Thread("setter", setter)],
                  check=lambda st: st.seen == 1, rcu=False)
    res = explore(sc, max_preemptions=2, step_limit=200)
    assert res.ok and res.exhausted, res.report
    res = explore(sc, strategy="random", max_schedules=300, step_limit=200)
    assert res.ok, res.report
