"""mmap, munmap, brk and stack growth (mm/mmap.c, mm/vma.c), returning
-errno like the kernel.

Layout: top-down from ``mm.mmap_base`` (0x7ffff7fff000, the x86-64 base
without randomisation), anonymous private mappings whose length is a
multiple of 2 MiB aligned to 2 MiB (THP alignment), as on Linux 6.18.

Stacks: a ``VM_GROWSDOWN`` VMA (the initial stack, or ``MAP_GROWSDOWN``)
grows down on a fault below it (:func:`expand_stack`), up to
``RLIMIT_STACK`` and never closer than ``stack_guard_gap`` (256 pages) to
the accessible mapping below; the gap also keeps new mappings away from
it (:func:`vm_start_gap`).
"""

from __future__ import annotations

import errno
from typing import Any

from specfault.constants import (
    MAP_32BIT,
    MAP_ABOVE4G,
    MAP_ANONYMOUS,
    MAP_DENYWRITE,
    MAP_DROPPABLE,
    MAP_EXECUTABLE,
    MAP_FIXED,
    MAP_FIXED_NOREPLACE,
    MAP_GROWSDOWN,
    MAP_HUGE_1GB,
    MAP_HUGE_2MB,
    MAP_HUGETLB,
    MAP_LOCKED,
    MAP_NONBLOCK,
    MAP_NORESERVE,
    MAP_POPULATE,
    MAP_PRIVATE,
    MAP_SHARED,
    MAP_SHARED_VALIDATE,
    MAP_STACK,
    MAP_SYNC,
    MAP_TYPE,
    MAP_UNINITIALIZED,
    PAGE_MASK,
    PAGE_SIZE,
    PMD_SIZE,
    PROT_EXEC,
    PROT_READ,
    PROT_SEM,
    PROT_WRITE,
    TASK_SIZE,
)
from specfault.mm.filemap import FMODE_READ, FMODE_WRITE
from specfault.mm.mmap_lock import (
    mmap_read_unlock,
    mmap_write_downgrade,
    mmap_write_lock,
    mmap_write_unlock,
    vma_start_write,
)
from specfault.mm.mmu_gather import MmuGather, free_pgtables, unmap_page_range
from specfault.mm.vma import (
    VM_ACCOUNT,
    VM_DATA_DEFAULT_FLAGS,
    VM_DONTDUMP,
    VM_DROPPABLE,
    VM_EXEC,
    VM_GROWSDOWN,
    VM_LOCKED,
    VM_MAYEXEC,
    VM_MAYREAD,
    VM_MAYSHARE,
    VM_MAYWRITE,
    VM_NOHUGEPAGE,
    VM_NORESERVE,
    VM_READ,
    VM_SHARED,
    VM_SOFTDIRTY,
    VM_SYNC,
    VM_WIPEONFORK,
    VM_WRITE,
    VmArea,
)
from specfault.mm.vma_ops import (
    remove_from_tree,
    split_vma,
    unlink_vma,
    vm_area_free,
    vma_link,
    vma_merge_new_range,
    vma_set_range,
)

# the flags mmap() has always accepted (and ignored when unknown) with
# MAP_SHARED; MAP_SHARED_VALIDATE refuses anything else with EOPNOTSUPP
LEGACY_MAP_MASK = MAP_SHARED | MAP_PRIVATE | MAP_FIXED | MAP_ANONYMOUS | MAP_DENYWRITE \
    | MAP_EXECUTABLE | MAP_UNINITIALIZED | MAP_GROWSDOWN | MAP_LOCKED | MAP_NORESERVE \
    | MAP_POPULATE | MAP_NONBLOCK | MAP_STACK | MAP_HUGETLB | MAP_32BIT | MAP_ABOVE4G \
    | MAP_HUGE_2MB | MAP_HUGE_1GB

# syscall arguments are unsigned long: sums and PAGE_ALIGN wrap at 2**64
ULONG_MAX = (1 << 64) - 1
# MAX_LFS_FILESIZE: the largest offset a regular file (and its mapping) may reach
MAX_LFS_FILESIZE = (1 << 63) - 1


