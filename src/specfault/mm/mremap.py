"""mremap(2) (mm/mremap.c): shrink, grow in place, move (MREMAP_MAYMOVE,
MREMAP_FIXED, MREMAP_DONTUNMAP), moving page tables rather than pages.

A move copies the VMA to the new place (merging there if it can), moves
the page-table entries — whole PTE tables when source and destination are
PMD-aligned (move_normal_pmd), else PTE by PTE under both PTLs — flushes
the old range, and unmaps the old VMA.
"""

from __future__ import annotations

import errno
from typing import Any

from specfault.constants import (
    MAP_FIXED,
    MAP_SHARED,
    MREMAP_DONTUNMAP,
    MREMAP_FIXED,
    MREMAP_MAYMOVE,
    PAGE_MASK,
    PMD_SIZE,
    TASK_SIZE,
)
from specfault.mm.huge_memory import __split_huge_pmd
from specfault.mm.mmap import ULONG_MAX, do_vmi_munmap, get_unmapped_area, page_align
from specfault.mm.mmap_lock import mmap_write_lock, mmap_write_unlock, vma_start_write
from specfault.mm.pgtable import PMD_LEVEL, PageTable, pmd_trans_huge, pte_alloc, pte_offset_map, walk
from specfault.mm.rmap import anon_vma_chain_link
from specfault.mm.tlb import flush_tlb_range
from specfault.mm.vma import (
    VM_DONTEXPAND,
    VM_LOCKED,
    VM_MAYSHARE,
    VM_PFNMAP,
    VM_SHARED,
    VmArea,
)
from specfault.mm.vma_ops import vma_link, vma_merge_new_range
from specfault.runtime import LoadItem, StoreItem, Work


async def sys_mremap(mm: Any, addr: int, old_len: int, new_len: int, flags: int,
                     new_addr: int) -> int:
    """do_mremap(): page-align both lengths (PAGE_ALIGN wraps a length
    within a page of 2**64 to 0, as in C), check_mremap_params() before
    the lock, then the work under mmap_lock (write)."""
    old_len = page_align(old_len)
    new_len = page_align(new_len)
    ret = check_mremap_params(addr, old_len, new_len, flags, new_addr)
    if ret:
        return ret
    await mmap_write_lock(mm)
    try:
        return await _do_mremap(mm, addr, old_len, new_len, flags, new_addr)
    finally:
        await mmap_write_unlock(mm)


def check_mremap_params(addr: int, old_len: int, new_len: int, flags: int,
                        new_addr: int) -> int:
    """check_mremap_params() (Linux 6.17+): everything that needs no VMA,
    before anything changes.  Returns 0 or -EINVAL."""
    if flags & ~(MREMAP_FIXED | MREMAP_MAYMOVE | MREMAP_DONTUNMAP):
        return -errno.EINVAL
    if addr & ~PAGE_MASK:
        return -errno.EINVAL
    # a zero old_len is the "duplicate a shared mapping" special case; a
    # zero new_len is nonsense, a new_len beyond the address space too
    if not new_len or new_len > TASK_SIZE:
        return -errno.EINVAL
    if not flags & (MREMAP_FIXED | MREMAP_DONTUNMAP):      # !vrm_implies_new_addr()
        return 0
    # new_addr is checked (as a hint) with MREMAP_DONTUNMAP too
    if new_addr > TASK_SIZE - new_len or new_addr & ~PAGE_MASK:
        return -errno.EINVAL
    if not flags & MREMAP_MAYMOVE:
        return -errno.EINVAL
    if flags & MREMAP_DONTUNMAP and old_len != new_len:
        return -errno.EINVAL
    # vrm_overlaps(), in unsigned long: Linux 6.18 rejects an overlapping
    # target before it looks the source up (EINVAL beats EFAULT)
    end_old = (addr + old_len) & ULONG_MAX
    end_new = (new_addr + new_len) & ULONG_MAX
    if end_old > new_addr and end_new > addr:
        return -errno.EINVAL
    return 0


def vma_to_resize(mm: Any, addr: int, old_len: int, new_len: int) -> VmArea | int:
    vma = mm.vma_lookup(addr)
    if vma is None:
        return -errno.EFAULT
    if old_len > vma.vm_end - addr:
        return -errno.EFAULT
    if new_len == old_len:
        return vma  # type: ignore[no-any-return]
    if vma.vm_flags & (VM_DONTEXPAND | VM_PFNMAP):
        return -errno.EFAULT
    return vma  # type: ignore[no-any-return]


