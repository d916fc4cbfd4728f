"""include/linux/mmap_lock.h: mmap_lock, the mm_lock_seq sequence count,
and the per-VMA lock's writer side.

mm_lock_seq is a seqcount: mmap_write_lock() makes it odd, and
mmap_write_unlock() even again, so a lockless reader that saw the same even
value before and after its work knows no writer ran in between.  The
per-VMA lock reuses it: a writer marks each VMA it changes with the current
(odd) value, and mmap_write_unlock() unlocks them all at once by bumping it.

Lock order: mmap_lock -> vma lock -> anon_vma/i_mmap -> mm.page_table_lock -> PTL.
"""

from __future__ import annotations

from typing import Any

from specfault.runtime import Load, Store, WaitUntil


def mmap_read_lock(mm: Any) -> Any:
    """``await mmap_read_lock(mm)``."""
    return mm.mmap_lock.down_read()


def mmap_read_unlock(mm: Any) -> Any:
    """``await mmap_read_unlock(mm)``."""
    return mm.mmap_lock.up_read()


async def mmap_write_lock(mm: Any) -> None:
    await mm.mmap_lock.down_write()
    await mm_lock_seqcount_begin(mm)


async def mmap_write_unlock(mm: Any) -> None:
    await mm_lock_seqcount_end(mm)
    await mm.mmap_lock.up_write()


async def mm_lock_seqcount_begin(mm: Any) -> None:
    seq = await Load(mm, "mm_lock_seq")
    # knob mm_lock_seq_bits: a narrow counter wraps, and a reader preempted
    # across 2^(bits-1) writer cycles sees the same value again (ABA).
    await Store(mm, "mm_lock_seq", (seq + 1) & mm.seq_mask)


async def mm_lock_seqcount_end(mm: Any) -> None:
    seq = await Load(mm, "mm_lock_seq")
    await Store(mm, "mm_lock_seq", (seq + 1) & mm.seq_mask)


async def vma_start_write(vma: Any) -> None:
    """Write-lock ``vma`` until mmap_write_unlock(): mark it with the
    current mm_lock_seq, then wait for readers that got in before to
    leave.  Caller holds mmap_lock for write."""
    mm = vma.vm_mm
    seq = mm.mm_lock_seq
    if vma.vm_lock_seq == seq:
        return
    await Store(vma, "vm_lock_seq", seq)
    if vma.vm_refcnt:
        await WaitUntil(lambda: vma.vm_refcnt == 0, f"vma readers of {vma.label()}", (vma,))


async def vma_mark_detached(vma: Any) -> None:
    await Store(vma, "detached", True)
