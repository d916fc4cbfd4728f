"""fork's copy of the address space (kernel/fork.c dup_mmap, mm/memory.c
copy_page_range) and the teardown at exit (exit_mmap).

dup_mmap write-locks every parent VMA it copies (Linux 6.4.x fix for
bugzilla 217624: a write fault under the VMA lock must not run while the
parent's PTEs are being write-protected for COW).  Private anonymous pages
become shared COW pages: both PTEs write-protected, PageAnonExclusive
cleared, mapcount and refcount raised.  VMAs marked VM_DONTCOPY
(MADV_DONTFORK) are not copied; VMAs marked VM_WIPEONFORK (MADV_WIPEONFORK,
MAP_DROPPABLE) are copied empty — same range and flags, no anon_vma, no
PTEs: the child reads zeroes; shared mappings stay shared; VMAs without
anon pages are not copied at the PTE level at all (the child faults them
in).
"""

from __future__ import annotations

from typing import Any

from specfault.mm.anon import anon_vma_fork
from specfault.mm.huge_memory import copy_huge_pmd
from specfault.mm.mm_struct import MmStruct
from specfault.mm.mmap_lock import mmap_write_lock, mmap_write_unlock, vma_start_write
from specfault.mm.mmu_gather import MmuGather, free_pgtables, rss_kind, unmap_page_range
from specfault.mm.pgtable import (
    _PAGE_ACCESSED,
    _PAGE_DIRTY,
    PMD_LEVEL,
    PTE_LEVEL,
    SWP_MIGRATION_READ,
    is_migration_entry_dirty,
    is_migration_entry_young,
    is_swap_pte,
    make_migration_entry,
    non_swap_entry,
    pte_pfn,
    pte_present,
    pte_special,
    pte_swp_clear_exclusive,
    pte_swp_exclusive,
    pte_swp_mksoft_dirty,
    pte_swp_soft_dirty,
    pte_to_swp_entry,
    pte_write,
    pte_wrprotect,
    swp_entry_to_pte,
    swp_offset_pfn,
    swp_type,
    walk,
    walk_range,
)
from specfault.mm.swapfile import swap_duplicate
from specfault.mm.tlb import flush_tlb_range
from specfault.mm.vma import (
    VM_DONTCOPY,
    VM_MIXEDMAP,
    VM_PFNMAP,
    VM_SHARED,
    VM_UFFD_WP,
    VM_WIPEONFORK,
    VmArea,
)
from specfault.mm.vma_ops import vma_link
from specfault.runtime import LoadItem, StoreItem

TASK_END = 1 << 48


def vma_needs_copy(vma: VmArea) -> bool:
    """Must fork copy the PTEs?  Only where a fault could not rebuild them:
    special mappings and anonymous pages (an anon_vma)."""
    if vma.vm_flags & (VM_PFNMAP | VM_MIXEDMAP | VM_UFFD_WP):
        return True
    return vma.anon_vma is not None


async def dup_mmap(oldmm: Any) -> MmStruct:
    """Return a copy of ``oldmm`` for a child.  Takes oldmm's mmap_lock."""
    mm = MmStruct(oldmm.kernel)
    await mmap_write_lock(oldmm)
    await mmap_write_lock(mm)                    # mmap_write_lock_nested(mm)
    mm.start_brk, mm.brk, mm.mmap_base = oldmm.start_brk, oldmm.brk, oldmm.mmap_base
    mm.start_stack, mm.rlimit_stack, mm.mmap_min_addr = \
        oldmm.start_stack, oldmm.rlimit_stack, oldmm.mmap_min_addr
    # knob fork_flush_before_wrprotect (a mutant): the parent's TLBs are
    # flushed before its PTEs are write-protected, not after — a CPU that
    # refills a writable entry in between keeps writing the shared page
    early = oldmm.config.knob("fork_flush_before_wrprotect")
    if early:
        await flush_tlb_range(oldmm, 0, TASK_END)
    for mpnt in oldmm.vmas():
        # knob pervma_fork_no_vma_lock: without this, a write fault under
        # the parent's VMA lock races with the COW write-protect below
        if not oldmm.config.knob("pervma_fork_no_vma_lock"):
            await vma_start_write(mpnt)
        if mpnt.vm_flags & VM_DONTCOPY:
            continue
        tmp = mpnt.dup()
        tmp.vm_mm = mm
        if tmp.vm_flags & VM_WIPEONFORK:
            # a clean slate in the child: no anon_vma until its first fault,
            # and no page copied
            tmp.anon_vma, tmp.anon_vma_chain = None, []
        else:
            anon_vma_fork(tmp, mpnt)
        await vma_link(mm, tmp)
        mm.total_vm += tmp.pages()
        if not tmp.vm_flags & VM_WIPEONFORK and vma_needs_copy(mpnt):
            await copy_page_range(tmp, mpnt)
    if not early:
        await flush_tlb_range(oldmm, 0, TASK_END)    # flush_tlb_mm(oldmm)
    await mmap_write_unlock(mm)
    await mmap_write_unlock(oldmm)
    oldmm.kernel.mms.append(mm)
    return mm


