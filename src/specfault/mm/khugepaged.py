"""khugepaged and MADV_COLLAPSE (mm/khugepaged.c), anonymous memory only.

A PTE table whose pages are all anonymous (or none) becomes one huge PMD:
the pages are copied into a new THP and the table is replaced — the
writer that changes a PMD entry from a PTE table to something else while
the fault paths may hold the table (the speculative commit's ``pmd_same``
re-check, spf.py, exists for writers like it).

The scan (:func:`hpage_collapse_scan_pmd`) runs under mmap_lock for read;
the collapse (:func:`collapse_huge_page`) drops it to allocate, then takes
it for write, write-locks the VMA, clears the PMD (pmdp_collapse_flush),
isolates and copies the pages under the PTE table's PTL and installs the
huge PMD under the PMD lock.  khugepaged is a kernel thread
(:func:`khugepaged_do_scan`: one pass over the registered mms, run by the
direct driver on request — ``Machine.khugepaged()`` — or as an actor the
explorer schedules); MADV_COLLAPSE (:func:`madvise_collapse`) does the
same synchronously for a range, ignoring the sysfs mode and khugepaged's
limits (max_ptes_none, max_ptes_shared, the referenced test).

Not modelled: the anon_vma lock (the model's reverse-map walkers take
none: they validate each PTE under its PTL), swap-in of swapped PTEs
before a collapse (a swap PTE fails the scan: SCAN_PTE_NON_PRESENT), file
and shmem collapse, mTHP orders, khugepaged's sleep and defrag settings.
"""

from __future__ import annotations

import errno
from typing import Any

from specfault.mm.huge_memory import (
    TVA_FORCED_COLLAPSE,
    TVA_KHUGEPAGED,
    map_anon_folio_pmd,
    pmd_index,
    thp_vma_allowable_order,
    thp_vma_suitable_order,
)
from specfault.mm.mmap_lock import (
    mmap_read_lock,
    mmap_read_unlock,
    mmap_write_lock,
    mmap_write_unlock,
    vma_start_write,
)
from specfault.mm.page import (
    AllocHugePage,
    Page,
    folio_page,
    folio_test_locked,
    folio_trylock,
    folio_unlock,
    lru_add,
    lru_del,
    put_page,
)
from specfault.mm.pgtable import (
    _PAGE_ACCESSED,
    HPAGE_PMD_MASK,
    HPAGE_PMD_NR,
    HPAGE_PMD_SIZE,
    PMD_LEVEL,
    PageTable,
    is_swap_pte,
    pmd_trans_huge,
    pte_none,
    pte_pfn,
    pte_special,
    walk,
)
from specfault.mm.tlb import flush_tlb_range, tlb_remove_table_sync_one
from specfault.runtime import ModelBug, Op, UseAfterFree, Work, load_item, store_item

# /sys/kernel/mm/transparent_hugepage/khugepaged/* defaults (HPAGE_PMD_NR - 1,
# HPAGE_PMD_NR / 8, HPAGE_PMD_NR / 2, HPAGE_PMD_NR * 8)
KHUGEPAGED_MAX_PTES_NONE = HPAGE_PMD_NR - 1
KHUGEPAGED_MAX_PTES_SWAP = HPAGE_PMD_NR // 8
KHUGEPAGED_MAX_PTES_SHARED = HPAGE_PMD_NR // 2
KHUGEPAGED_PAGES_TO_SCAN = HPAGE_PMD_NR * 8

