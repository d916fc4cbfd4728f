"""DPOR, iterative preemption bounding and delay bounding: sound, smaller, ordered.

Soundness is tested the way the sleep sets are (test_dfs_reduction.py):
the reduced search must report exactly the final observations that plain
unbounded enumeration (no reduction) reports, and never run more schedules.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Hashable
from dataclasses import replace
from functools import cache
from typing import Any

import pytest

from specfault.check import Scenario, Thread, explore, lookup
from specfault.check.litmus import LITMUS_PAIRS, Shared
from specfault.check.scenarios.base import final_observation
from specfault.check.scenarios.base import observe as history
from specfault.runtime import AtomicAdd, Load, Store, WaitUntil, Yield
from specfault.sync import SpinLock

CORRECT = [n for pair in LITMUS_PAIRS for n in pair if "broken" not in n]
BROKEN = [bad for _, bad in LITMUS_PAIRS]


@cache
def _plain(name: str) -> Any:
    """Plain unbounded enumeration (no reduction) of a registered scenario."""
    return explore(lookup(name), max_preemptions=None, reduction="none", observe=True,
                   budget_seconds=None, minimize=False)


@pytest.mark.parametrize("name", CORRECT)
def test_dpor_is_sound_and_smaller_on_litmus(name: str) -> None:
    full = _plain(name)
    red = explore(lookup(name), strategy="dpor", observe=True, budget_seconds=None)
    assert full.ok and red.ok and full.exhausted and red.exhausted
    assert red.observations == full.observations
    assert red.schedules <= full.schedules
    if name != "litmus.spinlock":   # its critical sections leave two schedules in all
        assert red.complete < full.complete


@pytest.mark.parametrize("name", BROKEN)
def test_dpor_finds_every_broken_litmus_variant(name: str) -> None:
    res = explore(lookup(name), strategy="dpor", budget_seconds=None)
    assert not res.ok and res.failure is not None, name
    assert res.failure.kind != "error", res.failure.message     # the bug, not a crash
    # the failure it reports replays (the schedule line names dpor)
    assert res.schedule is not None and res.schedule.strategy == "dpor"
    from specfault.check.explore import replay
    assert replay(lookup(name), res.schedule).failure is not None


def _random_program(rng: random.Random, n_threads: int, n_ops: int, cpus: int | None) -> Scenario:
    """Loads, stores, atomics, a spinlock, yields and a blocking wait; with
    ``cpus`` fewer than threads, tasks share CPUs (the engine's preemptibility
    rule: a task holding the spinlock keeps its CPU)."""
    fields = ["x", "y", "z"]
    kinds = ["load", "store", "add", "lock", "yield", "wait"]
    plans = [[(rng.choice(kinds), rng.choice(fields), rng.randrange(3)) for _ in range(n_ops)]
             for _ in range(n_threads)]

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
                elif op == "yield":
                    await Yield()
                elif op == "wait":     # block while the lock is held
                    await WaitUntil(lambda: st.lock.owner is None, "L free", (st.lock,))
                    st.seen[i].append(("w", await Load(st, f)))
                else:
                    await st.lock.lock()
                    st.seen[i].append(await Load(st, f))
                    await Store(st, f, v + 1)
                    await st.lock.unlock()
        return body

    return Scenario("random-program", setup, [Thread(f"T{i}", thread(i)) for i in range(n_threads)],
                    observe=lambda st: (st.x, st.y, st.z, tuple(map(tuple, st.seen))), rcu=False,
                    cpus=cpus)


@pytest.mark.parametrize("seed", range(40))
def test_dpor_is_sound_on_random_programs(seed: int) -> None:
    rng = random.Random(1000 + seed)
    n = rng.choice([2, 3])
    sc = _random_program(rng, n, 3 if n == 2 else 2, cpus=1 if seed % 4 == 3 else None)
    full = explore(sc, max_preemptions=None, reduction="none", observe=True, budget_seconds=None)
    red = explore(sc, strategy="dpor", observe=True, budget_seconds=None)
    assert full.exhausted and red.exhausted
    assert red.observations == full.observations
    assert red.schedules <= full.schedules


def _mm(name: str) -> Scenario:
    """A registered mm scenario observed by its results and its final
    memory (maps and page contents of every process)."""
    sc = lookup(name)

    def obs(world: Any) -> Hashable:
        return (history(world), final_observation(world))

    return replace(sc, observe=obs)


@pytest.mark.parametrize("name", ["mm.fault-vs-mprotect@classic", "mm.fault-vs-dontneed@classic",
                                  "mm.first-fault-vs-mprotect@classic", "mm.fault-vs-exit@classic"])
def test_dpor_is_sound_on_small_mm_scenarios(name: str) -> None:
    sc = _mm(name)
    full = explore(sc, max_preemptions=None, reduction="none", observe=True, budget_seconds=None,
                   minimize=False)
    red = explore(sc, strategy="dpor", observe=True, budget_seconds=None, minimize=False)
    assert full.ok and red.ok and full.exhausted and red.exhausted
    assert red.observations == full.observations
    assert red.schedules * 10 < full.schedules


# ------------------------------------------- the refined footprints (RCU, rwsem)
def _same_as_plain(sc: Scenario) -> Any:
    """DPOR on ``sc``: exhausted, the final observations of plain unbounded
    enumeration, no more schedules; the DPOR result."""
    full = explore(sc, max_preemptions=None, reduction="none", observe=True, budget_seconds=None,
                   minimize=False)
    red = explore(sc, strategy="dpor", observe=True, budget_seconds=None, minimize=False)
    assert full.ok and red.ok and full.exhausted and red.exhausted
    assert red.observations == full.observations
    assert red.schedules <= full.schedules
    for strategy in ("dfs",):       # sleep sets alone (unbounded dfs) read the same footprints
        sl = explore(sc, strategy=strategy, max_preemptions=None, observe=True,
                     budget_seconds=None, minimize=False)
        assert sl.exhausted and sl.observations == full.observations
    return red


def _rwsem_program(readers: list[str], writer: bool) -> Scenario:
    """Readers of an rw_semaphore (``down_read`` / ``down_read_trylock``,
    two loads, ``up_read``) beside an optional writer (``down_write``, two
    stores, ``up_write``); observed: what each reader saw, the final data."""
    from specfault.sync.rwsem import RwSemaphore

    def setup(env: Any) -> Shared:
        return Shared(name="rw", sem=RwSemaphore("sem"), x=0, y=0, seen={})

    def reader(name: str, how: str) -> Callable[[Shared], Any]:
        async def body(st: Shared) -> None:
            if how == "try":
                if not await st.sem.down_read_trylock():
                    st.seen[name] = "busy"
                    return
            else:
                await st.sem.down_read()
            x = await Load(st, "x")
            y = await Load(st, "y")
            await st.sem.up_read()
            st.seen[name] = (x, y)
        return body

    async def write(st: Shared) -> None:
        await st.sem.down_write()
        await Store(st, "x", 1)
        await Store(st, "y", 1)
        await st.sem.up_write()

    threads = [Thread(f"R{i}", reader(f"R{i}", how)) for i, how in enumerate(readers)]
    if writer:
        threads.append(Thread("W", write))
    return Scenario("rwsem-readers", setup, threads, rcu=False,
                    check=lambda st: all(v in ("busy", (0, 0), (1, 1)) for v in st.seen.values())
                    or f"torn read under the rwsem: {st.seen}",
                    observe=lambda st: (st.x, st.y, tuple(sorted(st.seen.items()))))


def test_rwsem_readers_commute() -> None:
    # two readers alone: every step of one is independent of every step of
    # the other (down_read and up_read with nobody queued), one class
    red = _same_as_plain(_rwsem_program(["down", "down"], writer=False))
    assert red.complete == 1
    red = _same_as_plain(_rwsem_program(["down", "try"], writer=False))
    assert red.complete == 1


@pytest.mark.parametrize("readers", [["down", "down"], ["down", "try"]])
def test_rwsem_readers_beside_a_writer_keep_every_behaviour(readers: list[str]) -> None:
    # the writer's down_write reads the read count, and once it queues every
    # step is dependent: each reader before, after, or queued behind it
    red = _same_as_plain(_rwsem_program(readers, writer=True))
    seen = {obs[2] for obs in red.observations}
    assert len(seen) > 2        # readers before, after, and on both sides of the writer


def _rcu_program(queued_first: bool, n_readers: int = 2) -> Scenario:
    """``n_readers`` RCU readers (lock, load the pointer, load the object,
    unlock) and an updater that publishes a new object and ``kfree_rcu`` s
    the old one; with ``queued_first`` the setup also queues a callback that
    frees an object nobody reads, before any reader exists (it waits for no
    one)."""
    from specfault.check.litmus import Obj

    def setup(env: Any) -> Shared:
        st = Shared(name="gp", ptr=Obj("A", 1), rcu=env.rcu, got={})
        if queued_first:
            z = Obj("Z", 0)
            env.rcu.enqueue(lambda: z.poison("setup"), "Z", ((z, "*", "w"),))
        return st

    def reader(name: str) -> Callable[[Shared], Any]:
        async def body(st: Shared) -> None:
            await st.rcu.read_lock()
            p = await Load(st, "ptr")
            v = await Load(p, "value")
            await st.rcu.read_unlock()
            st.got[name] = v
        return body

    async def updater(st: Shared) -> None:
        from specfault.check.litmus import Obj as _Obj
        old = await Load(st, "ptr")
        await Store(st, "ptr", _Obj("B", 2))
        await st.rcu.kfree_rcu(old, "A")

    threads = [Thread(f"R{i}", reader(f"R{i}")) for i in range(n_readers)]
    return Scenario("rcu-readers", setup, [*threads, Thread("updater", updater)],
                    observe=lambda st: tuple(sorted(st.got.items())))


def test_rcu_unlock_commutes_with_a_callback_that_does_not_wait_for_it() -> None:
    # the setup's callback waits for no reader: the readers' sections and
    # the callback run commute, one class (the per-task `waiting` parts)
    def only_readers(n: int) -> Scenario:
        sc = _rcu_program(True, n)
        return replace(sc, threads=sc.threads[:n])
    red = _same_as_plain(only_readers(2))
    assert red.complete == 1


@pytest.mark.parametrize("queued_first,n_readers", [(False, 2), (True, 1)])
def test_rcu_readers_against_callbacks_keep_every_behaviour(queued_first: bool,
                                                            n_readers: int) -> None:
    # two readers, of which the callback waits for those in their section
    # when it is queued; or one reader, one callback that waits for nobody
    # and one that may wait for it (plain enumeration of both at once is
    # too large for the default suite)
    red = _same_as_plain(_rcu_program(queued_first, n_readers))
    assert {dict(o)["R0"] for o in red.observations} == {1, 2}


def test_rcu_two_readers_broken_grace_period_is_found() -> None:
    from specfault.check.litmus import BrokenRcu

    sc = _rcu_program(False)
    orig = sc.setup

    def setup(env: Any) -> Shared:
        env.use_rcu(BrokenRcu())
        return orig(env)
    res = explore(replace(sc, setup=setup), strategy="dpor", budget_seconds=None, minimize=False)
    assert not res.ok and res.failure is not None and res.failure.kind == "UseAfterFree"


def test_dpor_finds_a_pointer_kept_across_read_side_sections() -> None:
    # the reader's first exit ends the callback's grace period (an order:
    # the callback runs after it); its second section must still race with
    # the callback, or the use after free it allows is never explored
    from specfault.check.litmus import Obj

    def setup(env: Any) -> Shared:
        return Shared(name="gp", ptr=Obj("A", 1), rcu=env.rcu)

    async def reader(st: Shared) -> None:
        await st.rcu.read_lock()
        p = await Load(st, "ptr")
        await st.rcu.read_unlock()
        await st.rcu.read_lock()
        await Load(p, "value")          # bug: p was found in the first section
        await st.rcu.read_unlock()

    async def updater(st: Shared) -> None:
        old = await Load(st, "ptr")
        await Store(st, "ptr", Obj("B", 2))
        await st.rcu.kfree_rcu(old, "A")

    sc = Scenario("rcu-stale", setup, [Thread("reader", reader), Thread("updater", updater)])
    res = explore(sc, strategy="dpor", budget_seconds=None, minimize=False)
    assert not res.ok and res.failure is not None and res.failure.kind == "UseAfterFree"


# --------------------------------------------------------------- bounding
def _stores(fields_per_thread: list[list[str]]) -> Scenario:
    def setup(env: Any) -> Shared:
        return Shared(name="s", x=0, y=0, z=0)

    def thread(i: int, fields: list[str]) -> Callable[[Shared], Any]:
        async def body(st: Shared) -> None:
            for f in fields:
                await Store(st, f, i)
        return body

    return Scenario("stores", setup, [Thread(f"T{i}", thread(i, fs)) for i, fs in enumerate(fields_per_thread)],
                    observe=lambda st: (st.x, st.y, st.z), rcu=False)


@pytest.mark.parametrize("strategy", ["ipb", "delay"])
def test_iterative_bounding_runs_every_schedule_once(strategy: str) -> None:
    sc = _stores([["x", "y", "z"], ["z", "y", "x"], ["y"]])
    full = explore(sc, max_preemptions=None, reduction="none", observe=True, budget_seconds=None)
    it = explore(sc, strategy=strategy, observe=True, budget_seconds=None)
    assert it.exhausted and it.complete == full.complete == 140     # 7! / (3! 3! 1!)
    assert it.schedules == full.schedules and it.observations == full.observations
    # a bound stops it: no preemption leaves the 3! orders of whole threads; no
    # delay, the one round-robin schedule
    zero = explore(sc, strategy=strategy, max_bound=0, budget_seconds=None)
    assert zero.exhausted and zero.complete == (6 if strategy == "ipb" else 1)


def test_dfs_bounded_runs_the_same_schedules_fewest_preemptions_first() -> None:
    from specfault.check.dfs import Dfs, Search
    from specfault.check.engine import Execution

    sc = _stores([["x", "y", "z"], ["z", "y", "x"]])
    for bound in (0, 1, 2, 3):
        runs = []
        for strat in (Dfs(bound, "none"), Search(bound, "none")):
            seen = []
            while (nxt := strat.next()) is not None:
                ex = Execution(sc).run(nxt[1])
                strat.done_with(ex)
                seen.append((ex.preemptions, tuple(ex.choices)))
            runs.append(seen)
        it, plain = runs
        assert sorted(it) == sorted(plain) and len(set(it)) == len(it)    # same set, none twice
        assert [p for p, _ in it] == sorted(p for p, _ in it)             # fewest first


def _early_switch() -> Scenario:
    """T0 stores x=1 then x=2, then works on y; T1 must never see x == 1.
    The bug needs one preemption, right after T0's first step."""
    def setup(env: Any) -> Shared:
        return Shared(name="s", x=0, y=0, bad=False)

    async def t0(st: Shared) -> None:
        await Store(st, "x", 1)
        await Store(st, "x", 2)
        for _ in range(12):
            await Store(st, "y", 1)

    async def t1(st: Shared) -> None:
        for _ in range(3):
            if await Load(st, "x") == 1:
                st.bad = True

    return Scenario("early-switch", setup, [Thread("T0", t0), Thread("T1", t1)],
                    check=lambda st: not st.bad or "saw x == 1", rcu=False)


