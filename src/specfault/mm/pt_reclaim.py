"""Empty PTE-table reclaim (mm/pt_reclaim.c, CONFIG_PT_RECLAIM, Linux 6.14+).

MADV_DONTNEED (zap_page_range_single with ``details->reclaim_pt``) that
zaps a whole PMD's range also frees the PTE table it leaves empty — under
mmap_lock for *read*, so faults (classic, per-VMA, speculative), GUP, the
rmap walkers and other zaps run alongside.  The table leaves the tree
under the PMD table's lock and its own PTL, and is freed after an RCU grace
period (``tlb_remove_ptdesc``: the mmu_gather's table batch, freed through
RCU as MMU_GATHER_RCU_TABLE_FREE frees it; PT_RECLAIM depends on that
option, so with ``page_table_free="ipi"`` nothing is reclaimed).

Who copes with a table vanishing:

* a walker that takes the PTL re-checks the PMD under it
  (``pgtable.pte_offset_map_lock``) and starts again, or gives up (the
  faults then return 0: the access faults again);
* a walker that trusts a non-none PTE it read locklessly re-checks it
  under the PTL (pte_same): a reclaimed table holds only none entries;
* the speculative commit checks pmd_same *under* the PTL it trylocks
  (spf.spf_pte_map_lock step 4) — before it, a reclaimer can detach the
  table between the check and the trylock (mutant spf_pmd_same_before_ptl),
  and without it the fault maps its page into a detached table
  (mutant spf_no_pmd_same);
* every lockless reader holds rcu_read_lock (or interrupts off) while it
  reads a table it found without the PTL: the free waits a grace period
  (mutant pt_reclaim_free_immediate frees at once).

Locks: the PMD entry is cleared holding the PMD table's lock (Linux's split
pmd ptlock, ``pmd_lockptr``) and the PTE table's PTL; the PMD table's
``nr`` changes under the same pair.  ``__pte_alloc`` fills a none entry
under mm.page_table_lock: it never races a clear of the same entry (a
clear needs a table there, a fill needs none, and two fills exclude each
other on page_table_lock).
"""

from __future__ import annotations

from typing import Any

from specfault.mm.pgtable import PMD_SIZE, PageTable
from specfault.runtime import load_item, store_item


def reclaim_pt_is_enabled(mm: Any, start: int, end: int, reclaim_pt: bool) -> bool:
    """reclaim_pt_is_enabled(): the zap asked for it (``details->reclaim_pt``:
    MADV_DONTNEED only), covers a whole PMD's range, and the kernel has
    CONFIG_PT_RECLAIM (knob pt_reclaim; it needs RCU table freeing)."""
    cfg = mm.config
    return reclaim_pt and end - start >= PMD_SIZE and bool(cfg.knob("pt_reclaim")) \
        and cfg.page_table_free != "ipi"


async def try_get_and_clear_pmd(mm: Any, pmd: PageTable, addr: int) -> bool:
    """try_get_and_clear_pmd(): detach the PTE table under ``pmd`` for
    ``addr``, which the caller has just emptied without dropping its PTL —
    if the PMD table's lock is free (spin_trylock: the caller holds a PTL,
    and the lock order is pmd lock, then PTL).  True when detached.

    Entered and left with the PTE table's PTL held (and mmap_lock for
    read); the PMD lock is taken and dropped here."""
    pml = pmd.ptl
    if not await pml.trylock():
        return False
    idx = (addr >> 21) & 511
    await store_item(pmd, pmd.entries, idx, None)        # pmd_clear()
    pmd.nr -= 1
    await pml.unlock()
    return True


async def try_to_free_pte(mm: Any, pmd: PageTable, addr: int, tlb: Any) -> None:
    """try_to_free_pte(): the slow path, after the zap dropped its PTL (or
    failed the trylock): take the PMD lock, then the PTL of the table the
    PMD holds now, check every entry is none, detach and free it.

    Entered with mmap_lock for read and no page-table lock; returns with
    the same."""
    pml = pmd.ptl
    idx = (addr >> 21) & 511
    await pml.lock()
    pt: PageTable | None = await load_item(pmd, pmd.entries, idx)   # pte_offset_map_rw_nolock
    if pt is None:
        await pml.unlock()
        return
    await pt.ptl.lock()                                  # spin_lock_nested()
    # every writer of an entry holds this PTL (the MMU sets accessed/dirty
    # bits only in present entries): the scan needs no op per entry
    empty = pt.nr == 0 and not any(pt.entries)
    if empty:
        await store_item(pmd, pmd.entries, idx, None)    # pmd_clear()
        pmd.nr -= 1
    await pt.ptl.unlock()
    await pml.unlock()
    if empty:
        free_pte(mm, addr, tlb, pt)


def free_pte(mm: Any, addr: int, tlb: Any, pt: PageTable) -> None:
    """free_pte(): pte_free_tlb() — the detached table joins the gather's
    batch, freed after the TLB flush and an RCU grace period
    (tlb_remove_ptdesc) — and mm_dec_nr_ptes().  Knob
    pt_reclaim_free_immediate (a mutant): freed now, while a lockless
    walker (a speculative fault, a fault's walk, GUP) may still read it."""
    mm.kernel.count("pt_reclaim")
    if mm.config.knob("pt_reclaim_free_immediate"):
        mm.kernel.count("nr_page_table_pages", -1)
        pt.poison(f"PTE table reclaimed by {mm.label()}")
        return
    tlb.tables.append(pt)
    tlb.track(pt.base, pt.base + pt.span())
