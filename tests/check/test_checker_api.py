"""The public checker API (specfault.check.api): ops and their footprints,
spawn/join, locks, condition variables, the switchable checks, the
portfolio strategy, the soundness of the reduction on programs, the
pytest helpers and the command line."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from specfault.check import Scenario, Thread, replay
from specfault.check.api import (
    Checks,
    CondVar,
    Mutex,
    Semaphore,
    Shared,
    SpinLock,
    check,
    cpu_relax,
    explore,
    find_bug,
    join,
    program,
    spawn,
    verify,
)
from specfault.check.engine import Execution, nonpreemptive
from specfault.check.pytest import assert_finds_bug, assert_no_bug, assert_verified
from specfault.check.roundrobin import PORTFOLIO, RoundRobin
from specfault.runtime import ModelBug, Task
from specfault.sync.lockdep import LOCKDEP

SRC = Path(__file__).resolve().parents[2] / "src"


# -- shared cells ------------------------------------------------------------------

@program
async def atomics() -> tuple[Any, ...]:
    x = Shared("x", 5)
    out = [await x.load(), await x.fetch_add(2), await x.add_return(3), await x.fetch_sub(1),
           await x.xchg(1), await x.fetch_or(6), await x.fetch_and(3),
           await x.cmpxchg(3, 10), await x.cmpxchg(3, 11), await x.load()]
    await x.store(None)
    return (*out, x.value)


def test_atomics_follow_linux_return_conventions() -> None:
    ex = Execution(atomics).run(nonpreemptive)
    assert ex.failure is None
    # load 5; fetch_add old 5 (7); add_return new 10; fetch_sub old 10 (9);
    # xchg old 9 (1); fetch_or old 1 (7); fetch_and old 7 (3); cmpxchg finds 3
    # (-> 10); cmpxchg finds 10 (fails); load 10
    assert ex.state.result == (5, 5, 10, 10, 9, 1, 7, 3, 10, 10, None)
    lines = ex.trace_lines()
    assert "main: cmpxchg x 3 -> 10 ok" in lines
    assert "main: cmpxchg x 3 -> 11 failed (found 10)" in lines
    assert "main: load x -> 5" in lines and "main: fetch_add x 2 -> 5" in lines


def test_every_cell_op_declares_its_footprint() -> None:
    x = Shared("x", 0)
    for op, mode in ((x.load(), "r"), (x.wait_until(lambda v: True), "r"), (x.store(1), "w"),
                     (x.cmpxchg(0, 1), "w"), (x.xchg(1), "w"), (x.fetch_add(), "w"),
                     (x.fetch_sub(), "w"), (x.fetch_or(1), "w"), (x.fetch_and(1), "w"),
                     (x.add_return(), "w"), (x.free(), "w")):
        assert op.footprint() == ((x, "value", mode),), op
    m, cv, s = Mutex("m"), CondVar("cv"), Semaphore("s")
    assert m.lock().footprint() == ((m, "owner", "w"),)
    assert m.unlock().footprint() == ((m, "owner", "w"),)
    assert cv.signal().footprint() == ((cv, "waiters", "w"),)
    assert s.down().footprint() == ((s, "count", "w"),) == s.up().footprint()


def test_check_message_names_the_thread_and_the_values() -> None:
    @program
    async def bad() -> None:
        x = Shared("x", 1)

        async def t() -> None:
            v = await x.load()
            check(v == 2, f"x is {v}, expected 2")

        await join(await spawn(t, name="checker"))

    res = find_bug(bad, 10)
    assert res.failure is not None and res.failure.kind == "property"
    assert res.failure.message == "checker: x is 1, expected 2"
    assert "VIOLATION property: checker: x is 1, expected 2" in (res.report or "")


def test_final_property_gets_mains_result() -> None:
    async def main() -> int:
        x = Shared("x", 0)
        await x.store(3)
        return x.value

    ok = program(main, name="t:ok", final=lambda r: r == 3 or f"got {r}")
    bad = program(main, name="t:bad", final=lambda r: r == 4 or f"got {r}, expected 4")
    assert explore(ok, 5).ok
    res = explore(bad, 5)
    assert res.failure is not None and (res.failure.kind, res.failure.message) == ("property",
                                                                                  "got 3, expected 4")


def test_use_after_free_and_double_free() -> None:
    @program
    async def uaf() -> None:
        x = Shared("obj", 1)
        await x.free()
        await x.load()

    @program
    async def twice() -> None:
        x = Shared("obj", 1)
        await x.free()
        await x.free()

    r1, r2 = find_bug(uaf, 3), find_bug(twice, 3)
    assert r1.failure is not None and r1.failure.kind == "UseAfterFree"
    assert "load of obj by main; freed by main" in r1.failure.message
    assert r2.failure is not None and r2.failure.kind == "DoubleFree"


# -- threads -------------------------------------------------------------------------

def test_spawn_join_returns_results_and_threads_spawn_threads() -> None:
    @program
    async def tree() -> tuple[int, ...]:
        async def leaf(i: int) -> int:
            return i * 10

        async def inner(i: int) -> int:
            h = await spawn(leaf, i)
            return await join(h) + 1

        hs = [await spawn(inner, i) for i in range(3)]
        return tuple([await join(h) for h in hs])

    res = verify(tree, observe=True)
    assert res.ok and res.exhausted and res.observations == {(1, 11, 21)}
    ex = Execution(tree).run(nonpreemptive)
    assert [t.name for t in ex.tasks] == ["main", "T1", "T2", "T3", "T4", "T5", "T6"]
    assert "main: spawn T1" in ex.trace_lines() and "T1: start T1" in ex.trace_lines()


def test_spawn_needs_a_program_and_an_rcu_free_scenario() -> None:
    async def lone(st: Any) -> None:
        await spawn(lambda: None)

    sc = Scenario("s", lambda env: None, [Thread("T", lone)], rcu=False)
    res = explore(sc, 3, strategy="dfs")
    assert res.failure is not None and "not inside a program's thread" in res.failure.message

    async def nothing() -> None:
        await cpu_relax()

    async def with_rcu(world: Any) -> None:
        await spawn(nothing)

    from specfault.check.api import World
    sc2 = Scenario("r", lambda env: World(env, Checks()), [Thread("T", with_rcu, mm=lambda w: w)])
    res2 = explore(sc2, 3, strategy="dfs")
    assert res2.failure is not None and "has RCU" in res2.failure.message


# -- locks ---------------------------------------------------------------------------

def _counter(lock_kind: str, threads: int = 3) -> Scenario:
    async def main() -> int:
        n = Shared("n", 0)
        lock = Mutex("m") if lock_kind == "mutex" else SpinLock("s")

        async def inc() -> None:
            async with lock:
                v = await n.load()
                await n.store(v + 1)

        hs = [await spawn(inc) for _ in range(threads)]
        for h in hs:
            await join(h)
        check(n.value == threads, f"n is {n.value}")
        return n.value

    return program(main, name=f"t:{lock_kind}")


@pytest.mark.parametrize("kind", ["mutex", "spin"])
def test_locks_exclude(kind: str) -> None:
    res = assert_verified(_counter(kind))
    assert res.exhausted


def test_lock_misuse_is_reported() -> None:
    @program
    async def bad_unlock() -> None:
        m = Mutex("m")
        await m.unlock()

    @program
    async def sleeps_under_spinlock() -> None:
        s, m = SpinLock("s"), Mutex("m")
        async with s:
            async with m:
                pass

    @program
    async def holds_at_exit() -> None:
        m = Mutex("m")

        async def t() -> None:
            await m.lock()

        await join(await spawn(t))

    assert_finds_bug(bad_unlock, "BadUnlock", within=5)
    res = assert_finds_bug(sleeps_under_spinlock, "SleepInAtomic", within=5)
    assert res.failure is not None and "mutex_lock(m)" in res.failure.message
    res = assert_finds_bug(holds_at_exit, "HeldAtExit", within=5)
    assert res.failure is not None and "T1 holds m" in res.failure.message


def test_checks_switch_in_one_place() -> None:
    async def abba() -> None:
        a, b = Mutex("A"), Mutex("B")

        async def t(x: Mutex, y: Mutex) -> None:
            async with x:
                async with y:
                    pass

        h1, h2 = await spawn(t, a, b), await spawn(t, b, a)
        await join(h1)
        await join(h2)

    async def leaky() -> None:
        async def t() -> None:
            await Mutex("m").lock()
        await join(await spawn(t))

    assert_finds_bug(program(abba, name="t:on"), "LockOrderViolation", within=10)
    res = assert_finds_bug(program(abba, name="t:off", checks=Checks(lockdep=False)), "deadlock",
                           within=100)
    assert res.failure is not None and "waits in mutex_lock" in res.failure.message
    assert LOCKDEP.enabled is False          # the program's switch ...
    assert explore(_counter("mutex"), 5).ok
    assert LOCKDEP.enabled is True           # ... is the program's only
    assert_finds_bug(program(leaky, name="t:leak"), "HeldAtExit", within=5)
    assert verify(program(leaky, name="t:leak-ok", checks=Checks(held_at_exit=False))).ok


def test_semaphore_bounds_the_threads_inside() -> None:
    def prog(count: int) -> Scenario:
        async def main() -> None:
            sem, inside = Semaphore("slots", count), Shared("inside", 0)

            async def t() -> None:
                await sem.down()
                n = await inside.add_return(1)
                check(n <= 2, f"{n} threads inside, at most 2 allowed")
                await inside.fetch_sub(1)
                await sem.up()

            hs = [await spawn(t) for _ in range(3)]
            for h in hs:
                await join(h)
        return program(main, name=f"t:sem{count}")

    assert_verified(prog(2))
    assert_finds_bug(prog(3), "property", within=1000)


# -- condition variables ----------------------------------------------------------

def _one_consumer(loop: bool, spurious: int) -> Scenario:
    async def main() -> None:
        items, m, cv = Shared("items", 0), Mutex("m"), CondVar("cv")

        async def consumer() -> None:
            async with m:
                if loop:
                    while await items.load() == 0:
                        await cv.wait(m)
                elif await items.load() == 0:
                    await cv.wait(m)
                n = await items.load()
                check(n > 0, f"took from an empty queue (items = {n})")
                await items.store(n - 1)

        async def producer() -> None:
            async with m:
                await items.store(1)
                await cv.signal()

        h1, h2 = await spawn(consumer), await spawn(producer)
        await join(h1)
        await join(h2)
    return program(main, name=f"t:cv{loop}{spurious}", checks=Checks(spurious_wakeups=spurious))


def test_spurious_wakeups_are_off_by_default_and_explored_when_allowed() -> None:
    assert_verified(_one_consumer(loop=False, spurious=0))       # no spurious wakeup: if suffices
    res = assert_finds_bug(_one_consumer(loop=False, spurious=1), "property", within=1000)
    assert "(spurious wakeup)" in (res.report or "")
    assert_verified(_one_consumer(loop=True, spurious=1))        # while: correct either way
    assert_verified(_one_consumer(loop=True, spurious=2))


def test_broadcast_wakes_every_waiter_and_signal_one() -> None:
    def prog(broadcast: bool) -> Scenario:
        async def main() -> None:
            go, m, cv = Shared("go", False), Mutex("m"), CondVar("cv")

            async def waiter() -> None:
                async with m:
                    while not await go.load():
                        await cv.wait(m)

            async def waker() -> None:
                async with m:
                    await go.store(True)
                    await (cv.broadcast() if broadcast else cv.signal())

            hs = [await spawn(waiter), await spawn(waiter), await spawn(waker)]
            for h in hs:
                await join(h)
        return program(main, name=f"t:bc{broadcast}")

    assert_verified(prog(True))
    res = assert_finds_bug(prog(False), "deadlock", within=1000)   # the second waiter sleeps on
    assert res.failure is not None and "sleep on cv" in res.failure.message


# -- the reduction stays sound on programs ------------------------------------------

def _random_program(seed: int) -> Scenario:
    rng = random.Random(seed)
    n = 2
    kinds = ("load", "store", "cas", "add", "lock", "spawn")
    plans = [[(rng.choice(kinds), rng.randrange(2), rng.randrange(3)) for _ in range(rng.choice((2, 3)))]
             for _ in range(n)]

    async def main() -> tuple[Any, ...]:
        cells = [Shared("a", 0), Shared("b", 0)]
        m = Mutex("m")
        seen: list[list[Any]] = [[] for _ in plans]

        async def child(c: Shared) -> None:
            await c.add_return(10)

        async def thread(i: int) -> None:
            hs = []
            for what, c, v in plans[i]:
                cell = cells[c]
                if what == "load":
                    seen[i].append(await cell.load())
                elif what == "store":
                    await cell.store(v)
                elif what == "cas":
                    seen[i].append(await cell.cmpxchg(0, v + 1))
                elif what == "add":
                    seen[i].append(await cell.fetch_add(1))
                elif what == "lock":
                    async with m:
                        seen[i].append(await cell.load())
                        await cell.store(v)
                else:
                    hs.append(await spawn(child, cell))
            for h in hs:
                await join(h)

        hs = [await spawn(thread, i) for i in range(n)]
        for h in hs:
            await join(h)
        return (cells[0].value, cells[1].value, tuple(tuple(s) for s in seen))

    return program(main, name=f"t:random{seed}")


# seeds whose unreduced space is at most ~3,000 executions (1, 5 and 9 are
# larger: the same, in tens of seconds)
@pytest.mark.parametrize("seed", [0, 2, 3, 4, 6, 7, 8, 10, 11])
def test_sleep_sets_keep_every_final_state_of_a_program(seed: int) -> None:
    prog = _random_program(seed)
    full = explore(prog, None, strategy="dfs", max_preemptions=None, reduction="none", observe=True)
    red = verify(prog, None, observe=True)
    assert full.exhausted and red.exhausted
    assert full.observations == red.observations
    assert red.complete <= full.complete


# -- the portfolio ---------------------------------------------------------------------

def test_portfolio_members_take_turns_and_stop_when_dfs_exhausts() -> None:
    rr = RoundRobin(0)
    assert len(rr.members) == len(PORTFOLIO)
    res = explore(_counter("mutex", 2), 10_000)
    assert res.ok and res.exhausted                  # the unbounded DFS member covered everything
    assert res.schedules < 10_000
    again = explore(_counter("mutex", 2), 10_000)
    assert (again.schedules, again.steps) == (res.schedules, res.steps)     # deterministic


def test_portfolio_result_is_deterministic_and_replays() -> None:
    from specfault.check.examples import peterson
    a = find_bug(peterson.broken)
    b = find_bug(peterson.broken)
    assert not a.ok and (a.schedules, str(a.schedule)) == (b.schedules, str(b.schedule))
    ex = replay(peterson.broken, str(a.schedule))
    assert ex.failure is not None and ex.failure.kind == "property"


@pytest.mark.parametrize("strategy", ["random", "pct", "dfs", "delay", "dpor"])
def test_every_strategy_runs_programs_that_spawn(strategy: str) -> None:
    from specfault.check.examples import lost_update
    # bounded DFS (and ipb) explore fewest preemptions first: with 8 threads
    # bound 0 alone is 8! orders, so DFS runs unbounded (depth-first) here
    kw = {"max_preemptions": None} if strategy == "dfs" else {}
    res = explore(lost_update.broken, 2000, strategy=strategy, **kw)
    assert not res.ok and res.failure is not None and res.failure.kind == "property"


def test_assert_no_bug_fails_on_a_bug() -> None:
    from specfault.check.examples import lost_update
    with pytest.raises(AssertionError, match="lost update"):
        assert_no_bug(lost_update.broken, 100)
    with pytest.raises(AssertionError, match="not every schedule"):
        assert_verified(lost_update.correct, 50)
    with pytest.raises(AssertionError, match="no violation found"):
        assert_finds_bug(lost_update.correct, within=20)
    with pytest.raises(AssertionError, match="expected deadlock"):
        assert_finds_bug(lost_update.broken, "deadlock", within=100)


# -- the command line ------------------------------------------------------------------

def _cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", "from specfault.cli import main; raise SystemExit(main())",
                           "check", *args], capture_output=True, text=True, cwd=cwd,
                          env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"}, timeout=120)


def test_cli_runs_a_program_from_a_file_under_the_portfolio(tmp_path: Path) -> None:
    src = (SRC / "specfault/check/examples/ticket.py").read_text()
    (tmp_path / "my lock").mkdir()
    path = tmp_path / "my lock" / "mylock.py"
    path.write_text(src)
    r = _cli(f"{path}:broken", cwd=tmp_path)
    assert r.returncode == 1, r.stderr
    assert "FAIL (property) — portfolio" in r.stdout
    assert "threads hold the ticket lock" in r.stdout
    line = next(ln.split("--replay ", 1)[1].strip("'") for ln in r.stdout.splitlines()
                if ln.startswith("replay:"))
    assert line.startswith(f"{path}:broken:portfolio:")
    again = _cli("--replay", line, cwd=tmp_path)
    assert again.returncode == 1 and "threads hold the ticket lock" in again.stdout
    ok = _cli(f"{path}:correct", "--schedules", "300", cwd=tmp_path)
    assert ok.returncode == 0 and "OK — portfolio, 300 schedules" in ok.stdout, ok.stdout + ok.stderr
    dfs = _cli("specfault.check.examples.ticket:correct", "--strategy", "dfs", "--schedules", "50")
    assert dfs.returncode == 0 and "OK — dfs, 50 schedules" in dfs.stdout
    implied = _cli("specfault.check.examples.ticket:correct", "--preemptions", "1", "--schedules", "40")
    assert implied.returncode == 0 and "OK — dfs, 40 schedules" in implied.stdout
    missing = _cli(f"{tmp_path}/nope.py:broken")
    assert missing.returncode == 2 and "no such file" in missing.stderr


def test_model_bug_is_a_finding_not_a_crash() -> None:
    assert issubclass(ModelBug, Exception)


def test_trace_lines_say_what_each_step_did() -> None:
    @program
    async def contended() -> None:
        m = Mutex("m")

        async def t() -> None:
            got = await m.trylock()
            if got:
                await m.unlock()
            else:
                await m.lock()
                await m.unlock()

        h1, h2 = await spawn(t), await spawn(t)
        await join(h1)
        await join(h2)

    lines = Execution(contended).run(nonpreemptive).trace_lines()
    assert "T1: mutex_trylock m -> True" in lines
    assert not any("held by" in ln for ln in lines)       # only a waiting lock says who holds it
    waiting = Mutex("w")
    waiting.owner = Task(0, "main")
    assert waiting.lock().describe() == "mutex_lock w (held by main)"


def test_the_explorers_own_explore_defaults_to_the_portfolio_on_programs() -> None:
    from specfault.check import explore as base_explore
    from specfault.check.examples import check_then_act
    res = base_explore(check_then_act.broken)
    assert res.strategy == "portfolio" and not res.ok
    assert base_explore(check_then_act.broken, strategy="dfs", max_schedules=50).strategy == "dfs"


# -- the portfolio on bugs hidden among 8 busy threads ------------------------------

def _busy(kind: str, noise: int = 20) -> Scenario:
    """8 threads doing ``noise`` private steps each around one racy pair:
    ``late``: one thread increments with load+store while 7 fetch_add
    (it must be preempted between its two steps, while another adds);
    ``window``: one thread must read x inside another's short x=1 window."""
    async def main() -> None:
        x = Shared("x", 0)
        priv = [Shared(f"p{i}", 0) for i in range(8)]

        async def busy(i: int) -> None:
            for k in range(noise):
                await priv[i].store(k)

        async def adder(i: int) -> None:
            await busy(i)
            await x.fetch_add(1)

        async def racer() -> None:
            await busy(7)
            v = await x.load()
            await x.store(v + 1)

        async def flasher() -> None:
            await x.store(1)
            await priv[0].store(-1)
            await x.store(0)

        async def reader() -> None:
            await busy(1)
            check(await x.load() == 0, "read x inside the window")

        if kind == "late":
            hs = [await spawn(adder, i) for i in range(7)] + [await spawn(racer)]
        else:
            hs = [await spawn(flasher), await spawn(reader)] + [await spawn(busy, i) for i in range(2, 8)]
        for h in hs:
            await join(h)
        if kind == "late":
            check(x.value == 8, f"x is {x.value}, expected 8")
    return program(main, name=f"t:busy-{kind}")


@pytest.mark.parametrize("kind", ["late", "window"])
def test_portfolio_finds_a_bug_hidden_among_8_busy_threads(kind: str) -> None:
    res = assert_finds_bug(_busy(kind), "property", within=10_000, minimize=False)
    assert res.schedules <= 500        # measured: 22 and 187; the budget is 10,000


def test_pct_ranks_a_spawned_thread_anywhere_even_below_its_creator() -> None:
    # with d=1 (no change points) PCT is a random priority order: a thread
    # spawned below main waits until main blocks in join; above, it runs at once
    from specfault.check.pct import Pct
    firsts = set()
    pct = Pct(0, 1)
    prog = _busy("late", 1)
    for _ in range(40):
        _, choose = pct.next()
        ex = Execution(prog).run(choose)
        pct.done_with(ex)
        firsts.add(ex.trace_lines()[1])            # what follows the first spawn
    assert "main: spawn T2" in firsts and "T1: start T1" in firsts
