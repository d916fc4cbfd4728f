"""Page migration (mm/migrate.c, mm/rmap.c try_to_migrate) and the
compaction daemon that drives it (mm/compaction.c, kcompactd).

Migration moves an anonymous folio's contents to another frame while the
folio stays mapped, with no mmap_lock, through the reverse map:

1. migrate_folio_unmap: lock the source folio (folio_trylock: the async
   mode compaction uses) and replace every PTE mapping it with a
   *migration entry* (:func:`try_to_migrate`: under each PTE's PTL, the
   TLB flush batched) — a non-present PTE naming the source PFN, writable
   or readable (exclusive), carrying the accessed and dirty bits;
2. flush the TLBs (try_to_unmap_flush): no CPU still writes the source;
3. migrate_folio_move: move_to_new_folio — the source must hold no
   reference but ours (folio_migrate_mapping's refcount check: a GUP pin,
   a COW fault copying from it, a swap-in holding it make it -EAGAIN),
   copy contents and flags to the destination;
4. :func:`remove_migration_ptes` (src, dst): every migration entry naming
   the source, found through the reverse map under its PTL, becomes a PTE
   mapping the destination (writable if the entry was, the page
   AnonExclusive if the entry said so); on failure (src, src): restored;
5. unlock the folios; the source's last reference goes (freed), the
   destination joins the LRU.

A fault that finds a migration entry (memory.do_swap_page) waits for the
source folio's lock — :func:`migration_entry_wait`, holding the fault's
lock (mmap_lock for read or the VMA lock, as Linux 6.18 does) — and
returns 0: the access faults again and finds the destination mapped.  A
speculative fault aborts (SPF_ABORT_SWAP): migration_entry_wait maps the
PTE table under its PTL, which nothing but a lock on the VMA keeps from
being freed.  The zap of a migration entry drops the page's RSS count (a
migration entry counts as the page it stands for); remove_migration_ptes
then finds it gone.

Only anonymous folios outside the swap cache migrate (the model's
compaction isolates no others); file and swap-cache folios would need
their cache's slot replaced (folio_migrate_mapping's xarray part).

Locks: the source folio's lock is held from step 1 to 5 (it is what a
faulting task waits for); each PTE is changed under its PTL; the walks run
under rcu_read_lock (page tables are freed after a grace period).  Linux's
rmap walks also hold the anon_vma lock for read, which excludes a
concurrent fork's anon_vma_fork and mremap's copy_vma / take_rmap_locks;
the model's walks do not (see rmap.py "Locks"), so a fork or mremap
racing a migration of the same folio could leave an entry behind that
Linux would not — no scenario runs one (docs/fidelity.md).

Fields
------
Kernel (kernel.py)
# set by the kcompactd actor, read by it (the explorer's scenario thread)
    (none: kcompactd is stateless here — one pass per wakeup)
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from specfault.mm.page import CopyPage, Page, folio_trylock, folio_unlock, lru_add
from specfault.mm.pgtable import (
    _PAGE_ACCESSED,
    PMD_LEVEL,
    SWP_MIGRATION_READ,
    SWP_MIGRATION_READ_EXCLUSIVE,
    SWP_MIGRATION_WRITE,
    is_migration_entry_dirty,
    is_migration_entry_young,
    is_migration_pte,
    is_readable_exclusive_migration_entry,
    is_writable_migration_entry,
    make_migration_entry,
    mk_pte,
    pte_dirty,
    pte_mkdirty,
    pte_mksoft_dirty,
    pte_mkwrite,
    pte_offset_map_lock,
    pte_soft_dirty,
    pte_swp_mksoft_dirty,
    pte_swp_soft_dirty,
    pte_to_swp_entry,
    pte_write,
    ptep_get_and_clear,
    swp_entry_to_pte,
    swp_offset_pfn,
    walk,
)
from specfault.mm.rmap import TlbUbc, page_vma_mapped, rmap_vmas, try_to_unmap_flush
from specfault.runtime import Load, Op, WaitUntil, load_item, store_item

MIGRATEPAGE_SUCCESS = 0
EAGAIN = 11


# ------------------------------------------------------------ the unmap side
async def rmap_walk(page: Page) -> AsyncIterator[tuple[Any, int]]:
    """``async for vma, addr in rmap_walk(page)``: rmap_walk()'s VMA loop
    (rmap.rmap_vmas) inside one rcu_read_lock section — page tables and
    VMAs are freed after a grace period — taken at the first VMA and
    dropped when the loop ends (every caller runs it to the end)."""
    rcu = None
    for vma, addr in rmap_vmas(page):
        if rcu is None:
            rcu = vma.vm_mm.kernel.rcu
            await rcu.read_lock()
        yield vma, addr
    if rcu is not None:
        await rcu.read_unlock()



async def try_to_migrate(page: Page, ubc: TlbUbc) -> None:
    """try_to_migrate(folio, TTU_BATCH_FLUSH) (mm/rmap.c): replace every PTE
    mapping ``page`` with a migration entry; flushes deferred into ``ubc``.
    Per PTE (try_to_migrate_one), under its PTL:

    1. ptep_get_and_clear (the A/D bits as the MMU left them); a dirty PTE
       makes the folio dirty;
    2. the entry: writable if the PTE was, else readable-exclusive if the
       page was PageAnonExclusive (folio_try_share_anon_rmap_pte clears
       that: the entry carries it), else readable — with the PTE's
       accessed and dirty bits, and its soft-dirty bit;
    3. set_pte_at(entry); folio_remove_rmap_pte and the mapping's
       reference dropped (the caller's isolation reference keeps the
       folio).  The RSS does not change: the entry counts as the page.

    The caller holds the folio lock and a reference; entered and left with
    no other lock (rcu_read_lock and each PTL are taken here)."""
    async for vma, addr in rmap_walk(page):
        mm = vma.vm_mm
        got = await page_vma_mapped(vma, addr, page)
        if got is None:
            continue
        pt, idx, _pte = got
        pteval = await ptep_get_and_clear(pt, idx)
        writable = pte_write(pteval)
        ubc.add(mm, addr, writable)
        if pte_dirty(pteval):
            page.dirty = True
        exclusive = page.anon_exclusive
        if writable:
            type_ = SWP_MIGRATION_WRITE
        elif exclusive:
            type_ = SWP_MIGRATION_READ_EXCLUSIVE
        else:
            type_ = SWP_MIGRATION_READ
        page.anon_exclusive = False                  # folio_try_share_anon_rmap_pte
        swp_pte = swp_entry_to_pte(make_migration_entry(
            type_, page.pfn, young=bool(pteval & _PAGE_ACCESSED), dirty=pte_dirty(pteval)))
        if pte_soft_dirty(pteval):
            swp_pte = pte_swp_mksoft_dirty(swp_pte)
        await store_item(pt, pt.entries, idx, swp_pte)
        page.mapcount -= 1                           # folio_remove_rmap_pte
        mm.kernel.mem.put_page(page)                 # the mapping's reference
        if not mm.config.knob("try_to_unmap_no_ptl"):
            await pt.ptl.unlock()


async def remove_migration_ptes(src: Page, dst: Page) -> None:
    """remove_migration_ptes(src, dst): every migration entry naming
    ``src`` — found through the reverse map (src's anon_vma and index,
    which dst shares), each under its PTL (pte_offset_map_lock: the PMD
    re-checked) — becomes a PTE mapping ``dst`` (remove_migration_pte):
    the VMA's protection, writable if the entry was, accessed / dirty /
    soft-dirty as the entry says; folio_add_anon_rmap_pte with
    RMAP_EXCLUSIVE for a writable or readable-exclusive entry; a reference
    per mapping (folio_get).  (src, src) restores the mappings after a
    failed move.  An entry a zap removed meanwhile is simply not found.

    The caller holds both folios locked and a reference on each; entered
    and left with no other lock."""
    async for vma, addr in rmap_walk(src):
        mm = vma.vm_mm
        pmd = await walk(mm, addr, PMD_LEVEL)
        if pmd.level != PMD_LEVEL:
            continue
        pt = await pte_offset_map_lock(mm, pmd, addr)
        if pt is None:
            continue
        idx = (addr >> 12) & 511
        old = await load_item(pt, pt.entries, idx)
        entry = pte_to_swp_entry(old) if is_migration_pte(old) else 0
        if not entry or swp_offset_pfn(entry) != src.pfn:
            await pt.ptl.unlock()
            continue
        pte = mk_pte(dst.pfn, vma.vm_page_prot)
        if not is_migration_entry_young(entry):
            pte &= ~_PAGE_ACCESSED                   # pte_mkold
        if pte_swp_soft_dirty(old):
            pte = pte_mksoft_dirty(pte)
        if dst.dirty and is_migration_entry_dirty(entry):
            pte = pte_mkdirty(pte)
        writable = is_writable_migration_entry(entry)
        if writable:
            pte = pte_mkwrite(pte)
        dst.refcount += 1                            # folio_get
        dst.mapcount += 1                            # folio_add_anon_rmap_pte
        if writable or is_readable_exclusive_migration_entry(entry):
            dst.anon_exclusive = True                # RMAP_EXCLUSIVE
        await store_item(pt, pt.entries, idx, pte)
        await pt.ptl.unlock()


# ---------------------------------------------------------------- the fault side
async def migration_entry_wait(mm: Any, pmd: Any, address: int) -> None:
    """migration_entry_wait() → __migration_entry_wait(): map the PTE table
    and lock its PTL (pte_offset_map_lock); if the PTE still holds a
    migration entry, wait for the folio it names to be unlocked
    (migration_entry_wait_on_locked: the waiter joins the folio's wait
    queue under the PTL — the migrating task holds a reference and needs
    the PTL to remove the entry, so the folio stays valid until then — and
    sleeps once the PTL is dropped).  Returns when the migration is over
    (or was never there); the caller returns 0 and the access faults again.

    Entered with the fault's lock (mmap_lock for read or the VMA lock: it
    is held while sleeping, as in Linux 6.18) and no PTL; returns with the
    same."""
    pt = await pte_offset_map_lock(mm, pmd, address)
    if pt is None:
        return
    pte = await load_item(pt, pt.entries, (address >> 12) & 511)
    if not is_migration_pte(pte):
        await pt.ptl.unlock()
        return
    folio = mm.kernel.mem.pages.get(swp_offset_pfn(pte_to_swp_entry(pte)))
    await pt.ptl.unlock()
    if folio is None:                                # cannot be: the migrator holds it
        return
    mm.kernel.count("pgmigrate_wait")
    await WaitUntil(lambda: folio.freed or not _locked(folio),
                    f"folio_wait_bit(PG_locked) @{folio.pfn:#x}", (folio,))


def _locked(folio: Page) -> bool:
    lock = folio.lock
    return lock is not None and lock.writer is not None


# --------------------------------------------------------------- the migrator
class IsolateFreePage(Op):
    """compaction_alloc() → isolate_freepages(): the free scanner takes the
    highest free frame (the zone's end) below which nothing is left to
    compact; one step under the zone lock.  Returns the new Page or None
    (no free frame above ``above``: the scanners met)."""

    __slots__ = ("mem", "above")
    kind = "alloc_page"

    def __init__(self, mem: Any, above: int) -> None:
        self.mem = mem
        self.above = above

    def perform(self) -> Page | None:
        mem = self.mem
        if not mem.free_pfns:
            return None
        pfn = max(mem.free_pfns)
        if pfn <= self.above:
            return None
        mem.free_pfns.remove(pfn)
        return mem.take_pfn(pfn)

    def footprint(self) -> tuple[tuple[object, str, str], ...]:
        return ((self.mem, "free", "w"),)

    def describe(self) -> str:
        return "compaction_alloc"


async def migrate_folio(kernel: Any, src: Page, dst: Page) -> int:
    """migrate_folio_unmap() then migrate_folio_move() for one isolated
    anonymous folio ``src`` (a reference held by the caller's isolation)
    into the fresh frame ``dst`` (its allocation reference held): the
    module's steps 1-5.  Returns MIGRATEPAGE_SUCCESS or -EAGAIN (the folio
    is then mapped as before: the caller puts it back on the LRU).  The
    caller drops its references afterwards (src's last one frees it on
    success).  Entered and left with no lock held."""
    mem = kernel.mem
    # 1. lock the source (async mode: never wait)
    if not await folio_trylock(src):
        return -EAGAIN
    if src.swapcache or not src.anon:
        await folio_unlock(src)
        return -EAGAIN
    ubc = TlbUbc()
    if src.mapcount:
        await try_to_migrate(src, ubc)
    # 2. the batched flush, before anything is copied — knob
    #    migration_copy_before_flush (a mutant): after the copy, so a CPU
    #    still holding the old translation stores into the source after
    #    its contents were copied, and the store is lost
    late_flush = kernel.config.knob("migration_copy_before_flush")
    if not late_flush:
        await try_to_unmap_flush(ubc)
    if src.mapcount:                                 # a PTE could not be replaced
        if late_flush:
            await try_to_unmap_flush(ubc)
        await remove_migration_ptes(src, src)
        await folio_unlock(src)
        return -EAGAIN
    await folio_trylock(dst)                         # a new folio: always free
    # 3. move_to_new_folio(): only our isolation reference may remain
    #    (folio_migrate_mapping's expected count for an anon folio)
    if await Load(src, "refcount") != 1:
        if late_flush:
            await try_to_unmap_flush(ubc)
        await remove_migration_ptes(src, src)
        await folio_unlock(dst)
        await folio_unlock(src)
        kernel.count("pgmigrate_fail")
        return -EAGAIN
    await CopyPage(dst, src)                         # folio_mc_copy
    if late_flush:
        await try_to_unmap_flush(ubc)
    dst.anon, dst.mapping, dst.index = True, src.mapping, src.index
    dst.dirty, dst.lazyfree = src.dirty, src.lazyfree    # folio_migrate_flags
    # 4. the entries now name the copy
    await remove_migration_ptes(src, dst)
    # 5. done: the destination joins the LRU (folio_putback_lru's list
    #    add; the caller drops the allocation reference)
    lru_add(mem, dst)
    await folio_unlock(dst)
    await folio_unlock(src)
    kernel.count("pgmigrate_success")
    return MIGRATEPAGE_SUCCESS


async def compact_zone(kernel: Any) -> int:
    """compact_zone() for the model's one zone, one pass: the migration
    scanner walks the frames from the bottom, isolating movable folios
    (anonymous, on an LRU, not in the swap cache: isolate_migratepages),
    the free scanner takes free frames from the top (compaction_alloc);
    each isolated folio is migrated (migrate_pages, MIGRATE_ASYNC) into
    the frame the free scanner found — until the scanners meet.  Returns
    the folios migrated.  Entered and left with no lock held."""
    from specfault.mm.vmscan import IsolateLruFolios, putback_lru_folio

    mem = kernel.mem
    kernel.count("compact_stall")
    moved = 0
    while True:
        def lowest() -> list[Page]:
            free_top = max(mem.free_pfns) if mem.free_pfns else -1
            cand = [p for lst in mem.lru for p in lst.values()
                    if p.anon and not p.swapcache and p.pfn < free_top]
            return [min(cand, key=lambda p: p.pfn)] if cand else []
        got = await IsolateLruFolios(mem, pages=lowest)
        if not got:
            return moved
        src = got[0]
        dst = await IsolateFreePage(mem, src.pfn)
        if dst is None:
            putback_lru_folio(mem, src, False)
            return moved
        rc = await migrate_folio(kernel, src, dst)
        if rc == MIGRATEPAGE_SUCCESS:
            moved += 1
            mem.put_page(src)                        # the isolation reference: freed
        else:
            putback_lru_folio(mem, src, False)
        mem.put_page(dst)                            # the allocation reference
        if rc != MIGRATEPAGE_SUCCESS:
            return moved


async def kcompactd_do_work(kernel: Any) -> int:
    """kcompactd_do_work(): one wakeup of kcompactd — compact the zone
    (compact_zone).  Returns the folios migrated.  A kernel thread: no mm,
    no lock held on entry or return."""
    kernel.count("kcompactd_wake")
    return await compact_zone(kernel)
