"""User-space accesses: the MMU, the TLB, and the fault-retry loop.

A load or store by a user thread is one atomic op (:class:`UserAccess`):
look up the running CPU's TLB; on a miss walk the page tables (setting the
accessed/dirty bits as the hardware does) and fill the TLB; if the
translation allows the access, do it on the page's bytes.  Otherwise the
CPU raises a page fault (:class:`PageFault`): the TLB entry for the address
is dropped (x86 does so on every page fault), the arch handler
``do_user_addr_fault`` runs, and when it returns the instruction is
executed again — :func:`user_access`, the one retry loop (the API, the
explorer's scenarios and the simulator's workloads all use it).
"""

from __future__ import annotations

from typing import Any

from specfault.mm.fault import ACCESS_WRITE, do_user_addr_fault
from specfault.mm.pgtable import (
    _PAGE_ACCESSED,
    _PAGE_DIRTY,
    _PAGE_NX,
    PTE_PFN_MASK,
    HugePmdView,
    huge_subpage_pte,
)
from specfault.runtime import STATE, ModelBug, Op, UseAfterFree


class PageFault:
    """The MMU raised a page fault; ``prot`` is x86's PF_PROT error-code
    bit: the translation was present but did not allow the access."""

    __slots__ = ("prot",)

    def __init__(self, prot: bool) -> None:
        self.prot = prot

    def __repr__(self) -> str:
        return f"<page fault{' (protection)' if self.prot else ''}>"


_PAGE_ACCESSED_DIRTY = _PAGE_ACCESSED | _PAGE_DIRTY     # what a store's walk sets

FAULT = PageFault(False)          # not present
FAULT_PROT = PageFault(True)      # present, access not allowed


class UserAccess(Op):
    """Translate ``addr`` and read ``n`` bytes / write ``data`` at it (within
    one page).  Returns the bytes read (b"" for writes/execs), or the
    ``FAULT`` sentinel when the MMU raises a page fault."""

    __slots__ = ("mm", "addr", "access", "n", "data")
    kind = "user_access"

    def __init__(self, mm: Any, addr: int, access: int, n: int = 0, data: bytes = b"") -> None:
        self.mm = mm
        self.addr = addr
        self.access = access
        self.n = n
        self.data = data

    def perform(self) -> Any:
        task = STATE.task
        return hw_access(self.mm, task.cpu if task is not None else None, self.addr,
                         self.access, self.n, self.data)

    def footprint(self) -> tuple[tuple[object, str, str], ...]:
        """What :func:`hw_access` will touch, found by the same lookups
        without their effects: this CPU's TLB (looked up, filled, dropped:
        a write); on a walk, each table entry read on the way down and the
        PTE (a write when it sets the accessed/dirty bits), and the mm's cpumask; the
        frame table (``mem.pages``, which alloc and free change) and the
        page's bytes.  The explorer's reductions rely on it being complete
        (``check/independence.py``)."""
        mm, addr, access = self.mm, self.addr, self.access
        write = access == ACCESS_WRITE
        fp: list[tuple[object, str, str]] = [(mm, f"page {addr >> 12:#x}", "w" if write else "r")]
        task = STATE.task
        cpu = task.cpu if task is not None else None
        tlb = cpu.tlb if cpu is not None else None
        pte = None
        if tlb is not None:
            fp.append((cpu, "tlb", "w"))
            fp.append((mm, "cpumask", "w"))       # a fill sets this CPU's bit (shootdowns read it)
            pte = tlb.get((id(mm), addr >> 12))
            if pte is not None:
                if access == 1 and pte & 2 and not pte & _PAGE_DIRTY:
                    pte = None                      # walks to set the dirty bit
                elif not pte & 1 or (access == 1 and not pte & 2) or (access == 2 and pte & _PAGE_NX):
                    return tuple(fp)                # faults
        if pte is None:
            pgd = mm.pgd
            fp.append((pgd, str((addr >> 39) & 511), "r"))
            table = pgd.entries[(addr >> 39) & 511]
            for shift in (30, 21):
                if table is None or table.freed_at is not None:
                    return tuple(fp)
                fp.append((table, str((addr >> shift) & 511), "r"))
                pmd = table
                table = table.entries[(addr >> shift) & 511]
            if type(table) is int:                  # a huge PMD: the entry is the PMD's
                holder, key = pmd, str((addr >> 21) & 511)
                pte = huge_subpage_pte(table, addr)
            else:
                if table is None or table.freed_at is not None:
                    return tuple(fp)
                holder, key = table, str((addr >> 12) & 511)
                pte = table.entries[(addr >> 12) & 511]
            if not pte & 1 or (access == 1 and not pte & 2) or (access == 2 and pte & _PAGE_NX):
                if holder is table:
                    fp.append((holder, key, "r"))
                return tuple(fp)
            # the walk writes the PTE only to set accessed/dirty bits not yet set
            ad = _PAGE_ACCESSED_DIRTY if access == 1 else _PAGE_ACCESSED
            fp.append((holder, key, "r" if pte | ad == pte else "w"))
        mem = mm.kernel.mem
        fp.append((mem, "free", "r"))
        page = mm.pages.get((pte & PTE_PFN_MASK) >> 12)
        if page is not None:
            fp.append((page, "data", "w" if write else "r"))
        return tuple(fp)

    def describe(self) -> str:
        kind = {0: "read", 1: "write", 2: "exec"}[self.access]
        return f"user {kind} {self.addr:#x}"