def page_align(n: int) -> int:
    """PAGE_ALIGN() of an unsigned long: a length within a page of 2**64
    wraps to 0, as in C (callers check for that)."""
    return (n + PAGE_SIZE - 1) & PAGE_MASK & ULONG_MAX


def calc_vm_prot_bits(prot: int) -> int:
    return (VM_READ if prot & PROT_READ else 0) | (VM_WRITE if prot & PROT_WRITE else 0) \
        | (VM_EXEC if prot & PROT_EXEC else 0)


def calc_vm_flag_bits(flags: int) -> int:
    """The VM_* flags mmap() flags imply.  MAP_GROWSDOWN gives VM_GROWSDOWN
    (do_mmap refuses it but for private anonymous memory).  MAP_SYNC gives
    VM_SYNC even where it is otherwise ignored (MAP_SHARED, MAP_PRIVATE),
    as on Linux."""
    return (VM_GROWSDOWN if flags & MAP_GROWSDOWN else 0) \
        | (VM_LOCKED if flags & MAP_LOCKED else 0) \
        | (VM_SYNC if flags & MAP_SYNC else 0) \
        | (VM_NOHUGEPAGE if flags & MAP_STACK else 0)     # CONFIG_TRANSPARENT_HUGEPAGE


def file_mmap_ok(file: Any, pgoff: int, length: int) -> bool:
    """file_mmap_ok(): the mapping ends within MAX_LFS_FILESIZE (every file
    of the model is a regular file, or shmem)."""
    maxsize = MAX_LFS_FILESIZE
    if length > maxsize:
        return False
    return pgoff <= (maxsize - length) >> 12


def accountable_mapping(vm_flags: int) -> bool:
    return (vm_flags & (VM_NORESERVE | VM_SHARED | VM_WRITE)) == VM_WRITE


# ---------------------------------------------------------- stack guard gap
#: stack_guard_gap (mm/mmap.c): 256 pages between a stack and the mapping
#: it grows towards (the boot parameter stack_guard_gap= changes it)
STACK_GUARD_GAP = 256 << 12
#: VM_GROWSUP is VM_NONE on x86-64: no stack grows up
VM_GROWSUP = 0
#: the VM flags of a stack: VM_STARTGAP_FLAGS
VM_STARTGAP_FLAGS = VM_GROWSDOWN | VM_GROWSUP


def vm_start_gap(vma: Any) -> int:
    """vm_start_gap(): where the room a VMA needs begins — a stack's guard
    gap lies below it (0 if that would wrap)."""
    if vma.vm_flags & VM_GROWSDOWN:
        return max(vma.vm_start - STACK_GUARD_GAP, 0)
    return int(vma.vm_start)


def vm_end_gap(vma: Any) -> int:
    """vm_end_gap(): where it ends (VM_GROWSUP stacks only: none on x86-64)."""
    return int(vma.vm_end)


# ------------------------------------------------------------ address search
def unmapped_area_topdown(mm: Any, length: int, low: int, high: int) -> int:
    """unmapped_area_topdown(): the highest gap within [low, high) that
    fits ``length``; returns its top minus length, or -ENOMEM.  The gap
    search is the tree's (mas_empty_area_rev()), O(log n); a gap whose
    top reaches into the guard gap below a stack is cut there and the
    search retried."""
    while True:
        gap_end = mm.mm_mt.empty_area_rev(low, high, length)
        if gap_end is None:
            return -errno.ENOMEM
        tmp = mm.find_vma(gap_end)
        if tmp is not None and tmp.vm_flags & VM_STARTGAP_FLAGS and vm_start_gap(tmp) < gap_end:
            high = vm_start_gap(tmp)
            continue
        return gap_end - length


def unmapped_area_bottomup(mm: Any, length: int, low: int, high: int) -> int:
    """unmapped_area(): the lowest gap within [low, high) that fits
    ``length`` (mas_empty_area()); its start, or -ENOMEM.  A gap that
    reaches into a stack's guard gap is skipped."""
    while True:
        gap_start = mm.mm_mt.empty_area(low, high, length)
        if gap_start is None:
            return -errno.ENOMEM
        tmp = mm.find_vma(gap_start)
        if tmp is not None and tmp.vm_flags & VM_STARTGAP_FLAGS \
                and vm_start_gap(tmp) < gap_start + length:
            low = tmp.vm_end
            continue
        return gap_start


