"""madvise(2) (mm/madvise.c), as Linux 6.18 on x86-64 with THP, KSM and
swap configured (the host's config) — but a machine without THPs or a
running ksmd, and without swap devices unless the machine has one (knob
``swap_pages``).

Every advice Linux 6.18 accepts is accepted, except the guard-region pair
(MADV_GUARD_INSTALL/REMOVE, which need PTE markers in the fault path: EINVAL
as before Linux 6.13) and MADV_HWPOISON/MADV_SOFT_OFFLINE (EINVAL, as on a
kernel without CONFIG_MEMORY_FAILURE, like the host).  docs/fidelity.md has
the table: advice, what the model does, what Linux does, the difference.

The walk (madvise_walk_vmas) visits each VMA in the range; a hole is
remembered as -ENOMEM and returned at the end, after the mapped parts were
advised.  MADV_POPULATE_READ/WRITE do not walk VMAs that way: they fault
the range in order and stop at the first hole (-ENOMEM) or incompatible
VMA (-EINVAL).

Locks: mmap_lock for write for the advices that change vm_flags, for read
for the others (madvise_need_mmap_write()); the PTE walks take each PTE
table's PTL.
"""

from __future__ import annotations

import errno
from typing import Any

from specfault.constants import (
    MADV_COLD,
    MADV_COLLAPSE,
    MADV_DODUMP,
    MADV_DOFORK,
    MADV_DONTDUMP,
    MADV_DONTFORK,
    MADV_DONTNEED,
    MADV_DONTNEED_LOCKED,
    MADV_FREE,
    MADV_HUGEPAGE,
    MADV_KEEPONFORK,
    MADV_MERGEABLE,
    MADV_NOHUGEPAGE,
    MADV_NORMAL,
    MADV_PAGEOUT,
    MADV_POPULATE_READ,
    MADV_POPULATE_WRITE,
    MADV_RANDOM,
    MADV_REMOVE,
    MADV_SEQUENTIAL,
    MADV_UNMERGEABLE,
    MADV_WILLNEED,
    MADV_WIPEONFORK,
    PAGE_MASK,
    PAGE_SIZE,
)
from specfault.mm.fault_flags import (
    FAULT_FLAG_WRITE,
    VM_FAULT_ERROR,
    VM_FAULT_HWPOISON,
    VM_FAULT_OOM,
)
from specfault.mm.huge_memory import khugepaged_enter_vma, split_huge_pmds
from specfault.mm.khugepaged import madvise_collapse
from specfault.mm.memory import handle_mm_fault
from specfault.mm.mmap import ULONG_MAX, page_align
from specfault.mm.mmap_lock import (
    mmap_read_lock,
    mmap_read_unlock,
    mmap_write_lock,
    mmap_write_unlock,
    vma_start_write,
)
from specfault.mm.mmu_gather import MmuGather, unmap_page_range
from specfault.mm.page import GetPage, lru_move
from specfault.mm.pgtable import (
    _PAGE_ACCESSED,
    _PAGE_DIRTY,
    follow_pte,
    is_swap_pte,
    non_swap_entry,
    pte_dirty,
    pte_pfn,
    pte_present,
    pte_special,
    pte_to_swp_entry,
    pte_write,
    walk_range,
)
from specfault.mm.swap_state import (
    folio_free_swap,
    folio_test_locked,
    folio_trylock,
    folio_unlock,
    free_swap_and_cache,
)
from specfault.mm.truncate import shmem_punch_hole
from specfault.mm.vma import (
    VM_DONTCOPY,
    VM_DONTDUMP,
    VM_DONTEXPAND,
    VM_DROPPABLE,
    VM_HUGEPAGE,
    VM_HUGETLB,
    VM_IO,
    VM_LOCKED,
    VM_MAYSHARE,
    VM_MAYWRITE,
    VM_MERGEABLE,
    VM_MIXEDMAP,
    VM_NOHUGEPAGE,
    VM_PFNMAP,
    VM_RAND_READ,
    VM_READ,
    VM_SEQ_READ,
    VM_SHARED,
    VM_SPECIAL,
    VM_WIPEONFORK,
    VM_WRITE,
    VmArea,
)
from specfault.mm.vma_ops import vma_modify
from specfault.mm.vmscan import folio_isolate_lru, reclaim_pages
from specfault.runtime import LoadItem, StoreItem