# enum scan_result (the ones the model can reach)
SCAN_FAIL = "SCAN_FAIL"
SCAN_SUCCEED = "SCAN_SUCCEED"
SCAN_PMD_NULL = "SCAN_PMD_NULL"
SCAN_PMD_MAPPED = "SCAN_PMD_MAPPED"
SCAN_EXCEED_NONE_PTE = "SCAN_EXCEED_NONE_PTE"
SCAN_EXCEED_SHARED_PTE = "SCAN_EXCEED_SHARED_PTE"
SCAN_PTE_NON_PRESENT = "SCAN_PTE_NON_PRESENT"
SCAN_LACK_REFERENCED_PAGE = "SCAN_LACK_REFERENCED_PAGE"
SCAN_PAGE_ANON = "SCAN_PAGE_ANON"
SCAN_PAGE_LOCK = "SCAN_PAGE_LOCK"
SCAN_PAGE_LRU = "SCAN_PAGE_LRU"
SCAN_PAGE_COUNT = "SCAN_PAGE_COUNT"
SCAN_ANY_PROCESS = "SCAN_ANY_PROCESS"
SCAN_VMA_NULL = "SCAN_VMA_NULL"
SCAN_VMA_CHECK = "SCAN_VMA_CHECK"
SCAN_ADDRESS_RANGE = "SCAN_ADDRESS_RANGE"
SCAN_ALLOC_HUGE_PAGE_FAIL = "SCAN_ALLOC_HUGE_PAGE_FAIL"


class PteBatch(Op):
    """The 512 PTEs of a PTE table read in one step (``clear``: and each
    set to none, counted) — the collapse's loops over a table whose PTL it
    holds, as one op: under the PTL no other CPU changes a PTE but the MMU,
    which sets accessed/dirty bits only through a translation the collapse
    has flushed (or, in the scan, a bit that only sways the referenced
    test).  Its footprint names every entry, so the explorer orders it
    against a lockless reader of the table (the speculative walk).
    Returns the entries as they were."""

    __slots__ = ("pt", "clear")
    kind = "pte_batch"

    def __init__(self, pt: PageTable, clear: bool = False) -> None:
        self.pt = pt
        self.clear = clear

    def perform(self) -> list[int]:
        pt = self.pt
        if pt.freed_at is not None:
            raise UseAfterFree(pt, pt.freed_at, "PTE table scan")
        old = list(pt.entries)
        if self.clear:
            pt.entries[:] = [0] * HPAGE_PMD_NR            # ptep_clear() of each
            pt.nr = 0
        return old

    def footprint(self) -> tuple[tuple[object, str, str], ...]:
        mode = "w" if self.clear else "r"
        return tuple((self.pt, str(i), mode) for i in range(HPAGE_PMD_NR))

    def describe(self) -> str:
        return f"{'clear' if self.clear else 'scan'} {self.pt.label()}"


class CollapseControl:
    """struct collapse_control: khugepaged's limits, or none (MADV_COLLAPSE)."""

    __slots__ = ("is_khugepaged",)

    def __init__(self, is_khugepaged: bool) -> None:
        self.is_khugepaged = is_khugepaged


def _collapse_pte(mem: Any, pte: int) -> tuple[str, Page | None]:
    """What one PTE of a table to collapse holds: (SCAN_SUCCEED, None) for
    none or the zero page, (SCAN_SUCCEED, page) for an anonymous page, or
    the reason it cannot be collapsed (a swap entry, a file page)."""
    if pte_none(pte) or (not is_swap_pte(pte) and pte_special(pte)):
        return SCAN_SUCCEED, None
    if is_swap_pte(pte):
        return SCAN_PTE_NON_PRESENT, None
    page = mem.pages[pte_pfn(pte)]
    if not page.anon:
        return SCAN_PAGE_ANON, None
    return SCAN_SUCCEED, page


def _is_refcount_suitable(page: Page) -> bool:
    """is_refcount_suitable(): no reference but the mappings' (and the swap
    cache's): nobody else (GUP, a fault in flight) holds the page."""
    return page.refcount == page.mapcount + int(page.swapcache)


async def find_pmd_or_thp_or_none(mm: Any, address: int) -> tuple[str, PageTable | None]:
    """The PMD table for ``address`` if its entry is a PTE table
    (SCAN_SUCCEED), else why not.  Caller holds mmap_lock."""
    pmd = await walk(mm, address, PMD_LEVEL)
    if pmd.level != PMD_LEVEL:
        return SCAN_PMD_NULL, None
    entry = await load_item(pmd, pmd.entries, pmd_index(address))
    if entry is None:
        return SCAN_PMD_NULL, None
    if pmd_trans_huge(entry):
        return SCAN_PMD_MAPPED, None
    return SCAN_SUCCEED, pmd


