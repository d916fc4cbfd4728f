"""madvise(2) (mm/madvise.c): DONTNEED, WILLNEED, DONTFORK, DOFORK.

The walk visits each VMA in the range; a hole is remembered as -ENOMEM and
returned at the end, after the mapped parts were advised (as on Linux).
"""

from __future__ import annotations

import errno
from typing import Any

from specfault.constants import (
    MADV_COLD,
    MADV_DODUMP,
    MADV_DOFORK,
    MADV_DONTDUMP,
    MADV_DONTFORK,
    MADV_DONTNEED,
    MADV_FREE,
    MADV_NORMAL,
    MADV_RANDOM,
    MADV_SEQUENTIAL,
    MADV_WILLNEED,
    PAGE_MASK,
)
from specfault.mm.mmap import page_align
from specfault.mm.mmap_lock import (
    mmap_read_lock,
    mmap_read_unlock,
    mmap_write_lock,
    mmap_write_unlock,
    vma_start_write,
)
from specfault.mm.mmu_gather import MmuGather, unmap_page_range
from specfault.mm.vma import (
    VM_DONTCOPY,
    VM_DONTDUMP,
    VM_HUGETLB,
    VM_IO,
    VM_LOCKED,
    VM_PFNMAP,
    VM_RAND_READ,
    VM_SEQ_READ,
    VmArea,
)
from specfault.mm.vma_ops import vma_modify

SUPPORTED = {MADV_NORMAL, MADV_RANDOM, MADV_SEQUENTIAL, MADV_WILLNEED, MADV_DONTNEED,
             MADV_FREE, MADV_DONTFORK, MADV_DOFORK, MADV_DONTDUMP, MADV_DODUMP, MADV_COLD}
# advice that only needs mmap_lock for read (madvise_need_mmap_write() false)
READ_LOCKED = {MADV_WILLNEED, MADV_DONTNEED, MADV_FREE, MADV_COLD}


async def sys_madvise(mm: Any, start: int, len_in: int, behavior: int) -> int:
    if behavior not in SUPPORTED:
        return -errno.EINVAL
    if start & ~PAGE_MASK:
        return -errno.EINVAL
    length = page_align(len_in)
    if len_in and not length:
        return -errno.EINVAL
    end = start + length
    if end < start or end >= 1 << 64:
        return -errno.EINVAL
    if end == start:
        return 0
    write = behavior not in READ_LOCKED
    if write:
        await mmap_write_lock(mm)
    else:
        await mmap_read_lock(mm)
    try:
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
    if behavior == MADV_FREE:
        # lazy free: pages stay mapped until reclaim, which the model never
        # runs under MADV_FREE, so the contents stay readable (as on Linux
        # without memory pressure)
        if vma.vm_file is not None or vma.vm_flags & (VM_LOCKED | VM_PFNMAP | VM_HUGETLB):
            return -errno.EINVAL, vma
        return 0, vma
    if behavior == MADV_DONTNEED:
        if vma.vm_flags & (VM_LOCKED | VM_PFNMAP | VM_HUGETLB):
            return -errno.EINVAL, vma
        tlb = MmuGather(mm)
        await unmap_page_range(tlb, vma, start, end)      # zap_page_range_single()
        await tlb.finish()
        return 0, vma
    if behavior == MADV_WILLNEED:
        if vma.vm_file is not None and not vma.vm_file.inode.shmem:
            inode = vma.vm_file.inode
            first = vma.linear_page_index(start)
            last = min(vma.linear_page_index(end - 1), inode.nr_pages() - 1)
            for idx in range(first, last + 1):     # vfs_fadvise(POSIX_FADV_WILLNEED)
                if mm.kernel.fs.cached_page(inode, idx, create=True) is None:
                    break
        return 0, vma
    if behavior == MADV_COLD:
        return 0, vma
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
    elif behavior == MADV_DONTDUMP:
        new_flags |= VM_DONTDUMP
    elif behavior == MADV_DODUMP:
        new_flags &= ~VM_DONTDUMP
    if new_flags == vma.vm_flags:
        return 0, vma
    got = await vma_modify(mm, prev, vma, start, end, new_flags)
    if isinstance(got, int):
        return got, vma
    await vma_start_write(got)
    got.set_flags(new_flags)
    return 0, got