EHWPOISON = 133         # Linux's value (not in every Python's errno module)

# madvise_behavior_valid(): CONFIG_KSM and CONFIG_TRANSPARENT_HUGEPAGE on,
# CONFIG_MEMORY_FAILURE off (MADV_HWPOISON, MADV_SOFT_OFFLINE: EINVAL)
SUPPORTED = {MADV_NORMAL, MADV_RANDOM, MADV_SEQUENTIAL, MADV_WILLNEED, MADV_DONTNEED,
             MADV_DONTNEED_LOCKED, MADV_FREE, MADV_REMOVE, MADV_DONTFORK, MADV_DOFORK,
             MADV_MERGEABLE, MADV_UNMERGEABLE, MADV_HUGEPAGE, MADV_NOHUGEPAGE, MADV_COLLAPSE,
             MADV_DONTDUMP, MADV_DODUMP, MADV_WIPEONFORK, MADV_KEEPONFORK, MADV_COLD,
             MADV_PAGEOUT, MADV_POPULATE_READ, MADV_POPULATE_WRITE}
# advice that only needs mmap_lock for read (madvise_need_mmap_write() false)
READ_LOCKED = {MADV_REMOVE, MADV_WILLNEED, MADV_DONTNEED, MADV_DONTNEED_LOCKED, MADV_COLD,
               MADV_PAGEOUT, MADV_FREE, MADV_POPULATE_READ, MADV_POPULATE_WRITE, MADV_COLLAPSE}


async def sys_madvise(mm: Any, start: int, len_in: int, behavior: int) -> int:
    """do_madvise(): is_valid_madvise() (every check before anything
    changes), then the behaviour under mmap_lock."""
    if behavior not in SUPPORTED:
        return -errno.EINVAL
    if start & ~PAGE_MASK:
        return -errno.EINVAL
    length = page_align(len_in)
    if len_in and not length:          # rounded up from within a page of 2**64
        return -errno.EINVAL
    end = (start + length) & ULONG_MAX
    if end < start:                    # wraps
        return -errno.EINVAL
    if end == start:
        return 0
    write = behavior not in READ_LOCKED
    if write:
        await mmap_write_lock(mm)
    else:
        await mmap_read_lock(mm)
    try:
        if behavior in (MADV_POPULATE_READ, MADV_POPULATE_WRITE):
            return await madvise_populate(mm, start, end, behavior == MADV_POPULATE_WRITE)
        return await madvise_walk_vmas(mm, start, end, behavior)
    finally:
        if write:
            await mmap_write_unlock(mm)
        else:
            await mmap_read_unlock(mm)


async def madvise_walk_vmas(mm: Any, start: int, end: int, behavior: int) -> int:
    vma = mm.find_vma(start)
    prev = mm.mm_mt.prev(start) if vma is None or start <= vma.vm_start else vma
    if vma is not None and start > vma.vm_start:
        prev = vma
    unmapped_error = 0
    while True:
        if vma is None:
            return -errno.ENOMEM
        if start < vma.vm_start:
            unmapped_error = -errno.ENOMEM
            start = vma.vm_start
            if start >= end:
                break
        tmp = min(vma.vm_end, end)
        error, prev = await madvise_vma_behavior(mm, vma, prev, start, tmp, behavior)
        if error:
            return error
        start = tmp
        if prev is not None and start < prev.vm_end:
            start = prev.vm_end
        if start >= end:
            break
        vma = mm.find_vma(prev.vm_end if prev is not None else start)
    return unmapped_error