def mmu_walk(mm: Any, addr: int) -> Any:
    """The MMU's page-table walk (x86's page-miss handler — hardware, not
    kernel code): the PTE table mapping ``addr``, or None when a level is
    missing.  Atomic: it runs inside one op (:class:`UserAccess`), so it
    makes none; every table it reads is checked for use-after-free (a
    table the kernel freed while a CPU could still walk it).  A huge PMD
    ends the walk: its :class:`~specfault.mm.pgtable.HugePmdView`, read
    and updated (accessed/dirty bits) as a PTE table."""
    pud = mm.pgd.entries[(addr >> 39) & 511]
    if pud is None:
        return None
    if pud.freed_at is not None:
        raise UseAfterFree(pud, pud.freed_at, "MMU page-table walk")
    pmd = pud.entries[(addr >> 30) & 511]
    if pmd is None:
        return None
    if pmd.freed_at is not None:
        raise UseAfterFree(pmd, pmd.freed_at, "MMU page-table walk")
    pte = pmd.entries[(addr >> 21) & 511]
    if type(pte) is int:
        return HugePmdView(pmd, (addr >> 21) & 511)     # a 2 MiB translation
    if pte is not None and pte.freed_at is not None:
        raise UseAfterFree(pte, pte.freed_at, "MMU page-table walk")
    return pte


def hw_access(mm: Any, cpu: Any, addr: int, access: int, n: int, data: bytes) -> Any:
    """The MMU and the memory: see :class:`UserAccess`.  Returns the bytes
    read (b"" for a write or exec), or ``FAULT``."""
    vpn = addr >> 12
    tlb = cpu.tlb if cpu is not None else None
    pte = None
    hit = False
    if tlb is not None:
        key = (id(mm), vpn)
        pte = tlb.get(key)
        if pte is not None:
            hit = True
            if access == 1 and pte & 2 and not pte & _PAGE_DIRTY:
                # a store through a clean writable entry: x86 walks the tables
                # to set the dirty bit (faulting, the entry dropped, if the PTE
                # no longer allows it) — MADV_FREE and reclaim rely on the bit
                del tlb[key]
                pte = None
                hit = False
            elif not pte & 1 or (access == 1 and not pte & 2) or (access == 2 and pte & _PAGE_NX):
                del tlb[key]          # x86 drops the entry on the fault
                return FAULT_PROT if pte & 1 else FAULT
    if pte is None:
        table = mmu_walk(mm, addr)            # the page-miss handler
        if table is None:
            return FAULT
        idx = vpn & 511
        pte = table.entries[idx]
        # hw_allows(), inlined: present, RW for writes, not NX for execs
        if not pte & 1 or (access == 1 and not pte & 2) or (access == 2 and pte & _PAGE_NX):
            return FAULT_PROT if pte & 1 else FAULT
        new = pte | (_PAGE_ACCESSED_DIRTY if access == 1 else _PAGE_ACCESSED)
        if new != pte:
            table.entries[idx] = pte = new
        if tlb is not None:
            tlb[key] = pte
            mm.cpumask.add(cpu)
    page = mm.pages.get((pte & PTE_PFN_MASK) >> 12)
    if page is None:
        raise ModelBug(f"user access at {addr:#x} through a PTE to free pfn "
                       f"{(pte & PTE_PFN_MASK) >> 12:#x}")
    if access == 1:
        page.write(addr & 0xFFF, data)
        got = b""
    elif access == 2:
        got = b""
    else:
        got = page.read(addr & 0xFFF, n)
    # the checker's recorder (check/properties.py: TLB coherence, no lost
    # write), attached by the explorer's scenarios only; None elsewhere
    obs = mm.kernel.observer
    if obs is not None:
        obs.user_access(mm, cpu, addr, access, data if access == 1 else got, pte, page, hit)
    return got


async def user_access(mm: Any, addr: int, access: int, n: int = 0, data: bytes = b"",
                      fault: PageFault | None = None, watch: Any = None) -> bytes:
    """One user access within one page, as the CPU executes it: the access
    (:class:`UserAccess`); on a page fault, the arch handler
    (``do_user_addr_fault``: exc_page_fault) and, when it returns, the
    access again — the faulting instruction re-executed — as often as it
    faults.  Returns the bytes read (b"" for a write or exec); raises the
    signal the handler sends (SegmentationFault, BusError, OutOfMemory).

    ``fault``: the access already ran outside any driver (the API's first
    attempt, :func:`hw_access` called directly) and raised this fault: the
    loop starts with its handling.  ``watch``: the simulator's stopwatch —
    ``t0 = watch.start()`` before each attempt, ``watch.fault_done(t0)``
    after each fault handled.

    Locks: none held on entry or on return (the handler takes and drops
    what its protocol needs)."""
    t0 = None
    while True:
        if fault is None:
            if watch is not None:
                t0 = watch.start()
            got = await UserAccess(mm, addr, access, n, data)
            if type(got) is not PageFault:
                return got  # type: ignore[no-any-return]
            fault = got
        await do_user_addr_fault(mm, addr, access, fault.prot)
        fault = None
        if watch is not None:
            watch.fault_done(t0)
