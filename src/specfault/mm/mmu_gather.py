"""Tearing down mappings (mm/memory.c zap_*, mm/mmu_gather.c).

Pages unmapped by a zap are not freed at once: other CPUs may still hold
TLB entries for them.  The mmu_gather collects them, flushes the TLBs, and
only then drops the references.  Page tables freed by ``free_pgtables`` go
through the gather too and are freed after the flush in one of two ways
(``Config.page_table_free``):

* ``"rcu"``  (MMU_GATHER_RCU_TABLE_FREE) — after an RCU grace period, so
  lockless walkers under ``rcu_read_lock()`` are safe;
* ``"ipi"``  — after an IPI round that a CPU with interrupts disabled
  cannot acknowledge, so walkers with interrupts off are safe (fast GUP);
* ``"immediate"`` — a mutant: freed at once.

Locks: the caller holds mmap_lock (write for munmap/mremap/exit, read for
MADV_DONTNEED); zap_pte_range takes each table's PTL (pte_offset_map_lock:
a racing MADV_DONTNEED may have reclaimed it) and, reclaiming an emptied
table (pt_reclaim.py), the PMD table's lock.  A table detached by reclaim
joins ``tables`` like free_pgtables' and is freed the same way.
"""

from __future__ import annotations

from typing import Any

from specfault.mm.huge_memory import __split_huge_pmd, zap_huge_pmd
from specfault.mm.page import Page, rss_kind  # noqa: F401  (rss_kind: re-exported)
from specfault.mm.pgtable import (
    LEVEL_SHIFT,
    PMD_LEVEL,
    PMD_SIZE,
    PageTable,
    addr_end,
    is_swap_pte,
    non_swap_entry,
    pmd_trans_huge,
    pte_dirty,
    pte_offset_map_lock,
    pte_pfn,
    pte_present,
    pte_special,
    pte_to_swp_entry,
    swp_offset_pfn,
    walk,
)
from specfault.mm.pt_reclaim import free_pte, reclaim_pt_is_enabled, try_get_and_clear_pmd, try_to_free_pte
from specfault.mm.swap_state import free_swap_and_cache, free_swap_cache
from specfault.mm.tlb import flush_tlb_range
from specfault.runtime import LoadItem, StoreItem, Work


class MmuGather:
    """struct mmu_gather: pages and tables to free after the TLB flush."""

    __slots__ = ("mm", "pages", "tables", "start", "end")

    def __init__(self, mm: Any) -> None:
        self.mm = mm
        self.pages: list[Page] = []
        self.tables: list[PageTable] = []
        self.start = 1 << 64
        self.end = 0
        mm.tlb_flush_pending += 1          # tlb_gather_mmu(): inc_tlb_flush_pending()

    def track(self, start: int, end: int) -> None:
        self.start = min(self.start, start)
        self.end = max(self.end, end)

    async def finish(self) -> None:
        """tlb_finish_mmu(): flush, then free pages, then free tables."""
        mm = self.mm
        mem = mm.kernel.mem
        # knob tlb_free_pages_before_flush (a mutant): the batch of pages is
        # freed before the TLB flush — a CPU still holding an entry for one
        # of them reads or writes a freed (or reused) frame
        if mm.config.knob("tlb_free_pages_before_flush"):
            for page in self.pages:
                mem.put_page(page)
            self.pages = []
        if self.end > self.start:
            mm.kernel.count("tlb_flush")
            await flush_tlb_range(mm, self.start, self.end)
        mm.tlb_flush_pending -= 1          # dec_tlb_flush_pending(), after the flush
        for page in self.pages:
            if page.swapcache:
                free_swap_cache(mm.kernel, page)
            mem.put_page(page)
        self.pages = []
        if self.tables:
            await free_tables(mm, self.tables)
            self.tables = []


