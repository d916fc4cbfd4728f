"""Litmus programs: one small scenario per primitive, each with a broken
variant the explorer must catch.

=============================  ==============================================
scenario                       what it shows
=============================  ==============================================
litmus.spinlock[-broken]       two increments under a PTL; broken: no mutual
                               exclusion -> lost update
litmus.rwsem[-broken]          readers never beside a writer; broken:
                               down_read ignores the writer
litmus.seqcount[-broken]       reader sees x == y or retries; broken: reader
                               ignores an odd count
litmus.rcu[-broken]            reader dereferences under rcu_read_lock while
                               an updater retires the old object with
                               kfree_rcu; broken: grace period ignores readers
                               -> UseAfterFree
litmus.tlb[-broken]            write-protect + flush vs a CPU writing through
                               its TLB; broken: flush skipped -> stale write
litmus.tlb-irqoff[-broken]     same, writer CPU with interrupts off: flush
                               waits for its ack; broken: no wait
litmus.vma-lock[-broken]       per-VMA read lock vs vma_start_write; broken:
                               vma_start_read skips the vm_lock_seq checks
litmus.table-ipi[-broken]      page table freed after an IPI round vs an
                               irq-off walker; broken: walker leaves irqs on
litmus.table-rcu[-broken]      page table freed by call_rcu vs an irq-off
                               walker; broken: irqs-off is not an RCU reader
                               (pre-4.20 semantics)
litmus.abba                    lockdep: inverted lock order
litmus.sleep-in-rcu            lockdep: down_read inside rcu_read_lock
=============================  ==============================================
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from specfault.check.scenario import Env, Scenario, Thread, register
from specfault.mm.tlb import flush_tlb_range, tlb_remove_table_ipi, tlb_remove_table_rcu
from specfault.runtime import STATE, AtomicAdd, KObject, Load, LoadItem, Op, Store, StoreItem, Work
from specfault.sync.cpu import Cpu, local_irq_disable, local_irq_enable
from specfault.sync.mmap_lock import mmap_write_lock, mmap_write_unlock
from specfault.sync.rcu import Rcu
from specfault.sync.rwsem import READ_AT_ONCE, Acquired, RwSemaphore, Waiter, _DownRead
from specfault.sync.seqcount import (
    mmap_lock_speculate_retry,
    mmap_lock_speculate_try_begin,
    write_seqcount_begin,
    write_seqcount_end,
)
from specfault.sync.spinlock import SpinAcquire, SpinLock
from specfault.sync.vma_lock import RefIncNotZeroLimited, vma_end_read, vma_start_read, vma_start_write


class Shared:
    """A bag of shared fields (a stand-in for kernel structures)."""

    def __init__(self, **fields: Any) -> None:
        self.__dict__.update(fields)

    if TYPE_CHECKING:
        def __getattr__(self, name: str) -> Any: ...
        def __setattr__(self, name: str, value: Any) -> None: ...

    def label(self) -> str:
        return str(self.__dict__.get("name", "shared"))


class Obj(KObject):
    """A kernel object with a lifetime (poisoned when freed)."""

    __slots__ = ("name", "value", "entry")

    def __init__(self, name: str, value: int = 0) -> None:
        super().__init__()
        self.name = name
        self.value = value
        self.entry = value

    def label(self) -> str:
        return self.name


class FakeMm:
    """The fields of struct mm_struct the primitives use."""

    def __init__(self, cpus: list[Cpu], seq_bits: int = 64) -> None:
        self.mm_lock_seq = 0
        self.mm_lock_seq_bits = seq_bits
        self.mmap_lock = RwSemaphore("mmap_lock")
        self.cpumask: set[Cpu] = set(cpus)

    def label(self) -> str:
        return "mm"


def _litmus(name: str, threads: list[Thread], setup: Callable[[Env], Any], **kw: Any) -> None:
    register(name, lambda: Scenario(name, setup, threads, **kw))


# -- spinlock ----------------------------------------------------------------

class _NoExclusion(SpinAcquire):
    """Broken: takes the lock whoever holds it."""

    __slots__ = ()
    blocking = False

    def perform(self) -> None:
        self.lock.owner = STATE.task


class BrokenSpinLock(SpinLock):
    __slots__ = ()

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self._acq = _NoExclusion(self)

    def unlock(self) -> Any:
        return Store(self, "owner", None)


def _spin_setup(broken: bool) -> Callable[[Env], Shared]:
    def setup(env: Env) -> Shared:
        return Shared(name="counter", n=0, lock=(BrokenSpinLock if broken else SpinLock)("ptl"))
    return setup


async def _spin_inc(st: Shared) -> None:
    await st.lock.lock()
    n = await Load(st, "n")
    await Store(st, "n", n + 1)
    await st.lock.unlock()


def _spin_check(st: Shared) -> str | None:
    return None if st.n == 2 else f"lost update: counter is {st.n}, expected 2"


for _b in (False, True):
    _litmus("litmus.spinlock" + ("-broken" if _b else ""),
            [Thread("T0", _spin_inc), Thread("T1", _spin_inc)], _spin_setup(_b),
            check=_spin_check, observe=lambda st: st.n, rcu=False, check_exit=not _b)


# -- rwsem -------------------------------------------------------------------

class _ReadIgnoresWriter(_DownRead):
    """Broken: down_read succeeds while a writer holds the lock."""

    __slots__ = ()

    def perform(self) -> Acquired | Waiter:
        self.sem.readers += 1
        if STATE.task is not None:
            STATE.task.held.append(self.sem)
        return READ_AT_ONCE


def _rwsem_setup(broken: bool) -> Callable[[Env], Shared]:
    def setup(env: Env) -> Shared:
        sem = RwSemaphore("mmap_lock")
        if broken:
            sem._dr = _ReadIgnoresWriter(sem)
        return Shared(name="rw", sem=sem, readers=0, writers=0, data=0)
    return setup


async def _rw_reader(st: Shared) -> None:
    await st.sem.down_read()
    await AtomicAdd(st, "readers", 1)
    await Load(st, "data")
    await AtomicAdd(st, "readers", -1)
    await st.sem.up_read()


async def _rw_writer(st: Shared) -> None:
    await st.sem.down_write()
    await AtomicAdd(st, "writers", 1)
    await Store(st, "data", 1)
    await AtomicAdd(st, "writers", -1)
    await st.sem.up_write()


def _rw_invariant(st: Shared) -> str | None:
    if st.writers > 1 or (st.writers and st.readers):
        return f"rwsem exclusion broken: {st.readers} readers beside {st.writers} writers"
    return None


for _b in (False, True):
    _litmus("litmus.rwsem" + ("-broken" if _b else ""),
            [Thread("R0", _rw_reader), Thread("W", _rw_writer), Thread("R1", _rw_reader)],
            _rwsem_setup(_b), invariant=_rw_invariant, observe=lambda st: st.data, rcu=False)


# -- seqcount (mm_lock_seq) ---------------------------------------------------

def _seq_setup(env: Env) -> Shared:
    st = Shared(name="seq", x=0, y=0, seen=None)
    st.mm = FakeMm(env.cpus)
    return st


async def _seq_writer(st: Shared) -> None:
    await write_seqcount_begin(st.mm)
    await Store(st, "x", 1)
    await Store(st, "y", 1)
    await write_seqcount_end(st.mm)


def _seq_reader(broken: bool) -> Callable[[Shared], Any]:
    async def reader(st: Shared) -> None:
        if broken:
            seq = await Load(st.mm, "mm_lock_seq")   # ignores an odd count
        else:
            ok, seq = await mmap_lock_speculate_try_begin(st.mm)
            if not ok:
                return
        x = await Load(st, "x")
        y = await Load(st, "y")
        if await mmap_lock_speculate_retry(st.mm, seq):
            return
        await Store(st, "seen", (x, y))
    return reader


def _seq_check(st: Shared) -> str | None:
    if st.seen is not None and st.seen[0] != st.seen[1]:
        return f"reader accepted a torn read x={st.seen[0]} y={st.seen[1]}"
    return None


for _b in (False, True):
    _litmus("litmus.seqcount" + ("-broken" if _b else ""),
            [Thread("reader", _seq_reader(_b)), Thread("writer", _seq_writer)], _seq_setup,
            check=_seq_check, observe=lambda st: st.seen, rcu=False)


# -- RCU ---------------------------------------------------------------------

class BrokenRcu(Rcu):
    """Broken: a grace period does not wait for readers."""

    def enqueue(self, fn: Callable[[], None], what: str, fp: Any = None) -> Any:
        cb = super().enqueue(fn, what, fp)
        cb.waiting.clear()
        return cb


def _rcu_setup(broken: bool) -> Callable[[Env], Shared]:
    def setup(env: Env) -> Shared:
        if broken:
            env.use_rcu(BrokenRcu())
        return Shared(name="gp", ptr=Obj("A", 1), rcu=env.rcu, got=None)
    return setup


async def _rcu_reader(st: Shared) -> None:
    await st.rcu.read_lock()
    p = await Load(st, "ptr")
    v = await Load(p, "value")
    await st.rcu.read_unlock()
    await Store(st, "got", v)


async def _rcu_updater(st: Shared) -> None:
    old = await Load(st, "ptr")
    await Store(st, "ptr", Obj("B", 2))
    await st.rcu.kfree_rcu(old, "A")


for _b in (False, True):
    _litmus("litmus.rcu" + ("-broken" if _b else ""),
            [Thread("reader", _rcu_reader), Thread("updater", _rcu_updater)], _rcu_setup(_b),
            observe=lambda st: st.got)


# -- TLB shootdown ---------------------------------------------------------------

PTE_PRESENT, PTE_WRITE = 1, 2


class UserWrite(Op):
    """One user store instruction at page 0: TLB lookup, on a miss a page
    walk and TLB fill, then the write if the translation allows it — atomic
    with respect to IPIs (taken at instruction boundaries)."""

    __slots__ = ("st", "value")
    kind = "user_write"

    def __init__(self, st: Shared, value: int) -> None:
        self.st = st
        self.value = value

    def perform(self) -> bool:
        st = self.st
        cpu = STATE.task.cpu  # type: ignore[union-attr]
        key = (id(st.mm), 0)
        pte = cpu.tlb.get(key)
        if pte is None:
            pte = st.ptes[0]
            if pte & PTE_PRESENT:
                cpu.tlb[key] = pte
        if pte & PTE_WRITE:
            st.data = self.value
            return True
        return False  # would fault (COW): the write goes elsewhere

    def footprint(self) -> tuple[tuple[object, str, str], ...]:
        cpu = STATE.task.cpu  # type: ignore[union-attr]
        return ((cpu, "tlb", "w"), (self.st, "0", "r"), (self.st, "data", "w"))

    def describe(self) -> str:
        return f"user write {self.value} to page 0"


def _tlb_setup(env: Env) -> Shared:
    st = Shared(name="pt", ptes=[PTE_PRESENT | PTE_WRITE], data=0, snapshot=None)
    st.mm = FakeMm(env.cpus)
    return st


def _tlb_user(irqoff: bool) -> Callable[[Shared], Any]:
    async def user(st: Shared) -> None:
        if irqoff:
            await local_irq_disable()
        await UserWrite(st, 1)
        await UserWrite(st, 2)
        if irqoff:
            await local_irq_enable()
    return user


def _tlb_wp(mode: str) -> Callable[[Shared], Any]:
    """Write-protect page 0 (as fork does for COW), flush, snapshot it."""
    async def wp(st: Shared) -> None:
        pte = await LoadItem(st, st.ptes, 0)
        await StoreItem(st, st.ptes, 0, pte & ~PTE_WRITE)
        if mode == "flush":
            await flush_tlb_range(st.mm, 0, 4096)
        elif mode == "nowait":
            from specfault.mm.tlb import FlushTlb
            await FlushTlb(st.mm, 0, 4096)   # sends the IPIs, does not wait for acks
        await Store(st, "snapshot", await Load(st, "data"))
    return wp


def _tlb_check(st: Shared) -> str | None:
    if st.data != st.snapshot:
        return (f"stale TLB write: page changed to {st.data} after it was write-protected "
                f"and snapshotted as {st.snapshot}")
    return None


for _name, _irq, _mode in (("litmus.tlb", False, "flush"), ("litmus.tlb-broken", False, "skip"),
                           ("litmus.tlb-irqoff", True, "flush"),
                           ("litmus.tlb-irqoff-broken", True, "nowait")):
    _litmus(_name, [Thread("user", _tlb_user(_irq)), Thread("wp", _tlb_wp(_mode))], _tlb_setup,
            check=_tlb_check, observe=lambda st: (st.data, st.snapshot), rcu=False)


# -- per-VMA lock ----------------------------------------------------------------

class FakeVma(KObject):
    __slots__ = ("vm_start", "vm_end", "vm_lock_seq", "vm_refcnt", "vm_mm")

    def __init__(self, mm: FakeMm) -> None:
        super().__init__()
        self.vm_start, self.vm_end = 0, 1
        self.vm_lock_seq = -1
        self.vm_refcnt = 1   # attached
        self.vm_mm = mm

    def label(self) -> str:
        return "vma"


def _vma_setup(env: Env) -> Shared:
    mm = FakeMm(env.cpus)
    return Shared(name="vmas", mm=mm, vma=FakeVma(mm), rcu=env.rcu, seen=None)


async def _broken_vma_start_read(mm: Any, vma: Any) -> Any:
    ok, _ = await RefIncNotZeroLimited(vma)   # no vm_lock_seq checks
    if ok and STATE.task is not None:
        STATE.task.held.append(vma)
    return vma if ok else None


def _vma_reader(broken: bool) -> Callable[[Shared], Any]:
    async def reader(st: Shared) -> None:
        await st.rcu.read_lock()
        start_read = _broken_vma_start_read if broken else vma_start_read
        vma = await start_read(st.mm, st.vma)
        if vma is not None:
            s = await Load(vma, "vm_start")
            e = await Load(vma, "vm_end")
            await Store(st, "seen", (s, e))
            await vma_end_read(vma)
        await st.rcu.read_unlock()
    return reader


async def _vma_writer(st: Shared) -> None:
    await mmap_write_lock(st.mm)
    await vma_start_write(st.vma)
    await Store(st.vma, "vm_start", 2)
    await Store(st.vma, "vm_end", 3)
    await mmap_write_unlock(st.mm)


def _vma_check(st: Shared) -> str | None:
    if st.seen is not None and st.seen[1] - st.seen[0] != 1:
        return f"reader saw a VMA mid-update: [{st.seen[0]}, {st.seen[1]})"
    return None


for _b in (False, True):
    _litmus("litmus.vma-lock" + ("-broken" if _b else ""),
            [Thread("reader", _vma_reader(_b)), Thread("writer", _vma_writer)], _vma_setup,
            check=_vma_check, observe=lambda st: st.seen)


# -- page-table freeing ------------------------------------------------------------

def _table_setup(irqs_off_is_reader: bool = True) -> Callable[[Env], Shared]:
    def setup(env: Env) -> Shared:
        if not irqs_off_is_reader:
            env.use_rcu(Rcu(irqs_off_is_reader=False))
        return Shared(name="pmd", table=Obj("pte_table", 7), cpus=list(env.cpus), rcu=env.rcu,
                      got=None)
    return setup


def _walker(irqoff: bool) -> Callable[[Shared], Any]:
    """A lockless (fast-GUP style) walk: pmd -> pte table -> entry."""
    async def walk(st: Shared) -> None:
        if irqoff:
            await local_irq_disable()
        table = await Load(st, "table")
        if table is not None:
            await Store(st, "got", await Load(table, "entry"))
        if irqoff:
            await local_irq_enable()
    return walk


def _freer(mode: str) -> Callable[[Shared], Any]:
    async def free(st: Shared) -> None:
        table = await Load(st, "table")
        await Store(st, "table", None)          # pmd_clear
        await Work("tlb flush")
        if mode == "ipi":
            await tlb_remove_table_ipi(st.cpus, lambda: table.poison("tlb_remove_table (ipi)"))
        else:
            await tlb_remove_table_rcu(st.rcu, lambda: table.poison("tlb_remove_table (rcu)"))
    return free


_litmus("litmus.table-ipi", [Thread("walker", _walker(True)), Thread("munmap", _freer("ipi"))],
        _table_setup(), observe=lambda st: st.got, rcu=False)
_litmus("litmus.table-ipi-broken", [Thread("walker", _walker(False)), Thread("munmap", _freer("ipi"))],
        _table_setup(), observe=lambda st: st.got, rcu=False)
_litmus("litmus.table-rcu", [Thread("walker", _walker(True)), Thread("munmap", _freer("rcu"))],
        _table_setup(), observe=lambda st: st.got)
_litmus("litmus.table-rcu-broken", [Thread("walker", _walker(True)), Thread("munmap", _freer("rcu"))],
        _table_setup(irqs_off_is_reader=False), observe=lambda st: st.got)


# -- lockdep -------------------------------------------------------------------------

def _abba_setup(env: Env) -> Shared:
    return Shared(name="abba", a=SpinLock("A"), b=SpinLock("B"))


def _take(first: str, second: str) -> Callable[[Shared], Any]:
    async def body(st: Shared) -> None:
        x, y = getattr(st, first), getattr(st, second)
        await x.lock()
        await y.lock()
        await y.unlock()
        await x.unlock()
    return body


_litmus("litmus.abba", [Thread("T0", _take("a", "b")), Thread("T1", _take("b", "a"))], _abba_setup,
        rcu=False)


def _sleep_setup(env: Env) -> Shared:
    return Shared(name="s", rcu=env.rcu, sem=RwSemaphore("mmap_lock"))


async def _sleep_in_rcu(st: Shared) -> None:
    await st.rcu.read_lock()
    await st.sem.down_read()
    await st.sem.up_read()
    await st.rcu.read_unlock()


_litmus("litmus.sleep-in-rcu", [Thread("T0", _sleep_in_rcu)], _sleep_setup)


LITMUS_PAIRS = [
    ("litmus.spinlock", "litmus.spinlock-broken"),
    ("litmus.rwsem", "litmus.rwsem-broken"),
    ("litmus.seqcount", "litmus.seqcount-broken"),
    ("litmus.rcu", "litmus.rcu-broken"),
    ("litmus.tlb", "litmus.tlb-broken"),
    ("litmus.tlb-irqoff", "litmus.tlb-irqoff-broken"),
    ("litmus.vma-lock", "litmus.vma-lock-broken"),
    ("litmus.table-ipi", "litmus.table-ipi-broken"),
    ("litmus.table-rcu", "litmus.table-rcu-broken"),
]