async def madvise_vma_behavior(mm: Any, vma: VmArea, prev: VmArea | None, start: int,
                               end: int, behavior: int) -> tuple[int, VmArea | None]:
    """Apply ``behavior`` to [start, end) of ``vma``.  Returns (0 or -errno,
    the new ``prev``: the VMA now ending the advised part, or None when
    the mmap_lock was "dropped" and the walk must look the next VMA up).
    Caller holds mmap_lock — for write if ``behavior`` changes vm_flags —
    on entry and on return (the model never drops it)."""
    if behavior == MADV_REMOVE:
        return await madvise_remove(mm, vma, start, end), None
    if behavior == MADV_WILLNEED:
        return madvise_willneed(mm, vma, start, end), vma
    if behavior in (MADV_COLD, MADV_PAGEOUT):
        return await madvise_cold_or_pageout(mm, vma, start, end, behavior == MADV_PAGEOUT), vma
    if behavior in (MADV_FREE, MADV_DONTNEED, MADV_DONTNEED_LOCKED):
        return await madvise_dontneed_free(mm, vma, start, end, behavior), vma
    if behavior == MADV_COLLAPSE:
        ret, dropped = await madvise_collapse(mm, vma, start, end)
        return ret, None if dropped else vma
    new_flags = vma.vm_flags
    if behavior == MADV_NORMAL:
        new_flags &= ~(VM_RAND_READ | VM_SEQ_READ)
    elif behavior == MADV_SEQUENTIAL:
        new_flags = (new_flags & ~VM_RAND_READ) | VM_SEQ_READ
    elif behavior == MADV_RANDOM:
        new_flags = (new_flags & ~VM_SEQ_READ) | VM_RAND_READ
    elif behavior == MADV_DONTFORK:
        new_flags |= VM_DONTCOPY
    elif behavior == MADV_DOFORK:
        if vma.vm_flags & VM_IO:
            return -errno.EINVAL, vma
        new_flags &= ~VM_DONTCOPY
    elif behavior == MADV_WIPEONFORK:
        # only private anonymous memory can be wiped (the child gets an
        # empty mapping: dup_mmap() copies neither anon_vma nor PTEs)
        if vma.vm_file is not None or vma.vm_flags & VM_SHARED:
            return -errno.EINVAL, vma
        new_flags |= VM_WIPEONFORK
    elif behavior == MADV_KEEPONFORK:
        if vma.vm_flags & VM_DROPPABLE:
            return -errno.EINVAL, vma
        new_flags &= ~VM_WIPEONFORK
    elif behavior == MADV_DONTDUMP:
        new_flags |= VM_DONTDUMP
    elif behavior == MADV_DODUMP:
        if (not vma.vm_flags & VM_HUGETLB and new_flags & VM_SPECIAL) \
                or vma.vm_flags & VM_DROPPABLE:
            return -errno.EINVAL, vma
        new_flags &= ~VM_DONTDUMP
    elif behavior == MADV_MERGEABLE:
        new_flags = ksm_madvise_mergeable(vma, new_flags)
    elif behavior == MADV_UNMERGEABLE:
        # unmerge_ksm_pages() has nothing to break: no ksmd ever merged a page
        new_flags &= ~VM_MERGEABLE
    elif behavior == MADV_HUGEPAGE:           # hugepage_madvise()
        new_flags = (new_flags & ~VM_NOHUGEPAGE) | VM_HUGEPAGE
        khugepaged_enter_vma(vma)
    elif behavior == MADV_NOHUGEPAGE:
        new_flags = (new_flags & ~VM_HUGEPAGE) | VM_NOHUGEPAGE
    return await madvise_update_vma(mm, vma, prev, start, end, new_flags)


async def madvise_update_vma(mm: Any, vma: VmArea, prev: VmArea | None, start: int, end: int,
                             new_flags: int) -> tuple[int, VmArea | None]:
    """Give [start, end) the flags ``new_flags``, splitting or merging
    (vma_modify_flags()).  A failed split (map count) is -EAGAIN.  Caller
    holds mmap_lock for write; the VMA changed is vma_start_write()-locked."""
    if new_flags == vma.vm_flags:
        return 0, vma
    got = await vma_modify(mm, prev, vma, start, end, new_flags)
    if isinstance(got, int):
        # madvise() returns EAGAIN when kernel resources are short
        return (-errno.EAGAIN if got == -errno.ENOMEM else got), vma
    await vma_start_write(got)
    got.set_flags(new_flags)
    return 0, got


