"""The arch-level fault entry (arch/x86/mm/fault.c: do_user_addr_fault).

``Config.fault_protocol`` selects how the VMA is found and kept stable
while ``handle_mm_fault`` runs:

* ``classic``: mmap_read_lock, find_vma, access check, handle_mm_fault,
  mmap_read_unlock.

Returns 0, or raises the signal the access earns (SegmentationFault with
SEGV_MAPERR / SEGV_ACCERR, BusError) or OutOfMemory for VM_FAULT_OOM.
"""

from __future__ import annotations

import errno
from typing import Any

from specfault.constants import BUS_ADRERR, SEGV_ACCERR, SEGV_MAPERR, TASK_SIZE
from specfault.errors import BusError, OutOfMemory, SegmentationFault
from specfault.mm.fault_flags import (
    FAULT_FLAG_DEFAULT,
    FAULT_FLAG_INSTRUCTION,
    FAULT_FLAG_USER,
    FAULT_FLAG_WRITE,
    VM_FAULT_OOM,
    VM_FAULT_SIGBUS,
    VM_FAULT_SIGSEGV,
)
from specfault.mm.memory import handle_mm_fault
from specfault.mm.mmap_lock import mmap_read_lock, mmap_read_unlock
from specfault.mm.vma import VM_EXEC, VM_READ, VM_WRITE

ACCESS_READ, ACCESS_WRITE, ACCESS_EXEC = 0, 1, 2


def access_error(access: int, vma: Any) -> bool:
    """x86 access_error(): may this access use this VMA at all?"""
    flags = vma.vm_flags
    if access == ACCESS_WRITE:
        return not flags & VM_WRITE
    if access == ACCESS_EXEC:
        return not flags & VM_EXEC
    return not flags & (VM_READ | VM_WRITE | VM_EXEC)   # vma_is_accessible()


def fault_flags(access: int) -> int:
    flags = FAULT_FLAG_DEFAULT | FAULT_FLAG_USER
    if access == ACCESS_WRITE:
        flags |= FAULT_FLAG_WRITE
    elif access == ACCESS_EXEC:
        flags |= FAULT_FLAG_INSTRUCTION
    return flags


def raise_for(fault: int, address: int) -> None:
    if fault & VM_FAULT_OOM:
        raise OutOfMemory(errno.ENOMEM, f"page fault at {address:#x}: out of memory (VM_FAULT_OOM)")
    if fault & VM_FAULT_SIGBUS:
        raise BusError(address, BUS_ADRERR)
    if fault & VM_FAULT_SIGSEGV:
        raise SegmentationFault(address, SEGV_ACCERR)


async def do_user_addr_fault(mm: Any, address: int, access: int) -> None:
    if address >= TASK_SIZE:
        raise SegmentationFault(address, SEGV_MAPERR)
    flags = fault_flags(access)
    await mmap_read_lock(mm)
    vma = mm.find_vma(address)
    if vma is None or vma.vm_start > address:
        await mmap_read_unlock(mm)
        raise SegmentationFault(address, SEGV_MAPERR)
    if access_error(access, vma):
        await mmap_read_unlock(mm)
        raise SegmentationFault(address, SEGV_ACCERR)
    fault = await handle_mm_fault(vma, address, flags)
    await mmap_read_unlock(mm)
    raise_for(fault, address)
