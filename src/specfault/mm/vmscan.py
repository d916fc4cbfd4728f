"""Page reclaim (mm/vmscan.c): the LRU scan, shrink_folio_list, kswapd
and direct reclaim.

The node has one lruvec (page.py: four lists, oldest first).  Reclaim
isolates folios from the tail of the inactive lists (taking a reference:
folio_isolate_lru), asks the reverse map whether they were used
(``folio_referenced``: the PTEs' accessed bits, which the MMU sets), and
``shrink_folio_list`` reclaims the rest:

1. lock the folio (trylock: a locked folio is busy — skip it);
2. unless told to ignore references (MADV_PAGEOUT), a folio whose PTEs
   were young is kept: activated if used twice (two young PTEs, or young
   again after PG_referenced was set), else marked PG_referenced;
3. an anonymous, swap-backed folio not yet in the swap cache gets a swap
   slot (``add_to_swap``) — no swap device, or swap full: it is kept and
   activated (anonymous memory without swap is not reclaimable);
4. ``try_to_unmap`` clears every PTE mapping it (through the reverse map,
   under each PTL, no mmap_lock; TLB flushes deferred) — a swap PTE for
   swap-backed anonymous folios; a folio still mapped afterwards is kept;
5. a dirty swap-cache folio is written to its slot (``swap_writepage``,
   slow I/O) — after the deferred flushes of writable PTEs
   (try_to_unmap_flush_dirty: no CPU may still store to it); a dirty
   shmem folio first moves to the swap cache (``shmem_writeout``; no
   free slot: kept); a dirty file folio is kept (the model does no file
   writeback from reclaim); on an async swap device (knob
   ``swap_writeback``) the folio written is kept, in the swap cache: the
   write is still in flight, and a later pass frees it (a zero-filled
   folio is not written — the zeromap — and goes on at once);
6. ``__remove_mapping``: if nobody but the cache and us holds it, the
   folio leaves the swap cache (its slot keeps the data) or the page
   cache (the file's backing store keeps it; a clean shmem folio is an
   undirtied hole page, dropped); a lazily freeable one was already
   discarded in 4;
7. unlock; then ``try_to_unmap_flush`` and only then free the folios —
   a CPU holding a stale TLB entry must not reach a freed page (mutant
   ``reclaim_free_before_flush`` frees first).

kswapd (``balance_pgdat``) runs when an allocation leaves free memory
below the low watermark, and reclaims until it is above high; an
allocation below min enters **direct reclaim** (``try_to_free_pages``)
and reclaims SWAP_CLUSTER_MAX pages itself before trying again.  Both
scan work that grows with the pages they look at: counted in
``pgscan_*``/``pgsteal_*`` and charged per page by the simulator
(``Work("reclaim_scan" | "reclaim_unmap", n)``, the swap write as
``swap_write``).

Locks.  Reclaim holds no mmap_lock.  The LRU lists are changed in single
steps (lru_lock); each folio is locked (folio_lock) while it is
reclaimed; PTEs are changed under their PTL (rmap.py).  The caller of
each entry point holds nothing, or (direct reclaim) what the allocating
fault holds — mmap_lock for read or the VMA lock — which reclaim never
needs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from specfault.mm.filemap import shmem_writeout
from specfault.mm.page import (
    LRU_ACTIVE_ANON,
    LRU_ACTIVE_FILE,
    LRU_INACTIVE_ANON,
    LRU_INACTIVE_FILE,
    Page,
    lru_del,
    lru_move,
)
from specfault.mm.rmap import (
    TlbUbc,
    folio_referenced,
    try_to_unmap,
    try_to_unmap_flush,
    try_to_unmap_flush_dirty,
)
from specfault.mm.swap_state import (
    __delete_from_swap_cache,
    add_to_swap,
    folio_trylock,
    swap_writepage,
)
from specfault.mm.swap_state import folio_unlock as _folio_unlock
from specfault.mm.swapfile import nr_swap_pages
from specfault.runtime import Op, Work

SWAP_CLUSTER_MAX = 32
DEF_PRIORITY = 12


class ScanControl:
    """struct scan_control: what one reclaim pass wants and what it did."""

    __slots__ = ("nr_to_reclaim", "nr_scanned", "nr_reclaimed", "ignore_references", "kswapd",
                 "nr_unmapped", "nr_written", "priority")

    def __init__(self, nr_to_reclaim: int = SWAP_CLUSTER_MAX, kswapd: bool = False,
                 ignore_references: bool = False) -> None:
        self.nr_to_reclaim = nr_to_reclaim
        self.nr_scanned = 0
        self.nr_reclaimed = 0
        self.ignore_references = ignore_references
        self.kswapd = kswapd
        self.nr_unmapped = 0
        self.nr_written = 0
        self.priority = 0            # scan size >> priority of each list


def folio_isolate_lru(mem: Any, page: Page) -> bool:
    """folio_isolate_lru(): take the folio off its LRU list; False if it
    is on none (another reclaimer has it, or it was never added).  The
    caller takes a reference in the same step (GetPage) — a folio on the
    LRU has a non-zero refcount, so it cannot be freed meanwhile."""
    if page.lru is None or page.freed:
        return False
    lru_del(mem, page)
    return True


def _is_swapbacked_anon(page: Page) -> bool:
    return page.anon and not page.lazyfree


def can_reclaim_anon_pages(kernel: Any) -> bool:
    """can_reclaim_anon_pages(): is there swap to put anonymous pages in?"""
    return nr_swap_pages(kernel) > 0


async def shrink_folio_list(kernel: Any, folios: list[Page], sc: ScanControl) -> int:
    """shrink_folio_list(): reclaim what can be of ``folios`` (isolated,
    each with a reference held by us); the rest go back to the LRU.
    Returns the number reclaimed (freed).  See the module doc for the
    steps; entered and left with no lock held."""
    mem = kernel.mem
    ubc = TlbUbc()
    free: list[Page] = []
    keep: list[tuple[Page, bool]] = []            # (folio, activate)
    free_before_flush = kernel.config.knob("reclaim_free_before_flush")
    # knob reclaim_no_folio_lock (a mutant): "isolated from the LRU, the
    # folio is ours" — not locked, so a swap-in or a fault holding the folio
    # lock is not kept out (folio_unlock below is then a no-op too)
    unlocked = kernel.config.knob("reclaim_no_folio_lock")

    async def folio_unlock(folio: Page) -> None:
        if not unlocked:
            await _folio_unlock(folio)

    async_swap = kernel.config.knob("swap_writeback") == "async"
    for folio in folios:
        if not unlocked and not await folio_trylock(folio):
            keep.append((folio, False))
            continue
        # 2. folio_check_references()
        if not sc.ignore_references and folio.mapcount:
            refs = await folio_referenced(folio)
            was_referenced = folio.referenced
            folio.referenced = False
            if refs:
                folio.referenced = True
                activate = was_referenced or refs > 1
                await folio_unlock(folio)
                keep.append((folio, activate))
                continue
        # 3. anonymous memory needs a swap slot
        if _is_swapbacked_anon(folio) and not folio.swapcache:
            if not add_to_swap(kernel, folio):
                await folio_unlock(folio)
                keep.append((folio, True))         # activate_locked
                continue
        # 4. unmap it everywhere
        if folio.mapcount:
            n = folio.mapcount
            await try_to_unmap(folio, ubc)
            await Work("reclaim_unmap", n)
            sc.nr_unmapped += n - folio.mapcount
            if folio.mapcount:
                await folio_unlock(folio)
                keep.append((folio, True))
                continue
        # 5. write a dirty swap-cache folio out; a dirty shmem folio goes
        # to the swap cache first (shmem_writeout: no swap — it stays)
        if folio.dirty:
            if not folio.swapcache:
                inode = folio.mapping
                if folio.anon or inode is None or not inode.shmem \
                        or not shmem_writeout(kernel, folio):
                    await folio_unlock(folio)   # dirty file folio: no writeback here
                    keep.append((folio, False))
                    continue
            if not free_before_flush:
                await try_to_unmap_flush_dirty(ubc)
            written = await swap_writepage(kernel, folio)
            sc.nr_written += 1
            if async_swap and written:
                # the write is in flight (PG_writeback): keep the folio, in
                # the swap cache; once written it is clean there, and a
                # later pass frees it (pageout(): PAGE_SUCCESS, writeback)
                await folio_unlock(folio)
                keep.append((folio, False))
                continue
        # 6. __remove_mapping(): only the cache and we may hold it now
        if folio.anon and not folio.swapcache:
            if folio.refcount != 1:
                await folio_unlock(folio)
                keep.append((folio, False))
                continue
            kernel.count("pglazyfreed")
        elif folio.swapcache:
            if folio.refcount != 2 or folio.dirty or folio.mapcount:
                await folio_unlock(folio)
                keep.append((folio, False))
                continue
            __delete_from_swap_cache(kernel, folio)
            mem.put_page(folio)                    # the cache's reference
        else:
            inode = folio.mapping            # a clean shmem folio: an undirtied hole page
            if inode is None or folio.refcount != 2 or folio.dirty:
                await folio_unlock(folio)
                keep.append((folio, False))
                continue
            kernel.fs.remove_mapping(inode, folio)   # drops the cache's reference
        await folio_unlock(folio)
        free.append(folio)
    # 7. flush, then free (free_unref_folios after try_to_unmap_flush)
    if free_before_flush:
        for folio in free:
            mem.put_page(folio)
        await try_to_unmap_flush(ubc)
    else:
        await try_to_unmap_flush(ubc)
        for folio in free:
            mem.put_page(folio)
    for folio, activate in keep:
        putback_lru_folio(mem, folio, activate)
    n = len(free)
    sc.nr_reclaimed += n
    return n


def putback_lru_folio(mem: Any, folio: Page, activate: bool) -> None:
    """folio_putback_lru(): back on its LRU (active if ``activate``), and
    the isolation reference dropped."""
    if activate:
        mem.kernel.count("pgactivate")
    if folio.refcount > 1:          # else ours is the last reference: it goes now
        lru_move(mem, folio, activate or folio.active)
    mem.put_page(folio)


async def reclaim_pages(kernel: Any, folios: list[Page]) -> int:
    """reclaim_pages(): MADV_PAGEOUT's reclaim of the folios it isolated,
    references ignored."""
    if not folios:
        return 0
    return await shrink_folio_list(kernel, folios, ScanControl(len(folios), ignore_references=True))


class IsolateLruFolios(Op):
    """isolate_lru_folios() under lruvec->lru_lock, as one step: up to
    ``nr`` folios from the old end of list ``lru`` — or, with ``pages``
    (a function called inside the step, naming the folios wanted), those
    of them still on an LRU list — each taken off its list with a
    reference (folio_try_get in the same critical section).  Returns the
    list isolated."""

    __slots__ = ("mem", "lru", "nr", "pages")
    kind = "lru_isolate"

    def __init__(self, mem: Any, lru: int = 0, nr: int = 0,
                 pages: Callable[[], list[Page]] | None = None) -> None:
        self.mem = mem
        self.lru = lru
        self.nr = nr
        self.pages = pages

    def perform(self) -> list[Page]:
        mem = self.mem
        if self.pages is not None:
            cand = [p for p in self.pages() if p.lru is not None and not p.freed]
        else:
            lst = mem.lru[self.lru]
            cand = [lst[pfn] for pfn in list(lst)[:self.nr]]
        for page in cand:
            lru_del(mem, page)
            page.refcount += 1
        return cand

    def footprint(self) -> tuple[tuple[object, str, str], ...]:
        return ((self.mem, "lru", "w"),)

    def describe(self) -> str:
        return "isolate_lru_folios" + (f" list {self.lru} x{self.nr}" if self.pages is None else "")


def isolate_lru_folios(mem: Any, lru: int, nr: int) -> IsolateLruFolios:
    """``folios = await isolate_lru_folios(mem, lru, nr)``: see
    :class:`IsolateLruFolios`."""
    return IsolateLruFolios(mem, lru, nr)


async def shrink_active_list(kernel: Any, lru: int, nr: int) -> None:
    """shrink_active_list(): age the active list — folios whose PTEs were
    not young go to the inactive list (their accessed bits cleared)."""
    mem = kernel.mem
    folios = await isolate_lru_folios(mem, lru, nr)
    kernel.count("pgrefill", len(folios))
    await Work("reclaim_scan", len(folios))
    for folio in folios:
        refs = await folio_referenced(folio) if folio.mapcount else 0
        if not refs:
            kernel.count("pgdeactivate")
        folio.active = bool(refs)
        putback_lru_folio(mem, folio, False)


async def shrink_inactive_list(kernel: Any, lru: int, nr: int, sc: ScanControl) -> int:
    """shrink_inactive_list(): isolate ``nr`` folios from the inactive list
    ``lru`` and shrink them."""
    folios = await isolate_lru_folios(kernel.mem, lru, nr)
    if not folios:
        return 0
    sc.nr_scanned += len(folios)
    kernel.count("pgscan_kswapd" if sc.kswapd else "pgscan_direct", len(folios))
    kernel.count("pgscan_anon" if lru == LRU_INACTIVE_ANON else "pgscan_file", len(folios))
    await Work("reclaim_scan", len(folios))
    n = await shrink_folio_list(kernel, folios, sc)
    kernel.count("pgsteal_kswapd" if sc.kswapd else "pgsteal_direct", n)
    kernel.count("pgsteal_anon" if lru == LRU_INACTIVE_ANON else "pgsteal_file", n)
    return n


async def shrink_lruvec(kernel: Any, sc: ScanControl) -> None:
    """shrink_lruvec() for the one node at ``sc.priority``: scan each
    evictable inactive list ``size >> priority`` folios (get_scan_count;
    anonymous lists only when there is swap — file first, as a default
    swappiness favours), SWAP_CLUSTER_MAX at a time, refilling an inactive
    list from its active one when it runs short (inactive_is_low), until
    ``sc.nr_to_reclaim`` folios are reclaimed."""
    mem = kernel.mem
    lrus = [LRU_INACTIVE_FILE]
    if can_reclaim_anon_pages(kernel):
        lrus.append(LRU_INACTIVE_ANON)
    for lru in lrus:
        active = LRU_ACTIVE_FILE if lru == LRU_INACTIVE_FILE else LRU_ACTIVE_ANON
        budget = (len(mem.lru[lru]) + len(mem.lru[active])) >> sc.priority
        while sc.nr_reclaimed < sc.nr_to_reclaim and budget > 0:
            if len(mem.lru[lru]) < len(mem.lru[active]):        # inactive_is_low()
                await shrink_active_list(kernel, active, min(SWAP_CLUSTER_MAX, budget))
            nr = min(SWAP_CLUSTER_MAX, len(mem.lru[lru]), budget)
            if not nr:
                break
            budget -= nr
            await shrink_inactive_list(kernel, lru, nr, sc)


async def try_to_free_pages(kernel: Any) -> int:
    """try_to_free_pages() / do_try_to_free_pages(): direct reclaim by an
    allocating task, for SWAP_CLUSTER_MAX pages, at falling priorities
    (DEF_PRIORITY down to 0: each pass scans twice as much) until enough
    is reclaimed.  The caller may hold mmap_lock (read) or a VMA lock (the
    faulting task); reclaim takes neither."""
    kernel.count("allocstall")
    sc = ScanControl(SWAP_CLUSTER_MAX)
    for priority in range(DEF_PRIORITY, -1, -1):
        sc.priority = priority
        await shrink_lruvec(kernel, sc)
        if sc.nr_reclaimed >= sc.nr_to_reclaim:
            break
    return sc.nr_reclaimed


async def balance_pgdat(kernel: Any) -> int:
    """balance_pgdat(): kswapd's pass — reclaim at falling priorities
    (DEF_PRIORITY down to 1) until free memory is above the high watermark
    (pgdat_balanced)."""
    mem = kernel.mem
    kernel.count("pageoutrun")
    sc = ScanControl(0, kswapd=True)
    for priority in range(DEF_PRIORITY, 0, -1):
        if mem.nr_free() >= mem.watermark["high"]:
            break
        sc.priority = priority
        sc.nr_to_reclaim = sc.nr_reclaimed + max(SWAP_CLUSTER_MAX,
                                                 mem.watermark["high"] - mem.nr_free())
        await shrink_lruvec(kernel, sc)
    return sc.nr_reclaimed


def wakeup_kswapd(kernel: Any) -> None:
    """wakeup_kswapd(): an allocation found free memory below low."""
    if not kernel.kswapd_wait:
        kernel.kswapd_wait = True
        kernel.count("kswapd_wake")


async def kswapd_run(kernel: Any) -> int:
    """One wakeup of kswapd (the loop body of kswapd()): if woken, balance
    the node and sleep again.  Returns the pages reclaimed."""
    if not kernel.kswapd_wait:
        return 0
    kernel.kswapd_wait = False
    return await balance_pgdat(kernel)


async def alloc_pages_slowpath(kernel: Any) -> Page | None:
    """alloc_pages_slowpath(): the allocation found free memory at or
    below the low watermark: wake kswapd; at or below min, reclaim
    directly (__alloc_pages_direct_reclaim) first; then allocate — None
    (the caller's VM_FAULT_OOM) if nothing is free even so.  page.alloc_page
    sends allocations here (PhysMem.slowpath, set by the Kernel)."""
    mem = kernel.mem
    wakeup_kswapd(kernel)
    if mem.nr_free() <= mem.watermark["min"]:
        await try_to_free_pages(kernel)
    return await mem.alloc_op  # type: ignore[no-any-return]


__all__ = ["DEF_PRIORITY", "SWAP_CLUSTER_MAX", "IsolateLruFolios", "ScanControl",
           "alloc_pages_slowpath", "balance_pgdat", "folio_isolate_lru", "isolate_lru_folios",
           "kswapd_run", "reclaim_pages", "shrink_folio_list", "try_to_free_pages",
           "wakeup_kswapd"]
