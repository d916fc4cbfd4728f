"""Truncation and hole punching of mapped files (mm/truncate.c,
mm/memory.c unmap_mapping_range, mm/shmem.c shmem_setattr /
shmem_fallocate).

The model's files are tmpfs files (the oracle's host files live in
/dev/shm), so the syscalls follow shmem: ``ftruncate`` / ``O_TRUNC`` is
:func:`do_truncate` (shmem_setattr), ``fallocate(PUNCH_HOLE|KEEP_SIZE)``
and ``MADV_REMOVE`` are :func:`shmem_punch_hole` (shmem_fallocate).

The protocol against a concurrent file fault (filemap.filemap_fault,
memory.do_read_fault / do_cow_fault / do_shared_fault), in Linux's order:

1. (truncation) ``i_size_write`` the new size first: a fault that reads
   i_size after this sees the page beyond EOF (SIGBUS);
2. ``unmap_mapping_range(holebegin, even_cows)`` (:func:`unmap_mapping_pages`):
   every PTE mapping a file page beyond the new EOF goes — in every VMA of
   the file's ``i_mmap``, under ``i_mmap_rwsem`` (read), without any
   mm's mmap_lock, under each PTE table's PTL — and, for truncation, the
   private COWed copies too, present or swapped out (even_cows: a private
   mapping beyond EOF must SIGBUS as well; a swapped-out copy's slot is
   freed); a hole punch keeps the COWed copies;
3. ``truncate_inode_pages_range``: each cached page in the range is
   *locked* (folio_lock: waits for a fault mapping it), unmapped again if
   a fault mapped it since step 2 (truncate_inode_folio →
   unmap_mapping_folio), and only then removed from the cache
   (``folio->mapping`` cleared: a fault that found it before re-checks
   that under the folio lock and looks again); partial pages at the edges
   are zeroed in place, where they stay mapped;
4. (truncation) unmap again, even_cows: a private COW fault copies the
   file page under its folio lock and maps the copy before unlocking it
   (do_cow_fault), so a copy made during step 3 is mapped by the time
   step 3 got the lock, and this pass removes it.

Knobs (mutants, check/mutants.py): ``truncate_drops_before_unmap`` skips
the unmap of steps 2-3 and unmaps after the page left the cache (a mapped
page outside the file: writes to it are lost, and another mapping faults
in a fresh page — two views of one file page); the fault side's
``no_isize_recheck_after_lock`` and ``no_folio_mapping_recheck`` are in
filemap.filemap_fault; ``unmap_mapping_no_i_mmap_lock`` walks i_mmap
without i_mmap_rwsem (step 2 and every unmap after it: a munmap frees the
page tables being walked, a split hides half of the VMA).

Locks, in Linux's order (mm/rmap.c's lock-order comment, shmem's
subset): ``i_rwsem`` (``inode_lock``: taken for write by truncation and
hole punching, which serialise with each other; read()/write() run
between ops in the model) -> [``mapping->invalidate_lock``: not taken —
tmpfs takes it neither for truncation nor in its fault, see
filemap.filemap_fault] -> the folio lock (truncate_inode_pages_range) ->
``i_mmap_rwsem`` (read, :func:`unmap_mapping_pages`; also under a folio
lock, by unmap_mapping_folio) -> the PTL of each PTE table.  No mmap_lock
or VMA lock is taken: the i_mmap_rwsem alone keeps the VMAs found in
``i_mmap`` — and their ranges and page tables — as they are, because every
writer of a file VMA's range or i_mmap entry (mmap, split, merge, mremap's
move, munmap and exit, which unlink before freeing page tables) holds it
for write (mm/rmap.py, mm/vma_ops.py).  Those writers take it under
mmap_lock (write) and vma_start_write: mmap_lock -> vma_start_write ->
i_mmap_rwsem, the fault side takes mmap_lock (or the VMA lock) -> folio
lock -> PTL, so the two orders nest without a cycle (sync/lockdep.py
records every order the scenarios show).
"""

from __future__ import annotations

from typing import Any

from specfault.constants import PAGE_SIZE
from specfault.mm.filemap import (
    FindGetPage,
    Inode,
    filemap_remove_folio,
    folio_lock,
    folio_unlock,
    i_size_read,
    shmem_free_swap,
    shmem_swapin_folio,
)
from specfault.mm.mmu_gather import MmuGather, ZapDetails, unmap_page_range
from specfault.mm.page import PutPage
from specfault.mm.rmap import i_mmap_lock_read, i_mmap_unlock_read, vma_interval_tree_foreach
from specfault.runtime import Store

