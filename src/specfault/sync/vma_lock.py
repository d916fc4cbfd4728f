"""Per-VMA locks, as in Linux 6.18 (include/linux/mmap_lock.h, mm/mmap_lock.c).

Generic over any ``vma`` with ``vm_lock_seq`` (int, -1 = never locked: Linux
uses UINT_MAX), ``vm_refcnt`` (int) and ``vm_mm`` (an mm with
``mm_lock_seq``).

The scheme
----------
* ``vm_refcnt``: 0 = detached; 1 = attached; +1 per reader;
  +``VMA_LOCK_OFFSET`` while a writer waits for readers to drain.
* A VMA is *write-locked* when ``vma.vm_lock_seq == mm.mm_lock_seq`` — the
  writer (holding mmap_lock for write, so the count is odd) stored it there.
  ``mmap_write_unlock`` bumps ``mm_lock_seq`` and so unlocks every VMA at once.
* A reader (``vma_start_read``, under RCU) takes a reference only if the VMA
  is attached and no writer is waiting (``__refcount_inc_not_zero_limited``),
  then re-checks ``vm_mm`` and ``vm_lock_seq``.  It never waits.
* A writer (``vma_start_write``) adds ``VMA_LOCK_OFFSET`` — new readers now
  fail — and waits until only its own bias and the attach reference remain.

Returns of :func:`vma_start_read`: the vma (read-locked), ``None`` (locked or
recycled: fall back to mmap_lock), or :data:`VMA_EAGAIN` (detached under us:
``ERR_PTR(-EAGAIN)``, retry the lookup).

A read lock appears in ``task.held`` (so lockdep sees a task exit with one)
but, like Linux's trylock-style ``rwsem_acquire_read``, records no order.
"""

from __future__ import annotations

from typing import Any

from specfault.runtime import STATE, AtomicAdd, KObject, Load, ModelBug, Op, Store, UseAfterFree, WaitUntil

VMA_LOCK_OFFSET = 0x40000000
VMA_REF_LIMIT = VMA_LOCK_OFFSET - 1


class _VmaEagain:
    def __repr__(self) -> str:
        return "VMA_EAGAIN"


#: vma_start_read's ERR_PTR(-EAGAIN): the VMA was detached; retry the walk
VMA_EAGAIN: Any = _VmaEagain()


class RefIncNotZeroLimited(Op):
    """__refcount_inc_not_zero_limited_acquire(&vma->vm_refcnt, &old, limit):
    returns ``(ok, old)``."""

    __slots__ = ("vma", "limit")
    kind = "refcount_inc"

    def __init__(self, vma: Any, limit: int = VMA_REF_LIMIT) -> None:
        self.vma = vma
        self.limit = limit

    def perform(self) -> tuple[bool, int]:
        vma = self.vma
        if isinstance(vma, KObject) and vma.freed_at is not None:
            raise UseAfterFree(vma, vma.freed_at, "refcount_inc vm_refcnt")
        old: int = vma.vm_refcnt
        if old == 0 or old + 1 > self.limit:
            return (False, old)
        vma.vm_refcnt = old + 1
        return (True, old)

    def footprint(self) -> tuple[tuple[object, str, str], ...]:
        return ((self.vma, "vm_refcnt", "w"),)

    def describe(self) -> str:
        return "refcount_inc_not_zero vm_refcnt"


class RefAddNotZero(Op):
    """refcount_add_not_zero(delta, &vma->vm_refcnt): returns success."""

    __slots__ = ("vma", "delta")
    kind = "refcount_add"

    def __init__(self, vma: Any, delta: int) -> None:
        self.vma = vma
        self.delta = delta

    def perform(self) -> bool:
        vma = self.vma
        if isinstance(vma, KObject) and vma.freed_at is not None:
            raise UseAfterFree(vma, vma.freed_at, "refcount_add vm_refcnt")
        if vma.vm_refcnt == 0:
            return False
        vma.vm_refcnt += self.delta
        return True

    def footprint(self) -> tuple[tuple[object, str, str], ...]:
        return ((self.vma, "vm_refcnt", "w"),)

    def describe(self) -> str:
        return "refcount_add_not_zero vm_refcnt"


def _drop_held(vma: Any) -> None:
    task = STATE.task
    if task is not None:
        for i, h in enumerate(task.held):
            if h is vma:
                del task.held[i]
                return


