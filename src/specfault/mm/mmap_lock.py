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

Lock order: mmap_lock -> vma lock -> page_table_lock -> PTL.
"""

from __future__ import annotations

from typing import Any

from specfault.sync import vma_lock as _vl
from specfault.sync.seqcount import write_seqcount_begin, write_seqcount_end


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