async def hugepage_vma_revalidate(mm: Any, address: int, cc: CollapseControl) -> tuple[str, Any]:
    """After retaking mmap_lock: the VMA at ``address`` still there, still
    allowed a THP over the whole 2 MiB range, still anonymous with an
    anon_vma."""
    if mm.dead:
        return SCAN_ANY_PROCESS, None
    vma = mm.vma_lookup(address)
    if vma is None:
        return SCAN_VMA_NULL, None
    if not thp_vma_suitable_order(vma, address):
        return SCAN_ADDRESS_RANGE, None
    if not thp_vma_allowable_order(vma, TVA_KHUGEPAGED if cc.is_khugepaged
                                   else TVA_FORCED_COLLAPSE):
        return SCAN_VMA_CHECK, None
    return SCAN_SUCCEED, vma


async def hpage_collapse_scan_pmd(mm: Any, vma: Any, address: int,
                                  cc: CollapseControl) -> tuple[str, bool]:
    """hpage_collapse_scan_pmd(): is the PTE table at ``address`` (2 MiB
    aligned) worth collapsing, and if so collapse it.  Entered with
    mmap_lock held for read; returns (result, still locked) — a collapse
    drops the lock.

    Each PTE: none or the zero page counts against max_ptes_none
    (khugepaged only); a swap PTE fails (the model does not swap in for a
    collapse); a page must be anonymous, not shared more than
    max_ptes_shared times (khugepaged only), unlocked, on the LRU, and
    held only by its mappings; for khugepaged one page must be referenced
    (young).  A read-only range collapses too (MADV_COLLAPSE on the
    reference host collapses one mprotect'ed PROT_READ)."""
    mem = mm.kernel.mem
    result, pmd = await find_pmd_or_thp_or_none(mm, address)
    if result != SCAN_SUCCEED:
        return result, True
    assert pmd is not None
    pt = await load_item(pmd, pmd.entries, pmd_index(address))
    if not isinstance(pt, PageTable):
        return SCAN_PMD_NULL, True                 # changed since (mmap_lock is only read)
    await pt.ptl.lock()
    none_or_zero = shared = referenced = 0
    result = SCAN_SUCCEED
    for pte in await PteBatch(pt):
        result, page = _collapse_pte(mem, pte)
        if result != SCAN_SUCCEED:
            break
        if page is None:
            none_or_zero += 1
            if cc.is_khugepaged and none_or_zero > KHUGEPAGED_MAX_PTES_NONE:
                result = SCAN_EXCEED_NONE_PTE
                break
            continue
        if page.mapcount > 1:
            shared += 1
            if cc.is_khugepaged and shared > KHUGEPAGED_MAX_PTES_SHARED:
                result = SCAN_EXCEED_SHARED_PTE
                break
        if folio_test_locked(page):
            result = SCAN_PAGE_LOCK
            break
        if page.lru is None:
            result = SCAN_PAGE_LRU
            break
        if not _is_refcount_suitable(page):
            result = SCAN_PAGE_COUNT
            break
        if pte & _PAGE_ACCESSED or page.referenced:
            referenced += 1
    await pt.ptl.unlock()
    if result == SCAN_SUCCEED and cc.is_khugepaged and not referenced:
        result = SCAN_LACK_REFERENCED_PAGE
    if result != SCAN_SUCCEED:
        return result, True
    return await collapse_huge_page(mm, address, cc), False