def arch_get_unmapped_area_32bit(mm: Any, addr: int, length: int) -> int:
    """arch_get_unmapped_area() for MAP_32BIT (x86-64): bottom-up in
    [1 GiB, 2 GiB) (find_start_end(), without randomisation); a hint is
    taken if the range up to the next VMA is free below 2 GiB."""
    begin, end = 0x40000000, 0x80000000
    if length > end:
        return -errno.ENOMEM
    if addr:
        addr = page_align(addr)
        vma = mm.find_vma(addr)
        if end - length >= addr and (vma is None or addr + length <= vm_start_gap(vma)):
            return addr
    return unmapped_area_bottomup(mm, length, begin, end)


def arch_get_unmapped_area_topdown(mm: Any, addr: int, length: int, flags: int) -> int:
    if length > TASK_SIZE - mm.mmap_min_addr:
        return -errno.ENOMEM
    if flags & MAP_FIXED:
        return addr
    if flags & MAP_32BIT:          # the legacy mmap base for MAP_32BIT
        return arch_get_unmapped_area_32bit(mm, addr, length)
    if addr:
        addr &= PAGE_MASK
        if not TASK_SIZE - length < addr:
            vma = mm.find_vma(addr)
            if vma is None or addr + length <= vm_start_gap(vma):
                return addr
    got = unmapped_area_topdown(mm, length, PAGE_SIZE, mm.mmap_base)
    if got >= 0:
        return got
    # fall back to a bottom-up search (e.g. the top of the space is full)
    return unmapped_area_bottomup(mm, length, mm.mmap_base // 3 & PAGE_MASK, TASK_SIZE)


def thp_get_unmapped_area(mm: Any, addr: int, length: int, off: int, flags: int) -> int:
    """__thp_get_unmapped_area(): for a mapping that holds a whole
    PMD-aligned 2 MiB of its file (or of anonymous memory, ``off`` 0), pad
    the search by PMD_SIZE and return an address congruent to ``off``
    modulo 2 MiB in the gap found (a free hint is kept as it is).  0 when
    it does not apply."""
    off_end = off + length
    off_align = (off + PMD_SIZE - 1) & ~(PMD_SIZE - 1)
    if off_end <= off_align or off_end - off_align < PMD_SIZE:
        return 0
    ret = arch_get_unmapped_area_topdown(mm, addr, length + PMD_SIZE, flags)
    if ret < 0:
        return 0
    if ret == addr:
        return addr
    off_sub = (off - ret) & (PMD_SIZE - 1)
    if not off_sub:
        return ret + PMD_SIZE                         # MMF_TOPDOWN
    return ret + off_sub


def get_unmapped_area(mm: Any, file: Any, addr: int, length: int, pgoff: int, flags: int) -> int:
    """__get_unmapped_area()."""
    if length > TASK_SIZE:
        return -errno.ENOMEM
    got = 0
    if file is not None and file.inode.thp_get_unmapped_area:
        # f_op->get_unmapped_area = thp_get_unmapped_area (ext4, xfs...)
        got = thp_get_unmapped_area(mm, addr, length, pgoff << 12, flags)
    elif file is None and not flags & MAP_SHARED and not addr and length % PMD_SIZE == 0 \
            and not flags & MAP_FIXED:
        got = thp_get_unmapped_area(mm, addr, length, 0, flags)
    if not got:
        got = arch_get_unmapped_area_topdown(mm, addr, length, flags)
    if got < 0:
        return got
    if got > TASK_SIZE - length:
        return -errno.ENOMEM
    if got & ~PAGE_MASK:
        return -errno.EINVAL
    return got


# ---------------------------------------------------------------------- mmap
async def do_mmap(mm: Any, file: Any, addr: int, length: int, prot: int, flags: int,
                  pgoff: int) -> tuple[int, int]:
    """do_mmap(): caller holds mmap_lock for write.  Returns (address or
    -errno, bytes to populate)."""
    if not length:
        return -errno.EINVAL, 0
    if flags & MAP_FIXED_NOREPLACE:
        flags |= MAP_FIXED
    if not flags & MAP_FIXED and addr < mm.mmap_min_addr and addr:
        addr = page_align(mm.mmap_min_addr)       # round_hint_to_min()
    length = page_align(length)
    if not length or length > TASK_SIZE:
        return -errno.ENOMEM, 0
    if (pgoff + (length >> 12)) & ULONG_MAX < pgoff:      # offset overflow
        return -errno.EOVERFLOW, 0
    if mm.map_count > 65530:
        return -errno.ENOMEM, 0

    # the address first, as Linux does: EEXIST (and ENOMEM) come before the
    # file checks below, and before MAP_SHARED strips non-legacy flags
    addr = get_unmapped_area(mm, file, addr, length, pgoff, flags)
    if addr < 0:
        return addr, 0
    if flags & MAP_FIXED_NOREPLACE and mm.find_vma_intersection(addr, addr + length):
        return -errno.EEXIST, 0

    vm_flags = calc_vm_prot_bits(prot) | calc_vm_flag_bits(flags) | VM_MAYREAD | VM_MAYWRITE \
        | VM_MAYEXEC
    map_type = flags & MAP_TYPE
    if file is not None:
        if not file_mmap_ok(file, pgoff, length):
            return -errno.EOVERFLOW, 0
        # no file of the model has FOP_MMAP_SYNC (DAX): MAP_SYNC is refused
        flags_mask = LEGACY_MAP_MASK
        if map_type == MAP_SHARED:
            # unknown flags are ignored with MAP_SHARED (compatibility) ...
            flags &= LEGACY_MAP_MASK
        if map_type in (MAP_SHARED, MAP_SHARED_VALIDATE):
            # ... and refused with MAP_SHARED_VALIDATE
            if flags & ~flags_mask:
                return -errno.EOPNOTSUPP, 0
            if prot & PROT_WRITE and not file.f_mode & FMODE_WRITE:
                return -errno.EACCES, 0
            vm_flags |= VM_SHARED | VM_MAYSHARE
            if not file.f_mode & FMODE_WRITE:
                vm_flags &= ~(VM_MAYWRITE | VM_SHARED)
        elif map_type != MAP_PRIVATE:
            return -errno.EINVAL, 0
        if not file.f_mode & FMODE_READ:
            return -errno.EACCES, 0
        if flags & MAP_GROWSDOWN:
            return -errno.EINVAL, 0        # VM_GROWSDOWN on a file
    else:
        # MAP_SHARED_VALIDATE means nothing without a file: EINVAL, as any
        # other unknown type
        if map_type == MAP_SHARED:
            if flags & MAP_GROWSDOWN:
                return -errno.EINVAL, 0
            pgoff = 0
            vm_flags |= VM_SHARED | VM_MAYSHARE
        elif map_type == MAP_DROPPABLE:
            # no locking, no hugetlb, no stack; never reserved, wiped at
            # fork, left out of core dumps
            if flags & (MAP_LOCKED | MAP_HUGETLB | MAP_GROWSDOWN):
                return -errno.EINVAL, 0
            vm_flags |= VM_DROPPABLE | VM_NORESERVE | VM_WIPEONFORK | VM_DONTDUMP
            pgoff = addr >> 12
        elif map_type == MAP_PRIVATE:
            pgoff = addr >> 12             # set pgoff according to addr for anon_vma
        else:
            return -errno.EINVAL, 0
    if flags & MAP_NORESERVE:
        vm_flags |= VM_NORESERVE

    ret = await mmap_region(mm, file, addr, length, vm_flags, pgoff)
    populate = 0
    if ret >= 0 and (vm_flags & VM_LOCKED or (flags & (MAP_POPULATE | MAP_NONBLOCK)) == MAP_POPULATE):
        populate = length
    return ret, populate


async def mmap_region(mm: Any, file: Any, addr: int, length: int, vm_flags: int,
                      pgoff: int) -> int:
    """__mmap_region(): unmap what is there, then merge or insert."""
    end = addr + length
    if mm.find_vma_intersection(addr, end) is not None:
        err = await do_vmi_munmap(mm, addr, length)
        if err:
            return err
    if accountable_mapping(vm_flags):
        vm_flags |= VM_ACCOUNT
    if file is None and vm_flags & VM_SHARED:
        from specfault.mm.filemap import FMODE_READ as _R
        from specfault.mm.filemap import FMODE_WRITE as _W
        from specfault.mm.filemap import OpenFile
        file = OpenFile(mm.kernel.fs.shmem_file(length), _R | _W)   # shmem_zero_setup()
        pgoff = 0
    else:
        if file is not None:
            file.f_count += 1                    # get_file() for the new VMA (undone below)
        prev = mm.mm_mt.prev(addr)
        nxt = mm.find_vma(end)
        merged = await vma_merge_new_range(mm, prev, nxt, addr, end, vm_flags, file, pgoff)
        if merged is not None:
            if file is not None:
                file.f_count -= 1                # merged: no new VMA holds it
            merged.vm_flags |= VM_SOFTDIRTY
            mm.total_vm += length >> 12
            return addr
    vma = VmArea.alloc(mm, addr, end, vm_flags | VM_SOFTDIRTY, pgoff, file)
    await vma_link(mm, vma)
    mm.total_vm += length >> 12
    return addr


# -------------------------------------------------------------------- munmap
async def do_vmi_munmap(mm: Any, start: int, length: int) -> int:
    """do_vmi_munmap(): unmap [start, start+len).  Caller holds mmap_lock
    for write.  Returns 0 or -errno."""
    if start & ~PAGE_MASK or start > TASK_SIZE or length > TASK_SIZE - start:
        return -errno.EINVAL
    end = start + page_align(length)
    if end == start:
        return -errno.EINVAL
    vma = mm.find_vma_intersection(start, end)
    if vma is None:
        return 0
    # split the VMAs at both ends (vms_gather_munmap_vmas)
    if vma.vm_start < start:
        new = await split_vma(mm, vma, start, new_below=True)
        if isinstance(new, int):
            return new
    last = mm.find_vma_intersection(end - 1, end)
    if last is not None and last.vm_end > end:
        new = await split_vma(mm, last, end, new_below=False)
        if isinstance(new, int):
            return new
    victims = mm.vmas(start, end)
    for v in victims:
        await vma_start_write(v)
    for v in victims:
        await remove_from_tree(mm, v)
    # vms_complete_munmap_vmas(): zap, free page tables, free the VMAs
    prev = mm.mm_mt.prev(start)
    nxt = mm.find_vma(end)
    tlb = MmuGather(mm)
    for v in victims:
        await unmap_page_range(tlb, v, v.vm_start, v.vm_end)
        mm.total_vm -= v.pages()
    floor = prev.vm_end if prev is not None else 0
    ceiling = nxt.vm_start if nxt is not None else TASK_SIZE + PAGE_SIZE
    # free_pgtables() unlinks each VMA from the reverse map (its file's
    # i_mmap under i_mmap_rwsem) before freeing the tables: a truncation
    # that found it walks tables still there
    for v in victims:
        await unlink_vma(v)
    await free_pgtables(tlb, floor, ceiling, victims[0].vm_start, victims[-1].vm_end)
    await tlb.finish()
    for v in victims:
        await vm_area_free(mm, v)
    return 0


async def sys_munmap(mm: Any, addr: int, length: int) -> int:
    await mmap_write_lock(mm)
    ret = await do_vmi_munmap(mm, addr, length)
    await mmap_write_unlock(mm)
    return ret


# ----------------------------------------------------------------------- brk
async def sys_brk(mm: Any, brk: int) -> int:
    """brk(): returns the new break, or the old one on failure."""
    await mmap_write_lock(mm)
    ret = await _do_brk(mm, brk)
    await mmap_write_unlock(mm)
    return ret


async def _do_brk(mm: Any, brk: int) -> int:
    origbrk = mm.brk
    if brk < mm.start_brk:
        return origbrk
    newbrk = page_align(brk)
    oldbrk = page_align(mm.brk)
    if oldbrk == newbrk:
        mm.brk = brk
        return brk
    if brk <= mm.brk:                     # shrink: unmap the tail
        mm.brk = brk
        if await do_vmi_munmap(mm, newbrk, oldbrk - newbrk):
            mm.brk = origbrk
            return origbrk
        return brk
    # check_brk_limits(): the new part must fit below TASK_SIZE (newbrk
    # wraps to 0 for a break within a page of 2**64: a huge length)
    if get_unmapped_area(mm, None, oldbrk, (newbrk - oldbrk) & ULONG_MAX, 0, MAP_FIXED) < 0:
        return origbrk
    nxt = mm.find_vma(oldbrk)
    if nxt is not None and newbrk + PAGE_SIZE > vm_start_gap(nxt):
        return origbrk
    brkvma = mm.mm_mt.prev(oldbrk) if oldbrk > mm.start_brk else None
    if brkvma is not None and brkvma.vm_end <= mm.start_brk:
        brkvma = None
    flags = VM_DATA_DEFAULT_FLAGS | VM_ACCOUNT
    length = newbrk - oldbrk
    # do_brk_flags(): only the VMA of the heap itself (one that reaches
    # above start_brk: vma_prev_limit()) is extended — never the bss below
    # start_brk, nor the next VMA; otherwise the heap is a VMA of its own
    if brkvma is not None and brkvma.vm_end == oldbrk and brkvma.vm_flags & ~VM_SOFTDIRTY == flags \
            and brkvma.vm_file is None:
        await vma_set_range(mm, brkvma, brkvma.vm_start, newbrk, brkvma.vm_pgoff)
    else:
        vma = VmArea.alloc(mm, oldbrk, newbrk, flags | VM_SOFTDIRTY, oldbrk >> 12)
        await vma_link(mm, vma)
    mm.total_vm += length >> 12
    mm.brk = brk
    return brk


# --------------------------------------------------------------- stack growth
#: RLIMIT_STACK's default soft limit (_STK_LIM, 8 MiB)
STK_LIM = 8 << 20


def acct_stack_growth(mm: Any, vma: Any, size: int, grow: int) -> int:
    """acct_stack_growth(): may ``vma`` become ``size`` bytes (``grow``
    pages more)?  0 or -ENOMEM.  The model checks RLIMIT_STACK; RLIMIT_AS
    is unlimited, there is no mlock or overcommit limit."""
    if size > mm.rlimit_stack:
        return -errno.ENOMEM
    return 0


async def expand_downwards(mm: Any, vma: Any, address: int) -> int:
    """expand_downwards(): grow the VM_GROWSDOWN ``vma`` down to cover
    ``address``.  Caller holds mmap_lock for write.  0 or -errno:

    1. only a VM_GROWSDOWN VMA grows (-EFAULT), never below mmap_min_addr
       (-EPERM);
    2. the guard gap: the previous VMA, if accessible and not itself a
       stack, must end ``stack_guard_gap`` below ``address`` (-ENOMEM);
    3. the VMA gets its anon_vma, and is write-locked so no fault runs
       under its VMA lock while its range changes;
    4. RLIMIT_STACK (acct_stack_growth) and ``grow <= vm_pgoff``; then
       vm_start and vm_pgoff move down, and the tree is updated.
    """
    from specfault.mm.memory import anon_vma_prepare

    if not vma.vm_flags & VM_GROWSDOWN:
        return -errno.EFAULT
    address &= PAGE_MASK
    if address < mm.mmap_min_addr:
        return -errno.EPERM
    prev = mm.mm_mt.prev(vma.vm_start)
    if prev is not None and not prev.vm_flags & VM_GROWSDOWN \
            and prev.vm_flags & (VM_READ | VM_WRITE | VM_EXEC) \
            and address - prev.vm_end < STACK_GUARD_GAP:
        return -errno.ENOMEM
    if not await anon_vma_prepare(vma):
        return -errno.ENOMEM
    await vma_start_write(vma)
    if address >= vma.vm_start:
        return 0                          # somebody else expanded it already
    size = vma.vm_end - address
    grow = (vma.vm_start - address) >> 12
    if grow > vma.vm_pgoff:
        return -errno.ENOMEM
    err = acct_stack_growth(mm, vma, size, grow)
    if err:
        return err
    await vma_set_range(mm, vma, address, vma.vm_end, vma.vm_pgoff - grow)
    mm.total_vm += grow
    return 0


async def expand_stack_locked(mm: Any, vma: Any, address: int) -> int:
    """expand_stack_locked(): x86-64 stacks only grow down."""
    return await expand_downwards(mm, vma, address)


async def expand_stack(mm: Any, address: int) -> Any:
    """The fault path's stack growth (lock_mm_and_find_vma() after find_vma
    found no VMA at ``address`` but a VM_GROWSDOWN one above it).  Called
    with mmap_lock held for read; x86 cannot upgrade it, so it is dropped,
    taken for write, the VMA looked up again (it may have changed) and
    grown, and the lock downgraded.  Returns the VMA now covering
    ``address`` with mmap_lock held for read, or None with it released
    (the caller raises SIGSEGV)."""
    await mmap_read_unlock(mm)
    await mmap_write_lock(mm)
    vma = mm.find_vma(address)
    if vma is None:
        await mmap_write_unlock(mm)
        return None
    if vma.vm_start > address:
        if not vma.vm_flags & VM_GROWSDOWN or await expand_stack_locked(mm, vma, address):
            await mmap_write_unlock(mm)
            return None
    await mmap_write_downgrade(mm)
    return vma


async def _do_brk_flags(mm: Any, addr: int, length: int, flags: int) -> int:
    """vm_brk_flags() + do_brk_flags() for exec's bss: anonymous memory at
    exactly [addr, addr+length), replacing what is there, extending the
    VMA just below when it is anonymous with the same flags.  Caller
    holds mmap_lock for write.  0 or -errno."""
    length = page_align(length)
    if get_unmapped_area(mm, None, addr, length, 0, MAP_FIXED) < 0:
        return -errno.ENOMEM
    err = await do_vmi_munmap(mm, addr, length)
    if err:
        return err
    if mm.map_count > 65530:
        return -errno.ENOMEM
    vm_flags = VM_DATA_DEFAULT_FLAGS | VM_ACCOUNT | flags
    prev = mm.mm_mt.prev(addr)
    merged = None
    if prev is not None and prev.vm_end == addr:
        merged = await vma_merge_new_range(mm, prev, None, addr, addr + length, vm_flags, None,
                                           addr >> 12)
    if merged is None:
        vma = VmArea.alloc(mm, addr, addr + length, vm_flags | VM_SOFTDIRTY, addr >> 12)
        await vma_link(mm, vma)
    else:
        merged.vm_flags |= VM_SOFTDIRTY
    mm.total_vm += length >> 12
    return 0


# ------------------------------------------------------------------ mmap(2)
def prot_valid(prot: int) -> bool:
    return not prot & ~(PROT_READ | PROT_WRITE | PROT_EXEC | PROT_SEM)


async def sys_mmap(mm: Any, addr: int, length: int, prot: int, flags: int, file: Any,
                   pgoff: int) -> tuple[int, int]:
    """ksys_mmap_pgoff() + vm_mmap_pgoff(): lock, do_mmap, unlock.  Returns
    (addr | -errno, populate).  ``file`` is the fd's file (None for
    MAP_ANONYMOUS); anonymous MAP_HUGETLB (hugetlbfs) is not modelled and
    refused by the caller."""
    if file is not None and flags & MAP_HUGETLB:
        return -errno.EINVAL, 0            # not a hugetlbfs file
    await mmap_write_lock(mm)
    ret, populate = await do_mmap(mm, file, addr, length, prot, flags, pgoff)
    await mmap_write_unlock(mm)
    return ret, populate


__all__ = ["do_mmap", "do_vmi_munmap", "expand_downwards", "expand_stack", "expand_stack_locked",
           "get_unmapped_area", "prot_valid", "sys_brk", "sys_mmap", "sys_munmap", "vm_start_gap",
           "VM_GROWSDOWN"]