ULONG_MAX = (1 << 64) - 1


async def unmap_mapping_range_tree(kernel: Any, inode: Inode, first: int, last: int,
                                   details: ZapDetails) -> None:
    """unmap_mapping_range_tree(): for each VMA of ``inode``'s i_mmap that
    maps a page of [first, last], zap that part of it
    (unmap_mapping_range_vma → zap_page_range_single: an mmu_gather on the
    VMA's mm, each PTE table under its PTL).  Caller holds i_mmap_rwsem
    for read: a VMA found here keeps its range and page tables."""
    for vma in vma_interval_tree_foreach(inode, first, last):
        vba = vma.vm_pgoff
        vea = vba + vma.pages() - 1
        zba = max(first, vba)
        zea = min(last, vea)
        start = ((zba - vba) << 12) + vma.vm_start
        end = ((zea - vba + 1) << 12) + vma.vm_start
        tlb = MmuGather(vma.vm_mm)
        await unmap_page_range(tlb, vma, start, end, details)
        await tlb.finish()


async def unmap_mapping_pages(kernel: Any, inode: Inode, first: int, nr: int,
                              even_cows: bool) -> None:
    """unmap_mapping_pages(): unmap file pages [first, first + nr) (nr 0:
    to the end of the file) from every VMA of the file's i_mmap — in every
    mm, without their mmap_lock — and, with ``even_cows``, the private
    anonymous copies (COWed pages, present or swapped out: their swap
    slots are freed) too.  Takes i_mmap_rwsem for read, then each PTE
    table's PTL; entered with i_rwsem and/or a folio lock, or nothing."""
    details = ZapDetails(even_cows)
    last = first + nr - 1 if nr else ULONG_MAX
    # knob unmap_mapping_no_i_mmap_lock (a mutant): walk i_mmap unlocked — a
    # munmap frees the tables being walked, a split hides half a VMA
    locked = not kernel.config.knob("unmap_mapping_no_i_mmap_lock")
    if locked:
        await i_mmap_lock_read(inode)
    if len(inode.i_mmap):
        await unmap_mapping_range_tree(kernel, inode, first, last, details)
    if locked:
        await i_mmap_unlock_read(inode)


async def unmap_mapping_folio(kernel: Any, inode: Inode, index: int) -> None:
    """unmap_mapping_folio(): unmap the page-cache page at ``index`` from
    every mapping of the file (not the COWed copies).  Caller holds the
    folio lock (lock order: folio lock -> i_mmap_rwsem -> PTL)."""
    await unmap_mapping_pages(kernel, inode, index, 1, even_cows=False)