async def collapse_huge_page(mm: Any, address: int, cc: CollapseControl) -> str:
    """collapse_huge_page() (Linux 6.18, anonymous, PMD order):

    1. drop mmap_lock (read) and allocate the THP (thp_collapse_alloc, or
       thp_collapse_alloc_failed: SCAN_ALLOC_HUGE_PAGE_FAIL);
    2. mmap_lock for read: revalidate the VMA, find the PMD (still a PTE
       table); drop it;
    3. mmap_lock for write (no fault of the classic path runs now), then
       revalidate, write-lock the VMA (no per-VMA fault either; knob
       collapse_vma_start_write), and check
       the PMD still holds a PTE table — only the speculative path and
       the lockless walkers (MMU, GUP-fast) can still be looking at it;
    4. under the PMD lock, clear the PMD (pmdp_collapse_flush: the entry
       none, the TLBs flushed); then an IPI round (tlb_remove_table_sync_one)
       so no interrupts-off walker still uses the old table;
    5. under the old table's PTL, isolate every page
       (__collapse_huge_page_isolate: locked, off the LRU, held only by
       its mappings); any failure puts the table back (pmd_populate) and
       gives up;
    6. copy the pages (none and zero pages: zeroes) into the THP, clear the
       old PTEs and drop their pages (__collapse_huge_page_copy);
    7. under the PMD lock, map the THP (the old table becomes the one
       Linux deposits for a later split);
    8. mmap_lock (write) released.

    Entered with mmap_lock held for read; returns with it released."""
    mem = mm.kernel.mem
    await mmap_read_unlock(mm)                                            # 1
    folio = await AllocHugePage(mem)
    if folio is None:
        mm.kernel.count("thp_collapse_alloc_failed")
        return SCAN_ALLOC_HUGE_PAGE_FAIL
    mm.kernel.count("thp_collapse_alloc")
    haddr = address & HPAGE_PMD_MASK
    await mmap_read_lock(mm)                                              # 2
    result, vma = await hugepage_vma_revalidate(mm, haddr, cc)
    if result == SCAN_SUCCEED:
        result, _ = await find_pmd_or_thp_or_none(mm, haddr)
    await mmap_read_unlock(mm)
    if result != SCAN_SUCCEED:
        await _free_folio(mem, folio)
        return result
    await mmap_write_lock(mm)                                             # 3
    try:
        result, vma = await hugepage_vma_revalidate(mm, haddr, cc)
        if result != SCAN_SUCCEED:
            await _free_folio(mem, folio)
            return result
        # knob collapse_vma_start_write: Linux 6.4+ write-locks the VMA here
        # (no per-VMA fault can run); the kernels of Dufour's SPF had no
        # such step: collapse took mmap_lock for write only, and nothing
        # bumps the VMA's sequence — the speculative commit's pmd_same is
        # then what sees the table go
        if mm.config.knob("collapse_vma_start_write"):
            await vma_start_write(vma)
        result, pmd = await find_pmd_or_thp_or_none(mm, haddr)
        if result != SCAN_SUCCEED:
            await _free_folio(mem, folio)
            return result
        assert pmd is not None
        idx = pmd_index(haddr)
        await pmd.ptl.lock()                                              # 4
        pt = await load_item(pmd, pmd.entries, idx)
        await store_item(pmd, pmd.entries, idx, None)                     # pmdp_collapse_flush
        pmd.nr -= 1
        await flush_tlb_range(mm, haddr, haddr + HPAGE_PMD_SIZE)
        await pmd.ptl.unlock()
        await tlb_remove_table_sync_one(mm)
        await pt.ptl.lock()                                               # 5
        result, pages = await __collapse_huge_page_isolate(mm, pt, cc)
        await pt.ptl.unlock()
        if result != SCAN_SUCCEED:
            await pmd.ptl.lock()
            await store_item(pmd, pmd.entries, idx, pt)                   # pmd_populate
            pmd.nr += 1
            await pmd.ptl.unlock()
            await _free_folio(mem, folio)
            return result
        await __collapse_huge_page_copy(mm, vma, pt, folio, pages)        # 6
        entry = map_anon_folio_pmd(folio, vma, haddr)                     # 7
        await pmd.ptl.lock()
        if await load_item(pmd, pmd.entries, idx) is not None:
            # Linux: BUG_ON(!pmd_none(*pmd)) — nobody may fill the PMD the
            # collapse cleared: mmap_lock (write) and the VMA lock exclude
            # every fault but the speculative one, which never allocates
            raise ModelBug(f"collapse_huge_page: the PMD at {haddr:#x} was filled while "
                           f"cleared for the collapse")
        await store_item(pmd, pmd.entries, idx, entry)
        pmd.nr += 1
        await pmd.ptl.unlock()
        return SCAN_SUCCEED
    finally:
        await mmap_write_unlock(mm)                                       # 8


