"""anon_vma bookkeeping: anon_vma_prepare / vmf_anon_prepare (mm/rmap.c,
mm/memory.c), shared by the order-0 faults (memory.py) and the THP ones
(huge_memory.py), and anon_vma_fork; release_fault_lock."""

from __future__ import annotations

from typing import Any

from specfault.mm.fault_flags import FAULT_FLAG_VMA_LOCK, VM_FAULT_OOM, VM_FAULT_RETRY
from specfault.mm.mmap_lock import mmap_read_unlock
from specfault.mm.rmap import anon_vma_chain_link
from specfault.mm.vma import AnonVma, VmArea, reusable_anon_vma
from specfault.sync.vma_lock import vma_end_read

Vmf = Any       # memory.Vmf (memory.py imports this file)


def anon_vma_fork(vma: VmArea, pvma: VmArea) -> None:
    """The child's VMA ``vma`` (a copy of ``pvma``) inherits the parent's
    anon_vma chain and gets an anon_vma of its own, child of the parent's.
    Its chain then has more than one entry: it is a "fork child", which
    limits its merging (vma_is_fork_child)."""
    if pvma.anon_vma is None:
        vma.anon_vma, vma.anon_vma_chain = None, []
        return
    av = AnonVma(parent=pvma.anon_vma)
    vma.anon_vma = av
    vma.anon_vma_chain = list(pvma.anon_vma_chain) + [av]


async def anon_vma_prepare(vma: VmArea) -> bool:
    """Give ``vma`` an anon_vma before its first anonymous page, reusing a
    compatible neighbour's (find_mergeable_anon_vma) so they may merge
    later.  Returns False on allocation failure (never, in the model).
    Caller holds mmap_lock (read at least: the neighbours must not
    change); sets it under mm.page_table_lock, taken and dropped here."""
    if vma.anon_vma is not None:
        return True
    mm = vma.vm_mm
    av = None
    nxt = mm.mm_mt.find(vma.vm_end)
    if nxt is not None:
        av = reusable_anon_vma(nxt, vma, nxt)
    if av is None:
        prev = mm.mm_mt.prev(vma.vm_start)
        if prev is not None:
            av = reusable_anon_vma(prev, prev, vma)
    if av is None:
        av = AnonVma()
    await mm.page_table_lock.lock()
    if vma.anon_vma is None:
        anon_vma_chain_link(vma, av, [av])
    await mm.page_table_lock.unlock()
    return True


async def vmf_anon_prepare(vmf: Vmf) -> int:
    """The faulting VMA needs an anon_vma (it has none): make one.  Under
    the VMA lock (6.7+) that needs mmap_lock too, so try it without
    waiting — a writer may be waiting on our VMA lock — and retry under
    mmap_lock if it is taken.  Returns 0 or the VM_FAULT_* code.  Entered
    and left with the fault's lock (mmap_lock read, or the VMA lock — then
    mmap_lock read is taken and dropped here), no PTL — except on
    VM_FAULT_RETRY, returned with the VMA lock released (Linux 6.7+); never
    speculative (the speculative callers abort with SPF_ABORT_ANON_VMA
    first)."""
    vma = vmf.vma
    locked = vmf.flags & FAULT_FLAG_VMA_LOCK
    if locked and not await vma.vm_mm.mmap_lock.down_read_trylock():
        await release_fault_lock(vmf)            # VM_FAULT_RETRY: the VMA lock goes
        return VM_FAULT_RETRY
    ok = await anon_vma_prepare(vma)
    if locked:
        await vma.vm_mm.mmap_lock.up_read()
    return 0 if ok else VM_FAULT_OOM


async def release_fault_lock(vmf: Vmf) -> None:
    """release_fault_lock(): drop the lock the fault holds — the VMA lock
    (FAULT_FLAG_VMA_LOCK) or mmap_lock (read).  Never speculative."""
    if vmf.flags & FAULT_FLAG_VMA_LOCK:
        await vma_end_read(vmf.vma)
    else:
        await mmap_read_unlock(vmf.mm)