def test_bounded_dfs_finds_an_early_switch_first() -> None:
    from specfault.check.dfs import Search
    from specfault.check.engine import Execution

    sc = _early_switch()
    res = explore(sc, strategy="dfs", max_preemptions=2, budget_seconds=None, minimize=False)
    assert not res.ok and res.schedules <= 4
    for strategy in ("ipb", "delay"):
        r = explore(sc, strategy=strategy, budget_seconds=None, minimize=False)
        assert not r.ok and r.schedules <= 4, strategy
    # the plain depth-first order (deepest alternative first) needs many more
    plain, n = Search(2, "none"), 0
    while (nxt := plain.next()) is not None:
        ex = Execution(sc).run(nxt[1])
        plain.done_with(ex)
        n += 1
        if ex.failure is not None:
            break
    assert n > 10 * res.schedules


def test_the_command_line_runs_the_new_strategies(capsys: pytest.CaptureFixture[str]) -> None:
    from specfault.cli import main

    assert main(["check", "litmus.rcu", "--strategy", "dpor"]) == 0
    assert "dpor" in capsys.readouterr().out
    assert main(["check", "litmus.rcu-broken", "--strategy", "ipb", "--bound", "3"]) == 1
    out = capsys.readouterr().out
    assert "litmus.rcu-broken:ipb:" in out
    line = next(w.strip("'") for w in out.split() if w.startswith("'litmus.rcu-broken:ipb:"))
    assert main(["check", "--replay", line]) == 1
    assert main(["check", "litmus.seqcount", "--strategy", "delay", "--bound", "none"]) == 0
    for bad in (["--strategy", "dfs", "--bound", "2"], ["--strategy", "dpor", "--preemptions", "2"],
                ["--strategy", "ipb", "--bound", "-1"], ["--strategy", "nope"]):
        assert main(["check", "litmus.rcu", *bad]) == 2, bad
