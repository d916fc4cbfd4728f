"""mprotect(2) (mm/mprotect.c): change protections VMA by VMA, merging and
splitting, and rewrite the PTEs (change_protection).  A hole stops the walk
with -ENOMEM after the VMAs before it were changed, as on Linux; a range
whose end wraps past 2**64 is refused with -ENOMEM before anything changes
(do_mprotect_pkey(): ``end <= start``).  ``PROT_GROWSDOWN`` extends the
range down to the start of the VM_GROWSDOWN VMA it begins in (-EINVAL on
any other VMA); ``PROT_GROWSUP`` is -EINVAL (no VM_GROWSUP on x86-64)."""

from __future__ import annotations

import errno
from typing import Any

from specfault.constants import PAGE_MASK, PROT_GROWSDOWN, PROT_GROWSUP
from specfault.mm.huge_memory import __split_huge_pmd, change_huge_pmd
from specfault.mm.mmap import ULONG_MAX, calc_vm_prot_bits, page_align, prot_valid
from specfault.mm.mmap_lock import mmap_write_lock, mmap_write_unlock, vma_start_write
from specfault.mm.mmu_gather import MmuGather
from specfault.mm.pgtable import (
    _PAGE_RW,
    HPAGE_PMD_SIZE,
    PTE_LEVEL,
    SWP_MIGRATION_READ_EXCLUSIVE,
    is_migration_entry_dirty,
    is_migration_entry_young,
    is_migration_pte,
    is_writable_migration_entry,
    make_migration_entry,
    pte_dirty,
    pte_mkwrite,
    pte_modify,
    pte_pfn,
    pte_present,
    pte_special,
    pte_swp_mksoft_dirty,
    pte_swp_soft_dirty,
    pte_to_swp_entry,
    pte_write,
    swp_entry_to_pte,
    swp_offset_pfn,
    walk,
    walk_range,
)
from specfault.mm.tlb import flush_tlb_range
from specfault.mm.vma import (
    VM_ACCESS_FLAGS,
    VM_ACCOUNT,
    VM_GROWSDOWN,
    VM_HUGETLB,
    VM_NORESERVE,
    VM_SHARED,
    VM_WRITE,
    VmArea,
)
from specfault.mm.vma_ops import vma_modify
from specfault.runtime import LoadItem, StoreItem


def can_change_pte_writable(mm: Any, vma: VmArea, pte: int) -> bool:
    """May mprotect make this PTE writable without a write fault?  Only an
    exclusive anonymous page of a private mapping (the write fault would
    reuse it anyway), or an already-dirty page of a shared mapping."""
    if not vma.vm_flags & VM_SHARED:
        if pte_special(pte):
            return False
        page = mm.kernel.mem.pages.get(pte_pfn(pte))
        return page is not None and page.anon and page.anon_exclusive
    return pte_dirty(pte)


async def change_protection(mm: Any, vma: VmArea, start: int, end: int) -> None:
    """Rewrite present PTEs of [start, end) to ``vma.vm_page_prot``, then
    flush.  Writable PTEs stay writable only where that is safe without a
    fault (an exclusive anon page in a writable private VMA)."""
    prot = vma.vm_page_prot
    changed = False
    # knob mprotect_no_flush_on_wrprotect (a mutant): flush only when a PTE
    # loses more than write permission — a CPU keeps writing through its
    # cached writable entry after mprotect(PROT_READ) returned
    wp_only = mm.config.knob("mprotect_no_flush_on_wrprotect")
    for pt, lo, hi in await walk_range(mm, start, end, huge=True):
        if pt.level != PTE_LEVEL:
            # change_pmd_range() on a huge PMD: change_huge_pmd when the
            # range covers it whole, else split it and go on with its PTEs
            if hi - lo == HPAGE_PMD_SIZE and await change_huge_pmd(vma, pt, lo, prot):
                changed = True
                continue
            await __split_huge_pmd(vma, pt, lo)
            pt = await walk(mm, lo)
            if pt.level != PTE_LEVEL:
                continue
        await pt.ptl.lock()
        for i in range((lo - pt.base) >> 12, (hi - pt.base) >> 12):
            pte = await LoadItem(pt, pt.entries, i)
            if not pte_present(pte):
                if is_migration_pte(pte) and \
                        is_writable_migration_entry(entry := pte_to_swp_entry(pte)):
                    # change_pte_range(): "a protection check is difficult
                    # so just be safe and disable write" — the folio is
                    # anonymous: readable-exclusive (mm/migrate.py)
                    new = swp_entry_to_pte(make_migration_entry(
                        SWP_MIGRATION_READ_EXCLUSIVE, swp_offset_pfn(entry),
                        young=is_migration_entry_young(entry),
                        dirty=is_migration_entry_dirty(entry)))
                    if pte_swp_soft_dirty(pte):
                        new = pte_swp_mksoft_dirty(new)
                    await StoreItem(pt, pt.entries, i, new)
                continue
            new = pte_modify(pte, prot)
            if vma.vm_flags & VM_WRITE and not pte_write(new) and can_change_pte_writable(
                    mm, vma, pte):
                new = pte_mkwrite(new)
            if new != pte:
                await StoreItem(pt, pt.entries, i, new)
                changed = changed or not wp_only or (new | _PAGE_RW) != (pte | _PAGE_RW)
        await pt.ptl.unlock()
    if changed:
        mm.kernel.count("tlb_flush")
        await flush_tlb_range(mm, start, end)


