"""The arch-level fault entry (arch/x86/mm/fault.c: do_user_addr_fault).

``Config.fault_protocol`` selects how the VMA is found and kept stable
while ``handle_mm_fault`` runs.  Whatever the protocol, a fault it cannot
finish falls back to the classic path, which always can.

classic
    mmap_read_lock, find_vma, access check, handle_mm_fault,
    mmap_read_unlock.

speculative (Michel Lespinasse's v2, the seed) — the code is mm/spf.py
    never when the mm has a single user; count ``spf_attempt``;
    1. sample ``mm_lock_seq`` — odd (a writer is inside): abort;
    2. under ``rcu_read_lock()``, find the VMA locklessly and copy it
       (``pvma = *vma``) — VMAs are freed through RCU, so the copy reads
       live memory;
    3. re-check the sequence: a writer ran since 1 → abort;
    4. check access against the copy; only anonymous VMAs with an
       anon_vma are handled;
    5. ``handle_mm_fault(FAULT_FLAG_SPECULATIVE)``: walk the page tables
       without allocating (under RCU, or with interrupts off when tables
       are freed after an IPI), then commit in ``pte_map_lock``: re-check
       the sequence (SEQ1), ``spin_trylock`` the PTL, ``pmd_same`` under it
       (MADV_DONTNEED may have reclaimed the table: pt_reclaim.py), re-check
       the sequence (SEQ2).  Anything else aborts with VM_FAULT_RETRY,
       before any visible effect, and the fault is redone classically.

dufour (Laurent Dufour's v11, the SPF shipped in Android kernels) — mm/spf.py
    the speculative path above with three decisions changed (knobs, set by
    the protocol: see config.DUFOUR_KNOBS): no mm-wide sequence — after the
    lookup (under ``mm_rb_lock``, a cost here) the VMA is pinned
    (``get_vma``: ``vm_ref_count``, honoured by the free) and *its*
    sequence sampled (``vm_lock_seq``: a writer inside it → SPF_ABORT_ODD);
    the re-checks after the copy and at SEQ1/SEQ2 ask only whether this
    VMA changed or left the tree, so a writer elsewhere in the mm does not
    abort the fault; ``put_vma`` when the attempt ends.

pervma (Linux 6.4+) — lock_vma_under_rcu is in mm/mmap_lock.py
    ``lock_vma_under_rcu``: find the VMA under RCU, ``vma_start_read`` it,
    re-check that it still covers the address; fault under the VMA lock;
    fall back to mmap_lock when the VMA is write-locked, has just been
    replaced, or the fault needs what the VMA lock cannot give (a first
    anon_vma).

Returns None, or raises the signal the access earns (SegmentationFault with
SEGV_MAPERR / SEGV_ACCERR, BusError) or OutOfMemory for VM_FAULT_OOM.
"""

from __future__ import annotations

import errno
from typing import Any

from specfault.constants import BUS_ADRERR, SEGV_ACCERR, SEGV_MAPERR, TASK_SIZE
from specfault.errors import BusError, OutOfMemory, SegmentationFault
from specfault.mm.fault_flags import (
    _FLAGS,
    ACCESS_EXEC,
    ACCESS_READ,
    ACCESS_WRITE,
    FAULT_FLAG_TRIED,
    FAULT_FLAG_VMA_LOCK,
    VM_FAULT_COMPLETED,
    VM_FAULT_MAJOR,
    VM_FAULT_OOM,
    VM_FAULT_RETRY,
    VM_FAULT_SIGBUS,
    VM_FAULT_SIGSEGV,
    access_error,
    fault_flags,
)
from specfault.mm.memory import handle_mm_fault
from specfault.mm.mmap import expand_stack
from specfault.mm.mmap_lock import lock_vma_under_rcu, mmap_read_lock, mmap_read_unlock
from specfault.mm.spf import do_speculative_fault
from specfault.mm.vma import VM_GROWSDOWN
from specfault.sync.vma_lock import vma_end_read


def raise_for(fault: int, address: int) -> None:
    if fault & VM_FAULT_OOM:
        raise OutOfMemory(errno.ENOMEM, f"page fault at {address:#x}: out of memory (VM_FAULT_OOM)")
    if fault & VM_FAULT_SIGBUS:
        raise BusError(address, BUS_ADRERR)
    if fault & VM_FAULT_SIGSEGV:
        raise SegmentationFault(address, SEGV_ACCERR)


