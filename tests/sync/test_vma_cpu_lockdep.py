"""Per-VMA locks, interrupts and IPIs, TLB shootdown, table freeing, lockdep."""

from __future__ import annotations

import pytest

from specfault.check import explore, lookup
from specfault.check.litmus import FakeMm, FakeVma
from specfault.mm.tlb import flush_tlb_range, tlb_fill, tlb_lookup
from specfault.runtime import Deadlock, Task, direct
from specfault.sync import SpinLock
from specfault.sync.cpu import Cpu, local_irq_disable, local_irq_enable, smp_call_function_many
from specfault.sync.lockdep import LockOrderViolation, SleepInAtomic
from specfault.sync.mmap_lock import mmap_write_lock, mmap_write_unlock
from specfault.sync.vma_lock import (
    VMA_EAGAIN,
    VMA_LOCK_OFFSET,
    vma_end_read,
    vma_mark_detached,
    vma_start_read,
    vma_start_write,
)


async def _aw(op: object) -> object:
    return await op  # type: ignore[misc]


def test_vma_read_lock_fails_while_write_locked_and_succeeds_after() -> None:
    cpus = [Cpu(0)]
    mm = FakeMm(cpus)
    vma = FakeVma(mm)
    w, r = Task(0, "writer"), Task(1, "reader")
    direct.run(mmap_write_lock(mm), w)
    direct.run(vma_start_write(vma), w)
    assert vma.vm_lock_seq == mm.mm_lock_seq
    assert direct.run(vma_start_read(mm, vma), r) is None
    direct.run(mmap_write_unlock(mm), w)          # unlocks every VMA at once
    assert direct.run(vma_start_read(mm, vma), r) is vma
    assert vma.vm_refcnt == 2 and vma in r.held
    direct.run(vma_end_read(vma), r)
    assert vma.vm_refcnt == 1 and r.held == []


def test_vma_start_read_detached_and_recycled() -> None:
    mm, other = FakeMm([]), FakeMm([])
    vma = FakeVma(mm)
    r = Task(0, "r")
    vma.vm_refcnt = 0
    assert direct.run(vma_start_read(mm, vma), r) is VMA_EAGAIN
    vma.vm_refcnt = 1
    vma.vm_mm = other                               # SLAB_TYPESAFE_BY_RCU reuse
    assert direct.run(vma_start_read(mm, vma), r) is None
    assert vma.vm_refcnt == 1 and r.held == []


def test_vma_start_write_waits_for_readers() -> None:
    mm = FakeMm([])
    vma = FakeVma(mm)
    r, w = Task(0, "r"), Task(1, "w")
    assert direct.run(vma_start_read(mm, vma), r) is vma
    direct.run(mmap_write_lock(mm), w)
    with pytest.raises(Deadlock, match="vma readers drain"):
        direct.run(vma_start_write(vma), w)
    assert vma.vm_refcnt == 2 + VMA_LOCK_OFFSET       # new readers now fail
    r2 = Task(2, "r2")
    mm2 = mm
    assert direct.run(vma_start_read(mm2, vma), r2) is None


def test_vma_mark_detached() -> None:
    mm = FakeMm([])
    vma = FakeVma(mm)
    w = Task(0, "w")
    direct.run(mmap_write_lock(mm), w)
    direct.run(vma_start_write(vma), w)
    direct.run(vma_mark_detached(vma), w)
    assert vma.vm_refcnt == 0


@pytest.mark.parametrize("name,expect_ok", [("litmus.vma-lock", True), ("litmus.vma-lock-broken", False)])
def test_vma_lock_litmus(name: str, expect_ok: bool) -> None:
    res = explore(lookup(name), max_preemptions=None)
    assert res.ok is expect_ok, res.report
    if expect_ok:
        assert res.exhausted


def test_ipi_delayed_until_irqs_enabled() -> None:
    a, b = Cpu(0), Cpu(1)
    ta, tb = Task(0, "a", cpu=a), Task(1, "b", cpu=b)
    handled: list[int] = []
    direct.run(_aw(local_irq_disable()), tb)
    with pytest.raises(Deadlock, match="wait ipi ack"):
        direct.run(smp_call_function_many([a, b], lambda c: handled.append(c.id), "t"), ta)
    assert handled == [] and len(b.pending_ipis) == 1
    direct.run(_aw(local_irq_enable()), tb)
    assert handled == [1] and b.pending_ipis == []