async def copy_page_range(dst_vma: VmArea, src_vma: VmArea) -> None:
    src_mm, dst_mm = src_vma.vm_mm, dst_vma.vm_mm
    cow = src_vma.is_cow_mapping()
    for spt, lo, hi in await walk_range(src_mm, src_vma.vm_start, src_vma.vm_end, huge=True):
        if spt.level != PTE_LEVEL:
            # copy_pmd_range(): a huge PMD (never across a VMA boundary:
            # vma_adjust_trans_huge) is shared whole, both write-protected
            dst_pmd = await walk(dst_mm, lo, PMD_LEVEL, alloc=True)
            await copy_huge_pmd(dst_vma, src_vma, dst_pmd, spt, lo)
            continue
        dpt = await walk(dst_mm, lo, alloc=True)
        await dpt.ptl.lock()
        await spt.ptl.lock()
        for i in range((lo - spt.base) >> 12, (hi - spt.base) >> 12):
            pte = await LoadItem(spt, spt.entries, i)
            if is_swap_pte(pte) and non_swap_entry(pte_to_swp_entry(pte)):
                await copy_migration_entry(src_mm, dst_mm, src_vma, spt, dpt, i, pte)
                continue
            if is_swap_pte(pte):
                # copy_nonpresent_pte(): one more reference to the slot; the
                # entry is no longer exclusive to the parent
                if swap_duplicate(src_mm.kernel, pte_to_swp_entry(pte)) < 0:
                    raise AssertionError("fork: a swap PTE names a free slot")
                if pte_swp_exclusive(pte):
                    pte = pte_swp_clear_exclusive(pte)
                    await StoreItem(spt, spt.entries, i, pte)
                dst_mm.rss["swap"] += 1
                await StoreItem(dpt, dpt.entries, i, pte)
                dpt.nr += 1
                continue
            if not pte_present(pte):
                continue
            if not pte_special(pte):
                page = src_mm.kernel.mem.pages[pte_pfn(pte)]
                page.refcount += 1
                page.mapcount += 1
                if page.anon:
                    page.anon_exclusive = False     # folio_try_dup_anon_rmap_pte()
                dst_mm.rss[rss_kind(page)] += 1
            if cow and pte_write(pte):
                pte = pte_wrprotect(pte)
                # knob fork_no_wrprotect_parent (a mutant): only the child's
                # copy is write-protected; the parent keeps writing a page
                # the child maps
                if not src_mm.config.knob("fork_no_wrprotect_parent"):
                    await StoreItem(spt, spt.entries, i, pte)   # ptep_set_wrprotect()
            child = pte & ~_PAGE_ACCESSED                  # pte_mkold()
            if src_vma.vm_flags & VM_SHARED:
                child &= ~_PAGE_DIRTY                      # pte_mkclean()
            await StoreItem(dpt, dpt.entries, i, child)
            dpt.nr += 1
        await spt.ptl.unlock()
        await dpt.ptl.unlock()


async def exit_mmap(mm: Any) -> None:
    """Tear the address space down: zap everything, free page tables and
    VMAs.  Frames are freed when their last mapping goes."""
    await mmap_write_lock(mm)
    tlb = MmuGather(mm)
    vmas = mm.vmas()
    for vma in vmas:
        await vma_start_write(vma)
        await unmap_page_range(tlb, vma, vma.vm_start, vma.vm_end)
    await free_pgtables(tlb, 0, TASK_END, 0, TASK_END)
    await tlb.finish()
    from specfault.mm.vma_ops import remove_from_tree, vm_area_free
    for vma in vmas:
        await remove_from_tree(mm, vma)
        await vm_area_free(mm, vma)
    mm.total_vm = 0
    mm.dead = True
    await mmap_write_unlock(mm)
    if mm in mm.kernel.mms:
        mm.kernel.mms.remove(mm)


async def copy_migration_entry(src_mm: Any, dst_mm: Any, vma: Any, spt: Any, dpt: Any, i: int,
                               pte: int) -> None:
    """copy_nonpresent_pte() for a migration entry (mm/migrate.py): the
    child's PTE is the entry too, counted as the page it stands for; a
    writable or exclusive entry of a COW mapping becomes readable in both
    (the page is shared now) — remove_migration_ptes then maps it
    read-only in both.  Caller holds both PTLs (and mmap_lock for write)."""
    entry = pte_to_swp_entry(pte)
    page = src_mm.kernel.mem.pages[swp_offset_pfn(entry)]
    dst_mm.rss[rss_kind(page)] += 1
    if swp_type(entry) != SWP_MIGRATION_READ and vma.is_cow_mapping():
        new = swp_entry_to_pte(make_migration_entry(
            SWP_MIGRATION_READ, swp_offset_pfn(entry), young=is_migration_entry_young(entry),
            dirty=is_migration_entry_dirty(entry)))
        if pte_swp_soft_dirty(pte):
            new = pte_swp_mksoft_dirty(new)
        pte = new
        await StoreItem(spt, spt.entries, i, pte)
    await StoreItem(dpt, dpt.entries, i, pte)
    dpt.nr += 1