async def _do_mremap(mm: Any, addr: int, old_len: int, new_len: int, flags: int,
                     new_addr: int) -> int:
    vma = mm.vma_lookup(addr)
    if vma is None:
        return -errno.EFAULT
    if not old_len and not vma.vm_flags & (VM_SHARED | VM_MAYSHARE):
        return -errno.EINVAL      # "duplicating" a private mapping is refused
    if flags & (MREMAP_FIXED | MREMAP_DONTUNMAP):
        return await mremap_to(mm, addr, old_len, new_len, flags, new_addr)
    if old_len >= new_len:
        ret = await do_vmi_munmap(mm, addr + new_len, old_len - new_len)
        if ret and old_len != new_len:
            return ret
        return addr
    got = vma_to_resize(mm, addr, old_len, new_len)
    if isinstance(got, int):
        return got
    vma = got
    delta = new_len - old_len
    if old_len == vma.vm_end - addr and vma_expandable(mm, vma, delta):
        await vma_start_write(vma)
        merged = await vma_merge_new_range(
            mm, vma, mm.find_vma(vma.vm_end + delta), vma.vm_end, vma.vm_end + delta,
            vma.vm_flags, vma.vm_file, vma.vm_pgoff + vma.pages(), vma.anon_vma, None)
        if merged is None:
            return -errno.ENOMEM
        mm.total_vm += delta >> 12
        return addr
    if not flags & MREMAP_MAYMOVE:
        return -errno.ENOMEM
    map_flags = MAP_SHARED if vma.vm_flags & VM_MAYSHARE else 0
    target = get_unmapped_area(mm, vma.vm_file, 0, new_len,
                               vma.vm_pgoff + ((addr - vma.vm_start) >> 12), map_flags)
    if target < 0:
        return target
    return await move_vma(mm, vma, addr, old_len, new_len, target, flags)


def vma_expandable(mm: Any, vma: VmArea, delta: int) -> bool:
    end = vma.vm_end + delta
    if end > TASK_SIZE:
        return False
    return mm.find_vma_intersection(vma.vm_end, end) is None


async def mremap_to(mm: Any, addr: int, old_len: int, new_len: int, flags: int,
                    new_addr: int) -> int:
    """mremap_to(): move to ``new_addr`` (MREMAP_FIXED) or to a fresh place
    (MREMAP_DONTUNMAP).  As on Linux 6.18, every check that can fail is made
    before the destination or the old tail is unmapped, so a failing call
    changes nothing; and a pure move (MREMAP_FIXED, old_len == new_len, with or
    without DONTUNMAP) may span several VMAs and the gaps between them
    (remap_move(), Linux 6.17+).  The MREMAP_FIXED target was validated
    by sys_mremap() before the lock was taken."""
    vma = mm.vma_lookup(addr)
    assert vma is not None, "mremap_to: caller looked the VMA up"
    multi = flags & MREMAP_FIXED and old_len == new_len and old_len > vma.vm_end - addr
    if not multi:
        # remap_is_valid() on what will be moved: the part that survives a shrink
        got = vma_to_resize(mm, addr, min(old_len, new_len), new_len)
        if isinstance(got, int):
            return got
        if flags & MREMAP_DONTUNMAP and vma.vm_flags & (VM_DONTEXPAND | VM_PFNMAP):
            return -errno.EINVAL
    if multi:
        return await remap_move(mm, addr, old_len, new_addr, flags & MREMAP_DONTUNMAP)
    if flags & MREMAP_FIXED:
        ret = await do_vmi_munmap(mm, new_addr, new_len)
        if ret:
            return ret
    if old_len > new_len:
        ret = await do_vmi_munmap(mm, addr + new_len, old_len - new_len)
        if ret:
            return ret
        old_len = new_len
    got = vma_to_resize(mm, addr, old_len, new_len)
    if isinstance(got, int):
        return got
    vma = got
    map_flags = MAP_FIXED if flags & MREMAP_FIXED else 0
    if vma.vm_flags & VM_MAYSHARE:
        map_flags |= MAP_SHARED
    # vrm_set_new_addr(): with MREMAP_DONTUNMAP alone, new_addr is a hint
    target = get_unmapped_area(mm, vma.vm_file, new_addr, new_len,
                               vma.vm_pgoff + ((addr - vma.vm_start) >> 12), map_flags)
    if target < 0:
        return target
    return await move_vma(mm, vma, addr, old_len, new_len, target, flags)


