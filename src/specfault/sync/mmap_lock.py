"""include/linux/mmap_lock.h: mmap_lock plus the ``mm_lock_seq`` count.

Works on any ``mm`` with ``mmap_lock`` (an :class:`RwSemaphore`) and
``mm_lock_seq`` (an int; optional ``mm_lock_seq_bits``).  Write-locking
makes ``mm_lock_seq`` odd and unlocking (``vma_end_write_all``) makes it
even again, which at once releases every VMA write-locked under it (their
``vm_lock_seq`` no longer matches).

Lock order: mmap_lock -> vma lock -> PTL.
"""

from __future__ import annotations

from typing import Any

from specfault.sync.seqcount import write_seqcount_begin, write_seqcount_end


async def mmap_read_lock(mm: Any) -> None:
    await mm.mmap_lock.down_read()


async def mmap_read_trylock(mm: Any) -> bool:
    return bool(await mm.mmap_lock.down_read_trylock())


async def mmap_read_unlock(mm: Any) -> None:
    await mm.mmap_lock.up_read()


async def mmap_write_lock(mm: Any) -> None:
    """down_write(mmap_lock); mm_lock_seqcount_begin (count becomes odd)."""
    await mm.mmap_lock.down_write()
    await write_seqcount_begin(mm, "mm_lock_seq")


async def vma_end_write_all(mm: Any) -> None:
    """mm_lock_seqcount_end: unlock every write-locked VMA at once."""
    await write_seqcount_end(mm, "mm_lock_seq")


async def mmap_write_unlock(mm: Any) -> None:
    await vma_end_write_all(mm)
    await mm.mmap_lock.up_write()


async def mmap_write_downgrade(mm: Any) -> None:
    await vma_end_write_all(mm)
    await mm.mmap_lock.downgrade_write()