async def _free_folio(mem: Any, folio: Page) -> None:
    for i in range(HPAGE_PMD_NR):
        await put_page(mem, folio_page(mem, folio, i))


async def __collapse_huge_page_isolate(mm: Any, pt: PageTable,
                                       cc: CollapseControl) -> tuple[str, list[Page | None]]:
    """Lock and isolate from the LRU every page the (now unreachable) PTE
    table maps, re-checking what the scan saw; on failure release those
    taken.  Under the table's PTL.  Returns (result, the page of each PTE
    or None for none/zero)."""
    mem = mm.kernel.mem
    pages: list[Page | None] = []
    taken: list[Page] = []
    result = SCAN_SUCCEED
    for pte in await PteBatch(pt):
        result, page = _collapse_pte(mem, pte)
        if result != SCAN_SUCCEED:
            break
        if page is None:
            pages.append(None)
            continue
        if not await folio_trylock(page):
            result = SCAN_PAGE_LOCK
            break
        if page.lru is None or not _is_refcount_suitable(page):
            await folio_unlock(page)
            result = SCAN_PAGE_LRU if page.lru is None else SCAN_PAGE_COUNT
            break
        lru_del(mem, page)                     # folio_isolate_lru()
        taken.append(page)
        pages.append(page)
    if result != SCAN_SUCCEED:
        for page in taken:
            lru_add(mem, page)
            await folio_unlock(page)
    return result, pages


async def __collapse_huge_page_copy(mm: Any, vma: Any, pt: PageTable, folio: Page,
                                    pages: list[Page | None]) -> None:
    """Copy each page into the THP (none and zero PTEs: the THP's zeroed
    page), then (…_copy_succeeded) clear the old PTEs under the table's
    PTL, drop each page's mapping and reference; a page still mapped
    elsewhere (shared since fork) goes back to the LRU.  Caller holds
    mmap_lock for write."""
    mem = mm.kernel.mem
    copied = 0
    for i, page in enumerate(pages):
        if page is not None:
            folio_page(mem, folio, i).copy_from(page)         # copy_mc_user_highpage()
            copied += 1
    # one step for the copies: no CPU can reach these pages any more (the
    # PMD is none and the TLBs were flushed; a fault waits for mmap_lock)
    await Work("copy_page", max(copied, 1))
    await pt.ptl.lock()
    await PteBatch(pt, clear=True)                            # ptep_clear() each
    for page in pages:
        if page is None:
            continue
        page.mapcount -= 1
        if page.mapcount == 0:
            page.anon_exclusive = False
        else:
            lru_add(mem, page)                  # putback: still mapped by another mm
        mm.rss["anon"] -= 1
        await folio_unlock(page)
        await put_page(mem, page)
    await pt.ptl.unlock()


# ------------------------------------------------------------ MADV_COLLAPSE
def madvise_collapse_errno(result: str) -> int:
    """madvise_collapse_errno(): the errno MADV_COLLAPSE returns for the
    last failure."""
    if result == SCAN_ALLOC_HUGE_PAGE_FAIL:
        return -errno.ENOMEM
    if result == SCAN_EXCEED_NONE_PTE:
        return -errno.EBUSY
    if result in (SCAN_PAGE_COUNT, SCAN_PAGE_LOCK, SCAN_PAGE_LRU):
        return -errno.EAGAIN
    return -errno.EINVAL


# results after which MADV_COLLAPSE goes on to the next 2 MiB
_CONTINUE = {SCAN_PMD_NULL, SCAN_PTE_NON_PRESENT, SCAN_LACK_REFERENCED_PAGE, SCAN_PAGE_COUNT,
             SCAN_PAGE_LOCK, SCAN_PAGE_LRU}