def ksm_madvise_mergeable(vma: VmArea, flags: int) -> int:
    """ksm_madvise(MADV_MERGEABLE): mark a KSM-compatible VMA (private,
    no special mapping); the advice is ignored on any other.  No ksmd runs
    in the model (nor on the host: /sys/kernel/mm/ksm/run is 0), so no
    page is ever merged."""
    if vma.vm_flags & (VM_SHARED | VM_MAYSHARE | VM_PFNMAP | VM_IO | VM_DONTEXPAND | VM_HUGETLB
                       | VM_MIXEDMAP | VM_DROPPABLE):
        return flags
    return flags | VM_MERGEABLE


def madvise_willneed(mm: Any, vma: VmArea, start: int, end: int) -> int:
    """Read a regular file's pages into the page cache (vfs_fadvise
    POSIX_FADV_WILLNEED); anonymous and shmem memory would be swapped in
    (swapin_walk_pmd_entry: readahead into the swap cache) — the model has
    no swap-in readahead: swapped pages come back when touched."""
    if vma.vm_file is not None and not vma.vm_file.inode.shmem:
        inode = vma.vm_file.inode
        first = vma.linear_page_index(start)
        last = min(vma.linear_page_index(end - 1), inode.nr_pages() - 1)
        for idx in range(first, last + 1):
            if mm.kernel.fs.cached_page(inode, idx, create=True) is None:
                break
    return 0


# ------------------------------------------------------- DONTNEED and FREE
async def madvise_dontneed_free(mm: Any, vma: VmArea, start: int, end: int,
                                behavior: int) -> int:
    """madvise_dontneed_free(): DONTNEED (and DONTNEED_LOCKED, which may
    zap mlocked memory) zap the range; FREE makes anonymous pages lazily
    freeable."""
    forbidden = VM_PFNMAP | (0 if behavior == MADV_DONTNEED_LOCKED else VM_LOCKED)
    if vma.vm_flags & (forbidden | VM_HUGETLB):
        return -errno.EINVAL
    if behavior == MADV_FREE:
        return await madvise_free_single_vma(mm, vma, start, end)
    tlb = MmuGather(mm)
    # zap_page_range_single() with details.reclaim_pt: an emptied PTE
    # table is reclaimed (pt_reclaim.py)
    await unmap_page_range(tlb, vma, start, end, reclaim_pt=True)
    await tlb.finish()
    return 0


async def madvise_free_single_vma(mm: Any, vma: VmArea, start: int, end: int) -> int:
    """MADV_FREE (madvise_free_pte_range()): each anonymous page mapped in
    the range is marked clean and old and becomes lazily freeable
    (folio_mark_lazyfree: off the swap-backed LRU); until reclaim
    discards it (MADV_PAGEOUT, kswapd, direct reclaim), it stays mapped and
    readable, and a store makes it dirty again (kept).  A page in the swap
    cache first loses its slot (folio_free_swap), or is skipped if the slot
    is still referenced; a swapped-out page (swap PTE) is dropped at once:
    its entry is freed and the address reads zeroes.  Only private
    anonymous memory: -EINVAL otherwise.  Caller holds mmap_lock for read;
    each PTE table's PTL is taken in turn."""
    if vma.vm_file is not None:
        return -errno.EINVAL
    kernel = mm.kernel
    mem = kernel.mem
    tlb = MmuGather(mm)
    # a THP in the range is split first (Linux handles a whole one in
    # place: madvise_free_huge_pmd, madvise_cold_or_pageout_pte_range)
    await split_huge_pmds(vma, start, end)
    for pt, lo, hi in await walk_range(mm, start, end):
        await pt.ptl.lock()
        for i in range((lo - pt.base) >> 12, (hi - pt.base) >> 12):
            pte = await LoadItem(pt, pt.entries, i)
            if is_swap_pte(pte) and non_swap_entry(pte_to_swp_entry(pte)):
                continue                     # a migration entry: left alone
            if is_swap_pte(pte):
                await StoreItem(pt, pt.entries, i, 0)     # pte_clear_not_present_full
                pt.nr -= 1
                mm.rss["swap"] -= 1
                free_swap_and_cache(kernel, pte_to_swp_entry(pte))
                continue
            if not pte_present(pte) or pte_special(pte):
                continue                     # none, or the zero page
            page = mem.pages[pte_pfn(pte)]
            if page.swapcache or page.dirty:
                if page.mapcount != 1 or folio_test_locked(page):
                    continue                 # another mapping may need the data
                if page.swapcache:
                    if not await folio_trylock(page):
                        continue
                    freed = await folio_free_swap(kernel, page)
                    await folio_unlock(page)
                    if not freed:
                        continue
                page.dirty = False
            if pte & (_PAGE_ACCESSED | _PAGE_DIRTY):
                # clear_young_dirty_ptes() + tlb_remove_tlb_entries()
                await StoreItem(pt, pt.entries, i, pte & ~(_PAGE_ACCESSED | _PAGE_DIRTY))
                addr = pt.base + (i << 12)
                # knob madv_free_no_flush (a mutant): "only bits changed, the
                # page stays mapped" — a CPU's cached dirty entry lets a store
                # through without dirtying the PTE, and reclaim discards it
                if not mm.config.knob("madv_free_no_flush"):
                    tlb.track(addr, addr + PAGE_SIZE)
            if not page.lazyfree:            # folio_mark_lazyfree(): lru_lazyfree
                page.lazyfree = True
                page.referenced = False
                if page.lru is not None:
                    lru_move(mem, page, False)
        await pt.ptl.unlock()
    await tlb.finish()
    return 0


