"""Spinlock and rwsem: direct-driver semantics, Linux fairness, lockdep."""

from __future__ import annotations

import pytest

from specfault.check import Scenario, Thread, explore
from specfault.runtime import Deadlock, ModelBug, Task, direct
from specfault.sync import RwSemaphore, SpinLock
from specfault.sync.lockdep import BadUnlock


def test_spinlock_owner_and_trylock() -> None:
    lock = SpinLock("ptl")
    t = Task(0, "T0")

    async def body() -> tuple[bool, bool]:
        await lock.lock()
        held = lock.owner is t
        second = await lock.trylock()
        await lock.unlock()
        return held, second

    assert direct.run(body(), t) == (True, False)
    assert lock.owner is None and t.held == []


def test_spinlock_relock_blocks_in_sequential_run() -> None:
    lock = SpinLock("ptl")
    t = Task(0, "T0")

    async def body() -> None:
        await lock.lock()
        await lock.lock()

    with pytest.raises(Deadlock):
        direct.run(body(), t)


def test_unlock_not_held_is_bad_unlock() -> None:
    lock, sem = SpinLock("ptl"), RwSemaphore("mmap_lock")
    with pytest.raises(BadUnlock):
        direct.run(_await(lock.unlock()), Task(0, "T0"))
    with pytest.raises(BadUnlock):
        direct.run(_await(sem.up_read()), Task(0, "T0"))
    with pytest.raises(BadUnlock):
        direct.run(_await(sem.up_write()), Task(0, "T0"))


async def _await(op: object) -> object:
    return await op  # type: ignore[misc]


def _fairness_scenario(order: list[str]) -> Scenario:
    """R0 holds the lock for read; W queues for write; then R1 tries to read.
    Linux: R1 must queue behind W (no reader starvation of writers)."""

    def setup(env: object) -> dict[str, object]:
        return {"sem": RwSemaphore("mmap_lock"), "log": order}

    async def r0(st: dict) -> None:
        await st["sem"].down_read()
        st["log"].append("R0 in")
        await st["sem"].up_read()

    async def w(st: dict) -> None:
        await st["sem"].down_write()
        st["log"].append("W in")
        await st["sem"].up_write()

    async def r1(st: dict) -> None:
        await st["sem"].down_read()
        st["log"].append("R1 in")
        await st["sem"].up_read()

    return Scenario("fairness", setup, [Thread("R0", r0), Thread("W", w), Thread("R1", r1)], rcu=False)


def test_rwsem_waiting_writer_blocks_new_readers() -> None:
    from specfault.check import replay

    log: list[str] = []
    sc = _fairness_scenario(log)
    # R0 down_read; W down_write (queues); R1 down_read (must queue); R0 runs on
    ex = replay(sc, "fairness:replay:0:0.1.2.0")
    assert ex.failure is None, ex.failure
    assert log.index("W in") < log.index("R1 in")
    assert log[0] == "R0 in"


def test_rwsem_release_wakes_all_queued_readers() -> None:
    sem = RwSemaphore("s")
    from specfault.sync.rwsem import Waiter

    sem.writer = object()
    r1, w, r2 = Waiter("r1", False), Waiter("w", True), Waiter("r2", False)
    sem.waiters = [r1, w, r2]
    sem.writer = None
    sem.wake()   # head is a reader: every queued reader gets it (rwsem_mark_wake)
    assert r1.granted and r2.granted and not w.granted and sem.readers == 2 and sem.waiters == [w]


def test_rwsem_downgrade_lets_readers_in() -> None:
    sem = RwSemaphore("s")
    t = Task(0, "T0")

    async def body() -> bool:
        await sem.down_write()
        await sem.downgrade_write()
        ok = await sem.down_read_trylock()
        await sem.up_read()
        await sem.up_read()
        return bool(ok)

    assert direct.run(body(), t) is True
    assert not sem.is_locked()


def test_rwsem_trylock_fails_with_waiters() -> None:
    sem = RwSemaphore("s")
    from specfault.sync.rwsem import Waiter

    sem.readers = 1
    sem.waiters = [Waiter(None, True)]
    assert direct.run(_await(sem.down_read_trylock()), Task(0, "T")) is False


def test_rwsem_ops_return_how_they_acquired() -> None:
    """Each acquisition op's result says how it went (what the simulator
    charges and times from): at once, queued (the waiter), granted later,
    by trylock; a failed trylock is False, a release None."""
    from specfault.runtime import STATE
    from specfault.sync.rwsem import (
        READ_AT_ONCE,
        READ_BY_TRYLOCK,
        WRITE_AT_ONCE,
        WRITE_BY_TRYLOCK,
        WRITE_GRANTED,
        Waiter,
        _WaitGranted,
    )

    sem = RwSemaphore("s")
    a, b = Task(0, "A"), Task(1, "B")
    saved = STATE.task

    def do(task: Task, op: object) -> object:
        STATE.task = task
        return op.perform()  # type: ignore[attr-defined]

    try:
        assert do(a, sem._dw) is WRITE_AT_ONCE
        w = do(b, sem._dw)
        assert type(w) is Waiter and w.write and w.task is b
        assert do(b, sem._trr) is False
        assert do(a, sem._uw) is None                  # hands the lock to B
        assert sem.writer is b and w.granted
        assert do(b, _WaitGranted(sem, w)) is WRITE_GRANTED and sem in b.held
        assert do(b, sem._uw) is None
        assert do(a, sem._dr) is READ_AT_ONCE
        assert do(b, sem._trr) is READ_BY_TRYLOCK and sem.readers == 2
        assert do(a, sem._ur) is None and do(b, sem._ur) is None
        assert do(a, sem._trw) is WRITE_BY_TRYLOCK and sem.writer is a
        assert WRITE_AT_ONCE.write and not READ_AT_ONCE.write
    finally:
        STATE.task = saved


@pytest.mark.parametrize("name,expect_ok", [("litmus.rwsem", True), ("litmus.rwsem-broken", False)])
def test_rwsem_litmus(name: str, expect_ok: bool) -> None:
    from specfault.check import lookup

    res = explore(lookup(name), max_preemptions=2, budget_seconds=20)
    assert res.ok is expect_ok, res.report
    if not expect_ok:
        assert res.failure is not None and res.failure.kind == "invariant"
        assert "readers beside" in res.failure.message


def test_modelbug_hierarchy() -> None:
    assert issubclass(BadUnlock, ModelBug)