async def madvise_collapse(mm: Any, vma: Any, start: int, end: int) -> tuple[int, bool]:
    """madvise_collapse(): collapse every 2 MiB-aligned range inside
    [start, end) of ``vma`` (already a THP: counted as done).  0 when all
    are THPs at the end, else the errno of the last failure (EINVAL for a
    range that starts inside a 2 MiB block and holds no aligned 2 MiB, as
    Linux's unsigned count makes it); EINVAL at once
    for a VMA that may never have a THP (VM_NOHUGEPAGE, not private
    anonymous — file and shmem collapse are not modelled — or no
    anon_vma).  Entered with mmap_lock held for read; returns (result,
    lock dropped meanwhile) with it held again."""
    if not thp_vma_allowable_order(vma, TVA_FORCED_COLLAPSE):
        return -errno.EINVAL, False
    cc = CollapseControl(is_khugepaged=False)
    hstart = (start + HPAGE_PMD_SIZE - 1) & HPAGE_PMD_MASK
    hend = end & HPAGE_PMD_MASK
    thps = 0
    last_fail = SCAN_FAIL
    locked = True
    dropped = False
    addr = hstart
    while addr < hend:
        if not locked:
            await mmap_read_lock(mm)
            locked = True
            result, vma = await hugepage_vma_revalidate(mm, addr, cc)
            if result != SCAN_SUCCEED:
                last_fail = result
                break
            hend = min(hend, vma.vm_end & HPAGE_PMD_MASK)
        result, locked = await hpage_collapse_scan_pmd(mm, vma, addr, cc)
        if not locked:
            dropped = True
        if result in (SCAN_SUCCEED, SCAN_PMD_MAPPED):
            thps += 1
        else:
            last_fail = result
            if result not in _CONTINUE:
                break
        addr += HPAGE_PMD_SIZE
    if not locked:
        await mmap_read_lock(mm)
    # (hend - hstart) >> HPAGE_PMD_SHIFT in unsigned arithmetic: a range
    # holding no aligned 2 MiB (hend < hstart) never matches — EINVAL
    if hend >= hstart and thps == (hend - hstart) // HPAGE_PMD_SIZE:
        return 0, dropped
    return madvise_collapse_errno(last_fail), dropped


# -------------------------------------------------------------- khugepaged
async def khugepaged_scan_mm(mm: Any, budget: int) -> int:
    """khugepaged_scan_mm_slot() over one mm: every 2 MiB of its eligible
    VMAs (TVA_KHUGEPAGED), under mmap_lock for read (a collapse drops and
    retakes it), until ``budget`` pages were scanned.  Returns the pages
    scanned.  Entered and left with no lock."""
    cc = CollapseControl(is_khugepaged=True)
    scanned = 0
    addr = 0
    while scanned < budget:
        await mmap_read_lock(mm)
        if mm.dead:
            await mmap_read_unlock(mm)
            break
        vma = mm.find_vma(addr)
        while vma is not None:
            hstart = (max(addr, vma.vm_start) + HPAGE_PMD_SIZE - 1) & HPAGE_PMD_MASK
            if thp_vma_allowable_order(vma, TVA_KHUGEPAGED) and \
                    hstart + HPAGE_PMD_SIZE <= vma.vm_end:
                break
            addr = vma.vm_end
            vma = mm.find_vma(addr)
        if vma is None:
            await mmap_read_unlock(mm)
            break
        _result, locked = await hpage_collapse_scan_pmd(mm, vma, hstart, cc)
        if locked:
            await mmap_read_unlock(mm)
        scanned += HPAGE_PMD_NR
        addr = hstart + HPAGE_PMD_SIZE
    return scanned


async def khugepaged_do_scan(kernel: Any, pages: int = KHUGEPAGED_PAGES_TO_SCAN) -> int:
    """One pass of the khugepaged thread (khugepaged_do_scan): scan the
    registered mms in turn (khugepaged_enter_vma registered them: a THP
    fault or MADV_HUGEPAGE on an eligible VMA) up to ``pages`` pages in
    all; mms that exited leave the list.  Returns the pages scanned.  Runs
    as a kernel thread: no lock on entry or return."""
    scanned = 0
    for mm in list(kernel.khugepaged_mms):
        if mm.dead:
            kernel.khugepaged_mms.remove(mm)
            continue
        if scanned >= pages:
            break
        scanned += await khugepaged_scan_mm(mm, pages - scanned)
    kernel.count("khugepaged_full_scans")
    return scanned