# ------------------------------------------------------- COLD and PAGEOUT
async def madvise_cold_or_pageout(mm: Any, vma: VmArea, start: int, end: int,
                                  pageout: bool) -> int:
    """MADV_COLD / MADV_PAGEOUT (madvise_cold_or_pageout_pte_range()).
    Both look only at pages mapped exactly once (folio_mapcount() == 1):

    * COLD clears their accessed bits and deactivates them (the inactive
      end of their LRU: the next reclaim takes them first);
    * PAGEOUT isolates them from the LRU and reclaims them at once
      (vmscan.reclaim_pages: shrink_folio_list ignoring references): an
      anonymous page goes to swap (a swap PTE; pswpout) when there is a
      free slot, and stays otherwise (no swap device, swap full); a lazily
      freeable one (MADV_FREE, still clean) or one of a MAP_DROPPABLE
      mapping is discarded and reads back as zeroes; a file page is
      unmapped (try_to_unmap()) and, if clean and not shmem, dropped
      from the page cache; dirty and shmem pages stay cached (no file
      writeback from this path; no swap for shmem).

    Swap PTEs, the zero page and pages mapped more than once are skipped.
    The caller is root (can_do_file_pageout()), so file pages of any
    mapping are paged out.  Caller holds mmap_lock for read; the walk takes
    each PTE table's PTL, and reclaim takes them again through the reverse
    map (no mmap_lock needed there)."""
    if vma.vm_flags & (VM_LOCKED | VM_PFNMAP | VM_HUGETLB):      # can_madv_lru_vma()
        return -errno.EINVAL
    kernel = mm.kernel
    mem = kernel.mem
    tlb = MmuGather(mm)
    isolated = []
    # a THP in the range is split first (Linux handles a whole one in
    # place: madvise_free_huge_pmd, madvise_cold_or_pageout_pte_range)
    await split_huge_pmds(vma, start, end)
    for pt, lo, hi in await walk_range(mm, start, end):
        await pt.ptl.lock()
        for i in range((lo - pt.base) >> 12, (hi - pt.base) >> 12):
            pte = await LoadItem(pt, pt.entries, i)
            if not pte_present(pte) or pte_special(pte):
                continue
            page = mem.pages[pte_pfn(pte)]
            if page.mapcount != 1:
                continue                     # do not interfere with other mappings
            addr = pt.base + (i << 12)
            if not pageout and pte & _PAGE_ACCESSED:
                await StoreItem(pt, pt.entries, i, pte & ~_PAGE_ACCESSED)   # pte_mkold
                tlb.track(addr, addr + PAGE_SIZE)
            page.referenced = False                               # folio_clear_referenced
            if pageout:
                if folio_isolate_lru(mem, page):
                    await GetPage(page)                           # the isolation reference
                    isolated.append(page)
            elif page.lru is not None:
                lru_move(mem, page, False)                        # folio_deactivate
                kernel.count("pgdeactivate")
        await pt.ptl.unlock()
    await tlb.finish()
    await reclaim_pages(kernel, isolated)
    return 0