async def do_user_addr_fault(mm: Any, address: int, access: int, prot: bool = False) -> None:
    """arch/x86/mm/fault.c: a user page fault at ``address`` (``access``:
    ACCESS_READ/WRITE/EXEC; ``prot``: the PF_PROT error-code bit).  Tries
    the protocol's lockless path first (spf.do_speculative_fault, or
    do_vma_locked_fault), then the classic one under mmap_lock (read).

    We enter with no lock held (the faulting task was in user space) and
    return with none; the access is then retried (access.user_access)."""
    if address >= TASK_SIZE:
        raise SegmentationFault(address, SEGV_MAPERR)
    flags = _FLAGS[access]
    protocol = mm.config.fault_protocol
    if protocol == "speculative" or protocol == "dufour":
        fault = await do_speculative_fault(mm, address, access, flags, prot)
        if fault is not None:
            raise_for(fault, address)
            return
    elif protocol == "pervma":
        fault = await do_vma_locked_fault(mm, address, access, flags, prot)
        if fault is not None and not fault & VM_FAULT_RETRY:
            raise_for(fault, address)
            return
        if fault is not None and fault & VM_FAULT_MAJOR:
            flags |= FAULT_FLAG_TRIED     # the I/O was done: do not drop mmap_lock again
    await lock_mm_and_fault(mm, address, access, flags, prot)


async def lock_mm_and_fault(mm: Any, address: int, access: int, flags: int,
                            prot: bool = False) -> None:
    """The classic path: mmap_lock (read), find the VMA, handle_mm_fault.
    A VM_FAULT_RETRY (the handler dropped mmap_lock to wait for I/O on a
    locked folio) retries with FAULT_FLAG_TRIED — which never asks to be
    retried again.  Enters and returns with no lock held."""
    while True:
        await mmap_read_lock(mm)
        vma = mm.find_vma(address)
        if vma is not None and vma.vm_start > address and vma.vm_flags & VM_GROWSDOWN:
            vma = await expand_stack(mm, address)     # lock_mm_and_find_vma(): grow the stack
            if vma is None:                            # (mmap_lock dropped)
                raise SegmentationFault(address, SEGV_MAPERR)
        if vma is None or vma.vm_start > address:
            await mmap_read_unlock(mm)
            raise SegmentationFault(address, SEGV_MAPERR)
        if access_error(access, vma, prot):
            await mmap_read_unlock(mm)
            raise SegmentationFault(address, SEGV_ACCERR)
        fault = await handle_mm_fault(vma, address, flags)
        if fault & VM_FAULT_RETRY:
            # mmap_lock was released by the handler (folio_lock_or_retry)
            flags |= FAULT_FLAG_TRIED
            continue
        await mmap_read_unlock(mm)
        if fault:
            raise_for(fault, address)
        return


# --------------------------------------------------------------------- per-VMA
async def do_vma_locked_fault(mm: Any, address: int, access: int, flags: int,
                              prot: bool = False) -> int | None:
    """Fault under the VMA lock.  Returns the fault result — with
    VM_FAULT_RETRY (and VM_FAULT_MAJOR if the handler did the I/O) when the
    classic path must run — or None when no VMA could be locked.  We enter
    with no lock held: lock_vma_under_rcu read-locks the VMA,
    handle_mm_fault(FAULT_FLAG_VMA_LOCK) runs under it, and it is dropped
    here (vma_end_read) or by the handler that returned VM_FAULT_RETRY: we
    return with no lock held."""
    kernel = mm.kernel
    vma = await lock_vma_under_rcu(mm, address)
    if vma is None:
        return None
    if access_error(access, vma, prot):
        await vma_end_read(vma)
        kernel.count("vma_lock_success")
        raise SegmentationFault(address, SEGV_ACCERR)
    # knob pervma_unlock_before_ptl (a mutant): the VMA lock is dropped once
    # the VMA is found and checked, before the handler takes the PTL — "the
    # PTL protects the PTE": nothing keeps munmap or mprotect out any more
    early = mm.config.knob("pervma_unlock_before_ptl")
    if early:
        await vma_end_read(vma)
    fault = await handle_mm_fault(vma, address, flags | FAULT_FLAG_VMA_LOCK)
    # the handlers drop the VMA lock themselves before VM_FAULT_RETRY
    # (release_fault_lock) or VM_FAULT_COMPLETED
    if not fault & (VM_FAULT_RETRY | VM_FAULT_COMPLETED) and not early:
        await vma_end_read(vma)
    if not fault & VM_FAULT_RETRY:
        kernel.count("vma_lock_success")
        return fault
    kernel.count("vma_lock_retry")
    return fault


__all__ = ["ACCESS_EXEC", "ACCESS_READ", "ACCESS_WRITE", "access_error", "do_user_addr_fault",
           "do_vma_locked_fault", "fault_flags", "lock_mm_and_fault"]
