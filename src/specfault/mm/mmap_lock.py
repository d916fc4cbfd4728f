"""The mm layer's view of include/linux/mmap_lock.h: mmap_lock, the
``mm_lock_seq`` sequence count, and the per-VMA lock's writer side.

The primitives live in ``sync/`` (``sync/mmap_lock.py``,
``sync/seqcount.py``, ``sync/vma_lock.py``); these wrappers are where the
protocol knobs that concern them are read:

* ``mm_lock_seq`` is a seqcount: mmap_write_lock() makes it odd and
  mmap_write_unlock() even again, so a lockless reader that saw the same
  even value before and after its work knows no writer ran in between.
  Knob ``no_seq_bump_on_write_lock`` (a mutant) skips both bumps — and with
  them the per-VMA locks, which are keyed on the same count.
* The per-VMA lock reuses it: a writer marks each VMA it changes with the
  current (odd) value; mmap_write_unlock() unlocks them all at once.
* Its reader side: :func:`lock_vma_under_rcu` (mm/mmap_lock.c), over the
  lockless lookup :func:`find_vma_rcu` that the speculative faults use too.

Lock order: mmap_lock -> vma lock -> page_table_lock -> PTL.
"""

from __future__ import annotations

from bisect import bisect_right
from typing import Any

from specfault.runtime import Load
from specfault.sync import vma_lock as _vl
from specfault.sync.seqcount import write_seqcount_begin, write_seqcount_end
from specfault.sync.vma_lock import VMA_EAGAIN, vma_end_read, vma_start_read


def mmap_read_lock(mm: Any) -> Any:
    """``await mmap_read_lock(mm)``."""
    return mm.mmap_lock.down_read()


def mmap_read_unlock(mm: Any) -> Any:
    """``await mmap_read_unlock(mm)``."""
    return mm.mmap_lock.up_read()


async def mmap_write_lock(mm: Any) -> None:
    await mm.mmap_lock.down_write()
    # knob no_seq_bump_on_write_lock: without the bump, speculative faults
    # cannot see that a writer ran, and commit on a stale VMA copy
    if not mm.no_seq_bump:
        await write_seqcount_begin(mm, "mm_lock_seq")


async def mmap_write_unlock(mm: Any) -> None:
    if not mm.no_seq_bump:
        await write_seqcount_end(mm, "mm_lock_seq")    # vma_end_write_all()
    await mm.mmap_lock.up_write()


async def mmap_write_downgrade(mm: Any) -> None:
    """Write hold -> read hold (expand_stack): the VMAs write-locked so far
    are unlocked (vma_end_write_all) and readers may enter; no writer can
    slip in between."""
    if not mm.no_seq_bump:
        await write_seqcount_end(mm, "mm_lock_seq")
    await mm.mmap_lock.downgrade_write()


async def vma_start_write(vma: Any) -> None:
    """Write-lock ``vma`` until mmap_write_unlock (caller holds mmap_lock
    for write); waits for its readers to leave."""
    if vma.vm_mm.no_seq_bump:
        return
    await _vl.vma_start_write(vma)


async def vma_mark_attached(vma: Any) -> None:
    """The VMA is in the tree: readers may lock it (vm_refcnt = 1)."""
    if vma.vm_mm.no_seq_bump:
        vma.vm_refcnt = 1
        return
    await _vl.vma_mark_attached(vma)


async def vma_mark_detached(vma: Any) -> None:
    """The VMA left the tree; waits for transient readers to drop."""
    if vma.vm_mm.no_seq_bump:
        vma.vm_refcnt = 0
        return
    await _vl.vma_mark_detached(vma)


# ------------------------------------------------------- the lockless readers
async def find_vma_rcu(mm: Any, addr: int) -> Any:
    """mas_walk() under rcu_read_lock(): the VMA whose range *in the tree*
    contains ``addr``, or None.  One load for the published root, one per
    node (a node freed too early raises UseAfterFree)."""
    node = await Load(mm.mm_mt, "root")          # rcu_dereference(mt->ma_root)
    while node is not None:
        await Load(node, "slots")
        i = bisect_right(node.ends, addr)
        if i == len(node.ends):
            return None
        if node.leaf:
            return node.slots[i] if node.starts[i] <= addr else None
        node = node.slots[i]
    return None


async def lock_vma_under_rcu(mm: Any, address: int) -> Any:
    """The per-VMA lookup (Linux 6.4+): find and read-lock the VMA covering
    ``address`` without mmap_lock.

    1. rcu_read_lock(); find the VMA in the tree locklessly
       (:func:`find_vma_rcu`: VMAs and tree nodes are freed through RCU);
    2. ``vma_start_read()``: fails if a writer holds the VMA
       (``vm_lock_seq == mm_lock_seq``) or the VMA now belongs to another
       mm (recycled, vma_typesafe_rcu); VMA_EAGAIN if it left the tree
       between 1 and 2 — walk again (counted ``vma_lock_miss``);
    3. under the read lock, re-check that it still covers ``address``: it
       may have been freed and reused for another range of this mm
       between 1 and 2 (knob pervma_no_recheck_after_lock skips this);
    4. rcu_read_unlock().

    We enter with no lock held.  We return the VMA read-locked (the caller
    drops it with vma_end_read), or None with nothing held, counted
    ``vma_lock_abort``: the fault then takes mmap_lock."""
    kernel = mm.kernel
    rcu = kernel.rcu
    await rcu.read_lock()
    while True:
        vma = await find_vma_rcu(mm, address)
        if vma is None:
            break
        got = await vma_start_read(mm, vma)
        if got is VMA_EAGAIN:
            kernel.count("vma_lock_miss")     # replaced under us: walk again
            continue
        if got is None:
            break
        # knob pervma_no_recheck_after_lock: trust the VMA found before it
        # was locked — but it may have been freed and recycled meanwhile
        if not mm.config.knob("pervma_no_recheck_after_lock") and (
                address < await Load(got, "vm_start") or address >= await Load(got, "vm_end")):
            await vma_end_read(got)
            break
        await rcu.read_unlock()
        return got
    await rcu.read_unlock()
    kernel.count("vma_lock_abort")
    return None