async def free_tables(mm: Any, tables: list[PageTable]) -> None:
    site = f"page tables freed by {mm.label()}"
    mm.kernel.count("nr_page_table_pages", -len(tables))

    def free() -> None:
        for t in tables:
            t.poison(site)

    mode = mm.config.page_table_free
    if mode == "rcu":
        await mm.kernel.rcu.call_rcu(free, "page tables", tuple((t, "*", "w") for t in tables))
    elif mode == "ipi":
        from specfault.mm import tlb as _tlb
        sync = getattr(_tlb, "tlb_remove_table_sync_one", None)
        if sync is not None:
            await sync(mm)
        free()
    else:  # "immediate": a mutant
        free()


async def zap_pte_range(tlb: MmuGather, vma: Any, pmd: PageTable, start: int, end: int,
                        reclaim_pt: bool = False) -> int:
    """zap_pte_range(): clear the PTEs of [start, end) (within one PMD's
    range) in the PTE table ``pmd`` holds, under its PTL:

    1. pte_offset_map_lock (the table may have been reclaimed by a racing
       MADV_DONTNEED: none there, nothing to zap);
    2. clear every non-none entry, queueing its page for the gather;
    3. ``reclaim_pt`` (MADV_DONTNEED's details->reclaim_pt) and the range
       is the whole table (reclaim_pt_is_enabled): still under the PTL,
       the table is empty — detach it (try_get_and_clear_pmd) if the PMD
       lock is free;
    4. unlock; a detached table is freed through the gather (free_pte),
       else try_to_free_pte takes the locks in order and checks again.

    Entered with mmap_lock (read for MADV_DONTNEED, write for munmap and
    exit) and no page-table lock; returns with the same, and the number of
    PTEs the range spans (0 when there was no table)."""
    mm = tlb.mm
    mem = mm.kernel.mem
    can_reclaim_pt = reclaim_pt_is_enabled(mm, start, end, reclaim_pt)
    pt = await pte_offset_map_lock(mm, pmd, start)
    if pt is None:
        return 0
    lo = (start - pt.base) >> 12
    hi = (end - pt.base) >> 12
    for i in range(lo, hi):
        # none entries are skipped without an op: every writer of an entry
        # holds this PTL (do_zap_pte_range skips a run of none PTEs)
        if pt.entries[i] == 0:
            continue
        pte = await LoadItem(pt, pt.entries, i)
        await StoreItem(pt, pt.entries, i, 0)    # ptep_get_and_clear_full
        pt.nr -= 1
        if is_swap_pte(pte):
            entry = pte_to_swp_entry(pte)
            if non_swap_entry(entry):
                # zap_nonpresent_ptes(): a migration entry counts as the
                # page it stands for (remove_migration_ptes finds it gone)
                mm.rss[rss_kind(mem.pages[swp_offset_pfn(entry)])] -= 1
                continue
            # zap_nonpresent_ptes(): the swap entry's reference goes
            mm.rss["swap"] -= 1
            free_swap_and_cache(mm.kernel, entry)
            continue
        if not pte_present(pte) or pte_special(pte):
            continue
        zap_present_page(tlb, pte, mem.pages[pte_pfn(pte)])
    direct_reclaim = can_reclaim_pt and await try_get_and_clear_pmd(mm, pmd, start)
    await pt.ptl.unlock()
    tlb.track(start, end)
    if direct_reclaim:
        free_pte(mm, start, tlb, pt)
    elif can_reclaim_pt:
        await try_to_free_pte(mm, pmd, start, tlb)
    return hi - lo