# ------------------------------------------------------------------ REMOVE
async def madvise_remove(mm: Any, vma: VmArea, start: int, end: int) -> int:
    """MADV_REMOVE: punch a hole in the file behind a shared writable
    mapping (vfs_fallocate(PUNCH_HOLE | KEEP_SIZE), as shmem_fallocate does
    it: truncate.shmem_punch_hole): every mapping of the range, in every
    process, loses its PTEs for the file's pages (private COWed copies
    stay), and the range reads back as zeroes.  The model's files are
    tmpfs files, and shmem supports hole punching.  Errors as Linux's:
    VM_LOCKED or no file (anonymous private memory) EINVAL, not a shared
    writable mapping (a private file mapping) EACCES.  Caller holds this
    mm's mmap_lock for read; as Linux (mark_mmap_lock_dropped), it is
    dropped around the punch — which takes the inode lock, ordered before
    mmap_lock — and retaken: the caller looks the next VMA up afresh."""
    if vma.vm_flags & VM_LOCKED:
        return -errno.EINVAL
    file = vma.vm_file
    if file is None:
        return -errno.EINVAL
    if (vma.vm_flags & (VM_SHARED | VM_MAYWRITE)) != VM_SHARED | VM_MAYWRITE:
        return -errno.EACCES                 # !vma_is_shared_maywrite()
    offset = vma.linear_page_index(start) << 12
    file.f_count += 1                        # get_file()
    await mmap_read_unlock(mm)
    try:
        await shmem_punch_hole(mm.kernel, file.inode, offset, end - start)
    finally:
        mm.kernel.fs.fput(file)
        await mmap_read_lock(mm)
    return 0


# ---------------------------------------------------------------- POPULATE
def check_vma_flags(vma: VmArea, write: bool) -> bool:
    """check_vma_flags() for GUP without FOLL_FORCE: may the range be
    faulted in for reading / writing?"""
    if vma.vm_flags & (VM_IO | VM_PFNMAP):
        return False
    if write:
        return bool(vma.vm_flags & VM_WRITE)
    return bool(vma.vm_flags & VM_READ)


async def madvise_populate(mm: Any, start: int, end: int, write: bool) -> int:
    """MADV_POPULATE_READ / _WRITE (faultin_page_range()): fault every page
    of [start, end) in, in order, as a read (the zero page for anonymous
    memory, fault-around for files) or a write (breaking COW); a page
    already mapped as needed is only touched (FOLL_TOUCH: a write marks
    it dirty).  Stops at the first address without a VMA (-ENOMEM), with
    a VMA that does not allow the access (-EINVAL), or at a fault that
    would signal (-EFAULT: SIGBUS beyond the end of a file).  Caller
    holds mmap_lock for read."""
    mem = mm.kernel.mem
    addr = start
    while addr < end:
        vma = mm.vma_lookup(addr)
        if vma is None:
            return -errno.ENOMEM
        if not check_vma_flags(vma, write):
            return -errno.EINVAL
        stop = min(end, vma.vm_end)
        while addr < stop:
            pte = await follow_pte(mm, addr)
            if pte_present(pte) and (not write or pte_write(pte)):
                if write and not pte_dirty(pte) and not pte_special(pte):
                    mem.pages[pte_pfn(pte)].dirty = True     # set_page_dirty()
                addr += PAGE_SIZE
                continue
            ret = await handle_mm_fault(vma, addr, FAULT_FLAG_WRITE if write else 0)
            if ret & VM_FAULT_ERROR:
                if ret & VM_FAULT_OOM:
                    return -errno.ENOMEM
                if ret & VM_FAULT_HWPOISON:
                    return -EHWPOISON
                return -errno.EFAULT          # VM_FAULT_SIGBUS / VM_FAULT_SIGSEGV
    return 0
