"""Unmapping a file range from every address space that maps it
(mm/memory.c unmap_mapping_range, used by hole punching and truncation).

There is no i_mmap tree in the model: the VMAs mapping an inode are found
by walking the VMAs of every live mm.  Locks: Linux holds the file's
i_mmap_rwsem (read) and each PTE table's PTL, not the other mms'
mmap_lock; the model takes the PTLs (zap_pte_range) and, like the direct
driver's callers, runs between the other mms' operations.
"""

from __future__ import annotations

from typing import Any

from specfault.mm.filemap import Inode
from specfault.mm.mmu_gather import MmuGather, zap_present_page
from specfault.mm.pgtable import pte_pfn, pte_present, pte_special, walk_range
from specfault.runtime import LoadItem, StoreItem


def vmas_mapping(mm: Any, inode: Inode) -> list[Any]:
    """The VMAs of ``mm`` whose file is ``inode`` (what i_mmap would list)."""
    out = []
    addr = 0
    while (vma := mm.find_vma(addr)) is not None:
        if vma.vm_file is not None and vma.vm_file.inode is inode:
            out.append(vma)
        addr = vma.vm_end
    return out


async def zap_file_ptes(tlb: MmuGather, vma: Any, start: int, end: int, even_cows: bool) -> None:
    """zap_page_range_single() with zap_details: clear the PTEs of [start,
    end) mapping page-cache pages — and, with ``even_cows``, the private
    anonymous copies (COWed pages) too."""
    mm = tlb.mm
    mem = mm.kernel.mem
    for pt, lo, hi in await walk_range(mm, start, end):
        await pt.ptl.lock()
        for i in range((lo - pt.base) >> 12, (hi - pt.base) >> 12):
            pte = await LoadItem(pt, pt.entries, i)
            if not pte_present(pte):
                continue
            page = None if pte_special(pte) else mem.pages[pte_pfn(pte)]
            if page is not None and page.anon and not even_cows:
                continue                         # should_zap_folio(): keep the COWed copy
            await StoreItem(pt, pt.entries, i, 0)
            pt.nr -= 1
            if page is not None:
                zap_present_page(tlb, pte, page)
        await pt.ptl.unlock()
        tlb.track(lo, hi)


async def unmap_mapping_range(kernel: Any, inode: Inode, first: int, nr: int,
                              even_cows: bool) -> None:
    """unmap_mapping_pages(): unmap file pages [first, first + nr) (nr 0:
    to the end of the file) from every VMA of every mm that maps them."""
    last = first + nr - 1 if nr else 1 << 64
    for mm in list(kernel.mms):
        if mm.dead:
            continue
        for vma in vmas_mapping(mm, inode):
            vfirst = vma.vm_pgoff
            vlast = vma.vm_pgoff + vma.pages() - 1
            if vlast < first or vfirst > last:
                continue
            start = vma.vm_start + ((max(first, vfirst) - vfirst) << 12)
            end = vma.vm_start + ((min(last, vlast) - vfirst + 1) << 12)
            tlb = MmuGather(mm)
            await zap_file_ptes(tlb, vma, start, end, even_cows)
            await tlb.finish()