async def mprotect_fixup(mm: Any, tlb: MmuGather, vma: VmArea, prev: VmArea | None,
                         start: int, end: int, newflags: int) -> tuple[int, VmArea]:
    oldflags = vma.vm_flags
    if newflags == oldflags:
        return 0, vma
    if newflags & VM_WRITE:
        if not oldflags & (VM_ACCOUNT | VM_WRITE | VM_HUGETLB | VM_SHARED | VM_NORESERVE):
            newflags |= VM_ACCOUNT
    elif oldflags & VM_ACCOUNT and vma.vm_file is None and vma.anon_vma is None:
        newflags &= ~VM_ACCOUNT
    got = await vma_modify(mm, prev, vma, start, end, newflags)
    if isinstance(got, int):
        return got, vma
    # knob pervma_mprotect_no_vma_lock: change vm_flags under a VMA-locked
    # fault's feet — it maps the page with the permissions it read before
    if not mm.config.knob("pervma_mprotect_no_vma_lock"):
        await vma_start_write(got)
    got.set_flags(newflags)
    await change_protection(mm, got, start, end)
    return 0, got


async def sys_mprotect(mm: Any, start: int, length: int, prot: int) -> int:
    grows = prot & (PROT_GROWSDOWN | PROT_GROWSUP)
    prot &= ~(PROT_GROWSDOWN | PROT_GROWSUP)
    if grows == PROT_GROWSDOWN | PROT_GROWSUP:
        return -errno.EINVAL
    if start & ~PAGE_MASK:
        return -errno.EINVAL
    if not length:
        return 0
    length = page_align(length)
    end = (start + length) & ULONG_MAX
    if end <= start:           # a length that wraps (or rounds up to 0) changes nothing
        return -errno.ENOMEM
    if not prot_valid(prot):
        return -errno.EINVAL
    await mmap_write_lock(mm)
    try:
        return await _do_mprotect(mm, start, end, prot, grows)
    finally:
        await mmap_write_unlock(mm)


async def _do_mprotect(mm: Any, start: int, end: int, prot: int, grows: int = 0) -> int:
    vma = mm.find_vma_intersection(start, end)
    if vma is None:
        return -errno.ENOMEM
    if grows & PROT_GROWSDOWN:
        # the change reaches down to the start of the stack VMA (the part
        # it will grow into gets the same protection)
        start = vma.vm_start
        if not vma.vm_flags & VM_GROWSDOWN:
            return -errno.EINVAL
    else:
        if vma.vm_start > start:
            return -errno.ENOMEM
        if grows & PROT_GROWSUP:
            return -errno.EINVAL          # VM_GROWSUP does not exist on x86-64
    prev = vma if start > vma.vm_start else mm.mm_mt.prev(vma.vm_start)
    tlb = MmuGather(mm)
    nstart = start
    tmp = vma.vm_start
    error = 0
    while vma is not None and vma.vm_start < end:
        if vma.vm_start != tmp:
            error = -errno.ENOMEM
            break
        newflags = calc_vm_prot_bits(prot) | (vma.vm_flags & ~VM_ACCESS_FLAGS)
        if (newflags & ~(newflags >> 4)) & VM_ACCESS_FLAGS:
            error = -errno.EACCES
            break
        tmp = min(vma.vm_end, end)
        error, prev = await mprotect_fixup(mm, tlb, vma, prev, nstart, tmp, newflags)
        if error:
            break
        tmp = prev.vm_end          # vma_iter_end(): the end of what now covers nstart
        nstart = tmp
        vma = mm.find_vma(tmp)
    await tlb.finish()
    if not error and tmp < end:
        error = -errno.ENOMEM
    return error