async def remap_move(mm: Any, addr: int, length: int, new_addr: int, dontunmap: int) -> int:
    """remap_move(): move every VMA part in [addr, addr+length) to the same
    offset from ``new_addr``; gaps stay gaps.  Each part unmaps only its own
    destination: what the destination range holds opposite a gap survives
    (as on the host kernel)."""
    parts = [(max(v.vm_start, addr), min(v.vm_end, addr + length))
             for v in mm.vmas(addr, addr + length)]
    for start, end in parts:
        ret = await do_vmi_munmap(mm, new_addr + (start - addr), end - start)
        if ret:
            return ret
        vma = mm.vma_lookup(start)
        assert vma is not None, "remap_move: a VMA part vanished"
        ret = await move_vma(mm, vma, start, end - start, end - start,
                             new_addr + (start - addr), MREMAP_FIXED | dontunmap)
        if ret < 0:
            return ret
    return new_addr


async def copy_vma(mm: Any, vma: VmArea, addr: int, length: int, pgoff: int) -> VmArea:
    """The VMA at the destination: an existing neighbour extended over it
    (merge), or a copy of ``vma``."""
    if vma.vm_file is None and vma.anon_vma is None:
        pgoff = addr >> 12     # unfaulted anon: give it the pgoff of its new home
    prev = mm.mm_mt.prev(addr)
    nxt = mm.find_vma(addr + length)
    merged = await vma_merge_new_range(mm, prev, nxt, addr, addr + length, vma.vm_flags,
                                       vma.vm_file, pgoff, vma.anon_vma, vma)
    if merged is not None:
        return merged
    new = vma.dup()
    new.vm_start, new.vm_end, new.vm_pgoff = addr, addr + length, pgoff
    await vma_link(mm, new)
    return new


async def move_vma(mm: Any, vma: VmArea, old_addr: int, old_len: int, new_len: int,
                   new_addr: int, flags: int) -> int:
    # knob pervma_mremap_no_vma_lock (a mutant): the source VMA is not
    # write-locked — a fault under its VMA lock installs a PTE behind
    # move_page_tables, left in the old range (and zapped with it)
    if not mm.config.knob("pervma_mremap_no_vma_lock"):
        await vma_start_write(vma)
    new_pgoff = vma.vm_pgoff + ((old_addr - vma.vm_start) >> 12)
    new_vma = await copy_vma(mm, vma, new_addr, new_len, new_pgoff)
    await vma_start_write(new_vma)
    await move_page_tables(mm, old_addr, new_addr, old_len, vma)
    mm.total_vm += new_len >> 12
    if flags & MREMAP_DONTUNMAP:
        # the old VMA stays, empty, unlocked; its anon_vma links are dropped
        vma.set_flags(vma.vm_flags & ~VM_LOCKED)
        if new_vma is not vma and vma.vm_start == old_addr and vma.vm_end == old_addr + old_len:
            anon_vma_chain_link(vma, None, [])   # unlink_anon_vmas()
        return new_addr
    if not old_len:
        return new_addr           # old_len 0 on a shared mapping: a duplicate
    ret = await do_vmi_munmap(mm, old_addr, old_len)
    if ret:
        return ret
    return new_addr