async def vma_refcount_put(vma: Any) -> None:
    """Drop a reader's reference (the writer waiting on it re-checks)."""
    await AtomicAdd(vma, "vm_refcnt", -1)
    _drop_held(vma)


async def vma_start_read(mm: Any, vma: Any) -> Any:
    """Try to read-lock ``vma`` of ``mm`` without waiting (caller holds
    rcu_read_lock).  Returns ``vma``, ``None`` or :data:`VMA_EAGAIN`."""
    # 1. lockless pessimistic check (a race only gives a false "locked")
    if await Load(vma, "vm_lock_seq") == await Load(mm, "mm_lock_seq"):
        return None
    # 2. take a reference unless detached or a writer is draining readers
    ok, old = await RefIncNotZeroLimited(vma)
    if not ok:
        return None if old else VMA_EAGAIN
    task = STATE.task
    if task is not None:
        task.held.append(vma)
    # 3. recycled into another mm (SLAB_TYPESAFE_BY_RCU): not ours
    if await Load(vma, "vm_mm") is not mm:
        await vma_refcount_put(vma)
        return None
    # 4. re-check under the reference: vm_lock_seq changes only while
    #    vm_refcnt is held by the writer, and mm_lock_seq bumps unlock all
    if await Load(vma, "vm_lock_seq") == await Load(mm, "mm_lock_seq"):
        await vma_refcount_put(vma)
        return None
    return vma


async def vma_end_read(vma: Any) -> None:
    """Release a read lock taken by :func:`vma_start_read`."""
    await vma_refcount_put(vma)


def _readers_drained(vma: Any, target: int) -> WaitUntil:
    return WaitUntil(lambda: vma.vm_refcnt == target, "vma readers drain", (vma,))


async def __vma_enter_locked(vma: Any, detaching: bool) -> bool:
    """Add VMA_LOCK_OFFSET and wait for readers; False if detached."""
    target = VMA_LOCK_OFFSET + (0 if detaching else 1)
    if not await RefAddNotZero(vma, VMA_LOCK_OFFSET):
        return False
    await _readers_drained(vma, target)
    return True


async def __vma_exit_locked(vma: Any) -> bool:
    """Remove VMA_LOCK_OFFSET; True if that left the VMA detached."""
    return bool(await AtomicAdd(vma, "vm_refcnt", -VMA_LOCK_OFFSET) == 0)


def vma_assert_mmap_write_locked(vma: Any, who: str) -> int:
    seq: int = vma.vm_mm.mm_lock_seq
    if not seq & 1:
        raise ModelBug(f"{who}: mmap_lock not write-locked (mm_lock_seq {seq} even)")
    return seq


async def vma_start_write(vma: Any) -> None:
    """Write-lock ``vma`` (caller holds mmap_lock for write); waits for the
    readers to leave.  Released by mmap_write_unlock/vma_end_write_all."""
    mm_lock_seq = vma_assert_mmap_write_locked(vma, "vma_start_write")
    if await Load(vma, "vm_lock_seq") == mm_lock_seq:
        return  # already write-locked in this mmap_lock cycle
    locked = await __vma_enter_locked(vma, False)
    await Store(vma, "vm_lock_seq", mm_lock_seq)
    if locked and await __vma_exit_locked(vma):
        raise ModelBug("vma_start_write: vma detached while write-locking")


def is_vma_write_locked(vma: Any) -> bool:
    """vma_assert_write_locked's test (not an interleaving point)."""
    return bool(vma.vm_lock_seq == vma.vm_mm.mm_lock_seq)


async def vma_mark_attached(vma: Any) -> None:
    """The VMA becomes visible to readers: vm_refcnt = 1."""
    if not is_vma_write_locked(vma):
        raise ModelBug("vma_mark_attached: vma not write-locked")
    await Store(vma, "vm_refcnt", 1)


async def vma_mark_detached(vma: Any) -> None:
    """Detach a write-locked VMA; waits for transient readers to drop."""
    if not is_vma_write_locked(vma):
        raise ModelBug("vma_mark_detached: vma not write-locked")
    if await AtomicAdd(vma, "vm_refcnt", -1) != 0:
        if await __vma_enter_locked(vma, True):
            if not await __vma_exit_locked(vma):
                raise ModelBug("vma_mark_detached: vma still attached")