async def unmap_page_range(tlb: MmuGather, vma: Any, start: int, end: int,
                           reclaim_pt: bool = False) -> None:
    """zap every PTE of ``vma`` in [start, end): zap_pmd_range's loop, one
    zap_pte_range per PMD entry (a range with no PMD table is skipped
    whole).  ``reclaim_pt``: MADV_DONTNEED's zap_details (pt_reclaim.py).
    Locks as zap_pte_range."""
    start = max(start, vma.vm_start)
    end = min(end, vma.vm_end)
    if start >= end:
        return
    ptes = 0
    addr = start
    while addr < end:
        pmd = await walk(tlb.mm, addr, PMD_LEVEL)
        nxt = addr_end(pmd, addr, end) if pmd.level != PMD_LEVEL else \
            min((addr | (PMD_SIZE - 1)) + 1, end)
        if pmd.level == PMD_LEVEL:
            # a plain read: zap_huge_pmd re-checks under the PMD lock
            if pmd_trans_huge(pmd.entries[(addr >> 21) & 511]):
                # zap_pmd_range() on a huge PMD: zap_huge_pmd when the range
                # covers it whole, else split it and zap the PTEs of the part
                if nxt - addr == PMD_SIZE and await zap_huge_pmd(tlb, vma, pmd, addr):
                    addr = nxt
                    continue
                await __split_huge_pmd(vma, pmd, addr)
            ptes += await zap_pte_range(tlb, vma, pmd, addr, nxt, reclaim_pt)
        addr = nxt
    # zap_pte_range() walks the PTEs of the tables that exist; a range
    # with no PTE table (pmd_none) is skipped whole
    await Work("zap", ptes)


async def free_pgtables(tlb: MmuGather, floor: int, ceiling: int, start: int, end: int) -> None:
    """free_pgd_range(): detach the page tables that map only addresses in
    [floor, ceiling) (no VMA remains there) and overlap [start, end); the
    gather frees them after the flush.  Caller holds mmap_lock for write."""
    if start >= end:
        return
    detach: list[tuple[PageTable, int, PageTable]] = []
    _free_level(tlb, tlb.mm.pgd, floor, ceiling, start, end, detach)
    for parent, i, _child in detach:
        await StoreItem(parent, parent.entries, i, None)     # pmd_clear() etc.


def _free_level(tlb: MmuGather, table: PageTable, floor: int, ceiling: int, start: int,
                end: int, detach: list[tuple[PageTable, int, PageTable]]) -> bool:
    """Collect the tables to detach; returns True if ``table`` ends up empty."""
    shift = LEVEL_SHIFT[table.level]
    span = 1 << shift
    first = max(0, (start - table.base) >> shift)
    last = min(511, (end - 1 - table.base) >> shift)
    for i in range(first, last + 1):
        child = table.entries[i]
        if child is None:
            continue
        if type(child) is int:
            raise AssertionError(f"free_pgtables: a huge PMD at {table.base + i * (1 << shift):#x} "
                                 f"was not zapped")
        lo = table.base + i * span
        hi = lo + span
        if floor <= lo and hi <= ceiling:
            _detach(tlb, table, i, child, detach)
        elif child.level > 1:
            _free_level(tlb, child, floor, ceiling, max(start, lo), min(end, hi), detach)
    return table.nr == 0


def _detach(tlb: MmuGather, parent: PageTable, i: int, child: PageTable,
            detach: list[tuple[PageTable, int, PageTable]]) -> None:
    """pmd_clear() + pte_free_tlb(): the table leaves the tree now, is
    freed after the flush.  Its entries must already be zapped."""
    for t in _subtree(child):
        if t.level == 1 and t.nr:
            raise AssertionError(f"free_pgtables: {t.label()} still maps {t.nr} pages")
        tlb.tables.append(t)
    detach.append((parent, i, child))
    parent.nr -= 1
    tlb.track(child.base, child.base + child.span())


def _subtree(t: PageTable) -> list[PageTable]:
    out = [t]
    if t.level > 1:
        for c in t.entries:
            if type(c) is int:
                raise AssertionError(f"free_pgtables: {t.label()} still holds a huge PMD")
            if c is not None:
                out.extend(_subtree(c))
    return out


def zap_present_page(tlb: MmuGather, pte: int, page: Any) -> None:
    """zap_present_folio_ptes() for one page whose PTE the caller has just
    cleared under the PTL: carry the PTE's dirty bit to a file page
    (folio_mark_dirty), drop the mapping (folio_remove_rmap_pte), the RSS
    count, and queue the page's reference for freeing after the TLB flush
    (tlb_remove_page)."""
    if pte_dirty(pte) and not page.anon:
        page.dirty = True
    page.mapcount -= 1
    if page.mapcount == 0:
        page.anon_exclusive = False
    tlb.mm.rss[rss_kind(page)] -= 1
    tlb.pages.append(page)
