"""CPUs' TLBs; TLB flushes (shootdown IPIs); freeing page tables after a
grace period or an IPI round (the mmu_gather back ends).

A user access first looks in the running CPU's TLB (:func:`tlb_lookup`); a
hit uses the cached translation without walking the page tables — so a
stale entry left by a missing flush is a real hazard the checker can
observe.  Writers that change or clear PTEs flush (:func:`flush_tlb_range`):
the local TLB at once, every other CPU in ``mm.cpumask`` through a
shootdown IPI.  A CPU with interrupts disabled delays its acknowledgement
(and its flush) until it enables them; the flusher waits for every ack.

Page tables unlinked by munmap/mremap are freed in one of two ways
(``CONFIG_MMU_GATHER_RCU_TABLE_FREE`` or not):

* :func:`tlb_remove_table_rcu` — after an RCU grace period (``call_rcu``):
  walkers protect themselves with ``rcu_read_lock()`` or (as RCU readers
  since 4.20) by disabling interrupts;
* :func:`tlb_remove_table_ipi` — after an IPI round every CPU acknowledged
  (``tlb_remove_table_sync_one``): walkers protect themselves by disabling
  interrupts, as fast GUP does.

Fields
------
Cpu (see :mod:`specfault.sync.cpu`)
# private to the CPU (only code running on it, or a flush IPI it takes)
    tlb            {(id(mm), vpn): pte} cached translations
    irq_disabled   local_irq_disable() depth
    current        the task running on it
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from specfault.runtime import STATE, Op
from specfault.runtime.call import Call
from specfault.sync.cpu import Cpu, IpiRound, SendIpis, WaitIpis, smp_call_function_many

__all__ = [
    "Cpu", "FlushTlb", "TlbFill", "TlbLookup", "current_cpu", "flush_tlb_range", "tlb_fill",
    "tlb_lookup", "tlb_remove_table_ipi", "tlb_remove_table_rcu", "tlb_remove_table_sync_one",
]

PAGE_SHIFT = 12


def _flush_cpu(cpu: Cpu, key: int, lo: int, hi: int) -> None:
    tlb = cpu.tlb
    if not tlb:
        return
    if hi - lo <= len(tlb):
        for vpn in range(lo, hi):
            tlb.pop((key, vpn), None)
    else:
        for k in [k for k in tlb if k[0] == key and lo <= k[1] < hi]:
            del tlb[k]


class FlushTlb(SendIpis):
    """flush_tlb_mm_range(), sending half: flush the local TLB, and send a
    shootdown IPI to every other CPU in ``mm.cpumask`` (handled now by CPUs
    with interrupts on, later by the others).  Returns the IPI round;
    :func:`flush_tlb_range` then waits for every acknowledgement."""

    __slots__ = ("mm", "start", "end")
    kind = "tlb_flush"

    def __init__(self, mm: Any, start: int, end: int) -> None:
        key, lo, hi = id(mm), start >> PAGE_SHIFT, end >> PAGE_SHIFT
        super().__init__(mm.cpumask, lambda cpu: _flush_cpu(cpu, key, lo, hi), "tlb shootdown")
        self.mm = mm
        self.start = start
        self.end = end

    def perform(self) -> IpiRound:
        # mm_cpumask is read when the flush is sent, not when the op was
        # built: a CPU that loaded a translation of the mm in between (and
        # set its bit) must get the shootdown too
        self.cpus = tuple(self.mm.cpumask)
        me = current_cpu()
        if me is not None:
            self.handler(me)
        return super().perform()

    def footprint(self) -> tuple[tuple[object, str, str], ...]:
        self.cpus = tuple(self.mm.cpumask)
        me = current_cpu()
        fp = super().footprint() + ((self.mm, "cpumask", "r"),)
        return fp + ((me, "tlb", "w"),) if me is not None else fp

    def describe(self) -> str:
        return f"flush_tlb {self.start:#x}-{self.end:#x}"


class FlushTlbPv(Op):
    """A paravirtualised flush (KVM/Xen/Hyper-V ``flush_tlb_multi``): the
    hypervisor drops the translations on every CPU at once — no IPI, so a
    CPU with interrupts off does not hold it up."""

    __slots__ = ("mm", "start", "end")
    kind = "tlb_flush_pv"

    def __init__(self, mm: Any, start: int, end: int) -> None:
        self.mm = mm
        self.start = start
        self.end = end

    def perform(self) -> None:
        key, lo, hi = id(self.mm), self.start >> PAGE_SHIFT, self.end >> PAGE_SHIFT
        for cpu in self.mm.cpumask:
            _flush_cpu(cpu, key, lo, hi)

    def footprint(self) -> tuple[tuple[object, str, str], ...]:
        return tuple((cpu, "tlb", "w") for cpu in self.mm.cpumask)

    def describe(self) -> str:
        return f"flush_tlb (paravirt) {self.start:#x}-{self.end:#x}"


async def flush_tlb_range(mm: Any, start: int, end: int) -> None:
    """``await flush_tlb_range(mm, start, end)``: on return no CPU caches a
    translation of [start, end) for ``mm``.  May wait for CPUs that have
    interrupts disabled — unless the mm's machine flushes through the
    hypervisor (knob ``tlb_flush_paravirt``), which never waits."""
    config = getattr(mm, "config", None)
    if config is not None and config.knob("tlb_flush_paravirt"):
        await FlushTlbPv(mm, start, end)
    else:
        rnd = await FlushTlb(mm, start, end)
        if not rnd.done():
            await WaitIpis(rnd)
    # the flush completed: tell the checker's recorder (check/properties.py)
    obs = getattr(getattr(mm, "kernel", None), "observer", None)
    if obs is not None:
        obs.flush_done(mm, start, end)


class TlbLookup(Op):
    """The MMU looks ``vpn`` of ``mm`` up in the running CPU's TLB; returns
    the cached pte or None (a miss: walk the page tables)."""

    __slots__ = ("mm", "vpn")
    kind = "tlb_lookup"

    def __init__(self, mm: Any, vpn: int) -> None:
        self.mm = mm
        self.vpn = vpn

    def perform(self) -> int | None:
        cpu = current_cpu()
        return cpu.tlb.get((id(self.mm), self.vpn)) if cpu is not None else None

    def footprint(self) -> tuple[tuple[object, str, str], ...]:
        return ((current_cpu(), "tlb", "r"),)

    def describe(self) -> str:
        return f"tlb_lookup {self.vpn:#x}"


class TlbFill(TlbLookup):
    """The MMU caches ``pte`` for ``vpn`` after a successful walk."""

    __slots__ = ("pte",)
    kind = "tlb_fill"

    def __init__(self, mm: Any, vpn: int, pte: int) -> None:
        super().__init__(mm, vpn)
        self.pte = pte

    def perform(self) -> None:  # type: ignore[override]
        cpu = current_cpu()
        if cpu is not None:
            cpu.tlb[(id(self.mm), self.vpn)] = self.pte

    def footprint(self) -> tuple[tuple[object, str, str], ...]:
        return ((current_cpu(), "tlb", "w"),)

    def describe(self) -> str:
        return f"tlb_fill {self.vpn:#x}"


def tlb_lookup(mm: Any, vpn: int) -> TlbLookup:
    """``pte = await tlb_lookup(mm, vpn)`` (None on a miss)."""
    return TlbLookup(mm, vpn)


def tlb_fill(mm: Any, vpn: int, pte: int) -> TlbFill:
    """``await tlb_fill(mm, vpn, pte)``."""
    return TlbFill(mm, vpn, pte)


def current_cpu() -> Cpu | None:
    task = STATE.task
    return task.cpu if task is not None else None


# -- freeing page tables (mm/mmu_gather.c back ends) --

def _sync_ipi(cpu: Cpu) -> None:
    """tlb_remove_table_smp_sync: nothing to do but acknowledge."""
    return None


def _online_cpus(where: Any) -> Iterable[Cpu]:
    """All CPUs: ``where`` is a CPU list, or an mm (its kernel's CPUs, else
    its cpumask)."""
    kernel = getattr(where, "kernel", None)
    if kernel is not None and getattr(kernel, "cpus", None) is not None:
        return list(kernel.cpus)
    if hasattr(where, "cpumask"):
        return list(where.cpumask)
    return list(where)


async def tlb_remove_table_sync_one(cpus: Any) -> None:
    """IPI every other CPU and wait until all acknowledged: on return no CPU
    is still inside an interrupts-off page-table walk that started before
    the call.  ``cpus``: a CPU list, or an mm (all its kernel's CPUs)."""
    await smp_call_function_many(_online_cpus(cpus), _sync_ipi, "tlb_remove_table_sync_one")


async def tlb_remove_table_ipi(cpus: Any, free: Callable[[], None]) -> None:
    """Free a page table after an IPI round (no RCU table freeing):
    ``free()`` poisons the table once every CPU has acknowledged."""
    await tlb_remove_table_sync_one(cpus)
    await Call(free, "free page table (after IPI round)")


async def tlb_remove_table_rcu(rcu: Any, free: Callable[[], None], what: str = "page table") -> None:
    """Free a page table after an RCU grace period: ``free()`` runs from the
    RCU callback (``tlb_remove_table_rcu`` / ``__tlb_remove_table_free``)."""
    await rcu.call_rcu(free, what)
