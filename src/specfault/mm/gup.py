"""Populating mappings (mm/gup.c: __mm_populate, populate_vma_page_range),
for MAP_POPULATE and MAP_LOCKED.  Faults each page in as the access GUP
would make: a write fault for private writable mappings (breaking COW up
front), a read fault otherwise."""

from __future__ import annotations

from typing import Any

from specfault.mm.fault_flags import FAULT_FLAG_WRITE, VM_FAULT_ERROR
from specfault.mm.memory import handle_mm_fault
from specfault.mm.mmap_lock import mmap_read_lock, mmap_read_unlock
from specfault.mm.pgtable import follow_pte, pte_present, pte_write
from specfault.mm.vma import VM_EXEC, VM_IO, VM_PFNMAP, VM_READ, VM_SHARED, VM_WRITE


async def mm_populate(mm: Any, start: int, length: int) -> int:
    end = start + length
    await mmap_read_lock(mm)
    try:
        addr = start
        while addr < end:
            vma = mm.find_vma(addr)
            if vma is None or vma.vm_start >= end:
                break
            addr = max(addr, vma.vm_start)
            stop = min(end, vma.vm_end)
            if vma.vm_flags & (VM_IO | VM_PFNMAP) or not vma.vm_flags & (VM_READ | VM_WRITE | VM_EXEC):
                addr = stop
                continue
            write = (vma.vm_flags & (VM_WRITE | VM_SHARED)) == VM_WRITE
            while addr < stop:
                pte = await follow_pte(mm, addr)     # follow_page_pte()
                if not pte_present(pte) or (write and not pte_write(pte)):
                    ret = await handle_mm_fault(vma, addr, FAULT_FLAG_WRITE if write else 0)
                    if ret & VM_FAULT_ERROR:
                        return ret
                    continue
                addr += 4096
        return 0
    finally:
        await mmap_read_unlock(mm)