def test_ipi_with_irqs_disabled_is_a_bug() -> None:
    a, b = Cpu(0), Cpu(1)
    ta = Task(0, "a", cpu=a)
    direct.run(_aw(local_irq_disable()), ta)
    with pytest.raises(SleepInAtomic, match="interrupts"):
        direct.run(smp_call_function_many([a, b], lambda c: None, "t"), ta)


def test_flush_tlb_range_drops_entries_on_every_cpu_of_the_mm() -> None:
    cpus = [Cpu(0), Cpu(1), Cpu(2)]
    mm = FakeMm(cpus[:2])
    tasks = [Task(i, f"t{i}", cpu=c) for i, c in enumerate(cpus)]
    for t in tasks:
        direct.run(_aw(tlb_fill(mm, 5, 0x1003)), t)
        direct.run(_aw(tlb_fill(mm, 9, 0x2003)), t)
    direct.run(flush_tlb_range(mm, 5 << 12, 6 << 12), tasks[0])
    assert [direct.run(_aw(tlb_lookup(mm, 5)), t) for t in tasks] == [None, None, 0x1003]
    assert all(direct.run(_aw(tlb_lookup(mm, 9)), t) == 0x2003 for t in tasks)


@pytest.mark.parametrize("pair", [("litmus.tlb", "litmus.tlb-broken"),
                                  ("litmus.tlb-irqoff", "litmus.tlb-irqoff-broken"),
                                  ("litmus.table-ipi", "litmus.table-ipi-broken"),
                                  ("litmus.table-rcu", "litmus.table-rcu-broken")])
def test_tlb_and_table_litmus(pair: tuple[str, str]) -> None:
    good, bad = pair
    ok = explore(lookup(good), max_preemptions=None)
    assert ok.ok and ok.exhausted, ok.report
    res = explore(lookup(bad), max_preemptions=None)
    assert not res.ok
    f = res.failure
    assert f is not None
    if "tlb" in bad:
        assert "stale TLB write" in f.message
    else:
        assert f.kind == "UseAfterFree" and "pte_table" in f.message


def test_lockdep_reports_abba_even_without_deadlock() -> None:
    res = explore(lookup("litmus.abba"), max_schedules=1)
    assert res.failure is not None and res.failure.kind == "LockOrderViolation"
    assert "A -> B" in res.failure.message


def test_lockdep_same_class_nesting_is_allowed_and_trylock_records_nothing() -> None:
    a1, a2 = SpinLock("ptl#1", "ptl"), SpinLock("ptl#2", "ptl")
    b = SpinLock("B")
    t = Task(0, "t")

    async def body() -> None:
        await a1.lock()
        await a2.lock()
        await a2.unlock()
        await a1.unlock()
        await b.lock()
        assert await a1.trylock()          # B then ptl by trylock: no edge
        await a1.unlock()
        await b.unlock()
        await a1.lock()
        await b.lock()                     # ptl then B: fine, no inversion
        await b.unlock()
        await a1.unlock()

    direct.run(body(), t)


def test_lockdep_inversion_direct() -> None:
    from specfault.sync.lockdep import LOCKDEP

    LOCKDEP.reset()
    a, b = SpinLock("X"), SpinLock("Y")
    t = Task(0, "t")

    async def body() -> None:
        await a.lock()
        await b.lock()
        await b.unlock()
        await a.unlock()
        await b.lock()
        await a.lock()

    with pytest.raises(LockOrderViolation):
        direct.run(body(), t)
    LOCKDEP.reset()


def test_sleeping_lock_under_spinlock_is_a_bug() -> None:
    from specfault.sync import RwSemaphore

    ptl, sem = SpinLock("ptl"), RwSemaphore("mmap_lock")
    t = Task(0, "t")

    async def body() -> None:
        await ptl.lock()
        await sem.down_read()

    with pytest.raises(SleepInAtomic, match="holding spinlock ptl"):
        direct.run(body(), t)