async def move_page_tables(mm: Any, old_addr: int, new_addr: int, length: int,
                           vma: VmArea) -> None:
    """Move every PTE of [old_addr, old_addr+len) of ``vma`` to new_addr.
    Whole PTE tables — and huge PMDs (move_huge_pmd) — move when both
    sides are PMD-aligned over a full PMD and the destination PMD is
    empty; a huge PMD that cannot move whole is split first.  The old
    range's TLB entries are flushed."""
    old_end = old_addr + length
    o, n = old_addr, new_addr
    while o < old_end:
        extent = min(PMD_SIZE - (o & (PMD_SIZE - 1)), PMD_SIZE - (n & (PMD_SIZE - 1)),
                     old_end - o)
        src_pmd = await walk(mm, o, PMD_LEVEL)
        src = None if src_pmd.level != PMD_LEVEL else await pte_offset_map(src_pmd, o)
        if pmd_trans_huge(src):
            dst_pmd = await walk(mm, n, PMD_LEVEL, alloc=True)
            if extent == PMD_SIZE and await pte_offset_map(dst_pmd, n) is None:
                await move_huge_pmd(mm, src_pmd, o, dst_pmd, n)
                o += extent
                n += extent
                continue
            await __split_huge_pmd(vma, src_pmd, o)
            src = await pte_offset_map(src_pmd, o)
        if src is None:
            o += extent
            n += extent
            continue
        dst_pmd = await walk(mm, n, PMD_LEVEL, alloc=True)
        if extent == PMD_SIZE and await pte_offset_map(dst_pmd, n) is None:
            await move_normal_pmd(mm, src_pmd, o, dst_pmd, n)
        else:
            await move_ptes(mm, src, o, n, extent, dst_pmd)
        o += extent
        n += extent
    await flush_tlb_range(mm, old_addr, old_end)


async def move_normal_pmd(mm: Any, src_pmd: PageTable, old: int, dst_pmd: PageTable,
                          new: int) -> None:
    """Move a whole PTE table: clear the old PMD entry, point the new one at
    the same table (whose PTL moves with it)."""
    si, di = (old >> 21) & 511, (new >> 21) & 511
    pt = src_pmd.entries[si]
    await pt.ptl.lock()
    await StoreItem(src_pmd, src_pmd.entries, si, None)
    src_pmd.nr -= 1
    pt.base = new & ~(PMD_SIZE - 1)
    await StoreItem(dst_pmd, dst_pmd.entries, di, pt)
    dst_pmd.nr += 1
    await pt.ptl.unlock()
    await flush_tlb_range(mm, old, old + PMD_SIZE)


async def move_huge_pmd(mm: Any, src_pmd: PageTable, old: int, dst_pmd: PageTable,
                        new: int) -> None:
    """move_huge_pmd(): the huge PMD moves whole, under both PMD locks (the
    source's, then the destination's, nested — unless one table holds
    both), then the old range is flushed."""
    si, di = (old >> 21) & 511, (new >> 21) & 511
    await src_pmd.ptl.lock()
    if dst_pmd is not src_pmd:
        await dst_pmd.ptl.lock()
    entry = await LoadItem(src_pmd, src_pmd.entries, si)
    await StoreItem(src_pmd, src_pmd.entries, si, None)       # pmdp_huge_get_and_clear
    src_pmd.nr -= 1
    await StoreItem(dst_pmd, dst_pmd.entries, di, entry)
    dst_pmd.nr += 1
    if dst_pmd is not src_pmd:
        await dst_pmd.ptl.unlock()
    await src_pmd.ptl.unlock()
    await flush_tlb_range(mm, old, old + PMD_SIZE)


async def move_ptes(mm: Any, src: PageTable, old: int, new: int, extent: int,
                    dst_pmd: PageTable) -> None:
    """Move the PTEs of [old, old+extent) from their table ``src`` to the
    table under ``dst_pmd`` for ``new`` (pte_alloc'ed), both PTLs held."""
    dst = await pte_alloc(mm, dst_pmd, new)
    await dst.ptl.lock()
    # knob mremap_no_src_ptl (a mutant): "mmap_lock for write excludes every
    # fault" — but not the writers that take no mmap_lock and rely on the
    # source PTL: reclaim's try_to_unmap, migration (mm/migrate.py)
    src_ptl = src is not dst and not mm.config.knob("mremap_no_src_ptl")
    if src_ptl:
        await src.ptl.lock()
    for k in range(extent >> 12):
        si = ((old >> 12) + k) & 511
        dj = ((new >> 12) + k) & 511
        pte = await LoadItem(src, src.entries, si)
        if pte == 0:
            continue
        await StoreItem(src, src.entries, si, 0)
        src.nr -= 1
        await StoreItem(dst, dst.entries, dj, pte)
        dst.nr += 1
    if src_ptl:
        await src.ptl.unlock()
    await dst.ptl.unlock()
    await Work("move_ptes", extent >> 12)