async def truncate_inode_pages_range(kernel: Any, inode: Inode, lstart: int, lend: int) -> None:
    """truncate_inode_pages_range() / shmem_undo_range(): remove the bytes
    [lstart, lend] (lend -1: to the end) from the page cache and the
    backing store: whole pages locked, unmapped if mapped, removed; the
    partial pages at either edge zeroed in place (they stay cached and
    mapped).  Entered with the inode lock held, nothing else; takes each
    folio lock, then PTLs under it."""
    mem = kernel.mem
    drop_first = kernel.config.knob("truncate_drops_before_unmap")
    first = (lstart + PAGE_SIZE - 1) // PAGE_SIZE         # first whole page
    stop = 1 << 64 if lend < 0 else (lend + 1) // PAGE_SIZE   # first page after the whole ones
    for idx in sorted(i for i in inode.pages if first <= i < stop):
        page = await FindGetPage(inode, idx)               # find_lock_entries()
        if page is None:
            continue
        await folio_lock(page)
        if page.mapping is inode and inode.pages.get(idx) is page:
            # truncate_inode_folio(): unmap (a fault may have mapped it since
            # the caller's unmap_mapping_range), then remove — knob
            # truncate_drops_before_unmap: remove first, unmap after
            if page.mapcount and not drop_first:
                await unmap_mapping_folio(kernel, inode, idx)
            filemap_remove_folio(kernel, inode, page)
            if drop_first and page.mapcount:
                await unmap_mapping_folio(kernel, inode, idx)
        await folio_unlock(page)
        await PutPage(mem, page)
    for idx in [i for i in inode.data if first <= i < stop]:
        del inode.data[idx]
    for idx in sorted(i for i in inode.swapped if first <= i < stop):
        shmem_free_swap(kernel, inode, idx)                # shmem_undo_range(): swap entries
    # the partial pages at the edges: zero the part of them in [lstart, lend]
    edges = set()
    if lstart % PAGE_SIZE:
        edges.add(lstart // PAGE_SIZE)
    if lend >= 0 and (lend + 1) % PAGE_SIZE:
        edges.add(lend // PAGE_SIZE)
    for idx in sorted(edges):
        base = idx * PAGE_SIZE
        lo = max(lstart, base) - base
        hi = (PAGE_SIZE if lend < 0 else min(lend + 1, base + PAGE_SIZE) - base)
        if hi <= lo:
            continue
        if idx in inode.swapped:                           # shmem_get_folio(SGP_READ): swap it in
            shmem_swapin_folio(kernel, inode, idx, fault=False)
        page = await FindGetPage(inode, idx)
        if page is not None:
            await folio_lock(page)
            if page.mapping is inode:
                page.write(lo, bytes(hi - lo))             # truncate_inode_partial_folio()
            await folio_unlock(page)
            await PutPage(mem, page)
        elif idx in inode.data:
            old = inode.data[idx].ljust(PAGE_SIZE, b"\0")
            inode.data[idx] = old[:lo] + bytes(hi - lo) + old[hi:]


async def do_truncate(kernel: Any, inode: Inode, newsize: int) -> None:
    """shmem_setattr(ATTR_SIZE) — what ftruncate(), truncate() and open
    with O_TRUNC reach (do_truncate → notify_change): the new size is
    written first; shrinking (or the same size: the tail of the last page
    is zeroed all the same) then runs truncate_pagecache(): unmap, remove,
    unmap again (see the module doc).  Growing only sets the size: what a
    mapping wrote past the old EOF in its last page becomes file data, as
    on tmpfs.  Takes the inode lock for write; nothing held on entry."""
    await inode.i_rwsem.down_write()
    try:
        oldsize = await i_size_read(inode)
        # knob truncate_size_after_unmap (a mutant): the size is written once
        # the pages are gone — a fault in between reads the old size
        late = kernel.config.knob("truncate_size_after_unmap") and newsize < oldsize
        if newsize != oldsize and not late:
            await Store(inode, "size", newsize)            # i_size_write()
        if newsize <= oldsize:
            await truncate_pagecache(kernel, inode, newsize, oldsize)
        if late:
            await Store(inode, "size", newsize)
    finally:
        await inode.i_rwsem.up_write()


async def truncate_pagecache(kernel: Any, inode: Inode, newsize: int, oldsize: int) -> None:
    """truncate_pagecache(), as shmem_setattr does it: the new i_size is
    already written.  Caller holds the inode lock."""
    holebegin = (newsize + PAGE_SIZE - 1) // PAGE_SIZE
    drop_first = kernel.config.knob("truncate_drops_before_unmap")
    if oldsize > holebegin * PAGE_SIZE and not drop_first:
        await unmap_mapping_pages(kernel, inode, holebegin, 0, even_cows=True)
    await truncate_inode_pages_range(kernel, inode, newsize, -1)
    # unmap again to remove racily COWed private pages
    if oldsize > holebegin * PAGE_SIZE:
        await unmap_mapping_pages(kernel, inode, holebegin, 0, even_cows=True)


async def shmem_punch_hole(kernel: Any, inode: Inode, offset: int, length: int) -> None:
    """shmem_fallocate(FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE): the
    whole pages of [offset, offset + length) are unmapped from every
    mapping (COWed private copies stay: no even_cows) and removed; the
    partial pages at the edges are zeroed in place; the size stays.
    Takes the inode lock for write; nothing held on entry."""
    await inode.i_rwsem.down_write()
    try:
        unmap_start = (offset + PAGE_SIZE - 1) // PAGE_SIZE * PAGE_SIZE
        unmap_end = (offset + length) // PAGE_SIZE * PAGE_SIZE - 1
        if unmap_end > unmap_start and not kernel.config.knob("truncate_drops_before_unmap"):
            await unmap_mapping_pages(kernel, inode, unmap_start >> 12,
                                      (1 + unmap_end - unmap_start) >> 12, even_cows=False)
        await truncate_inode_pages_range(kernel, inode, offset, offset + length - 1)
        # no second unmap: hole punching leaves COWed pages
    finally:
        await inode.i_rwsem.up_write()
