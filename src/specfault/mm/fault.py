"""The arch-level fault entry (arch/x86/mm/fault.c: do_user_addr_fault).

``Config.fault_protocol`` selects how the VMA is found and kept stable
while ``handle_mm_fault`` runs.  Whatever the protocol, a fault it cannot
finish falls back to the classic path, which always can.

classic
    mmap_read_lock, find_vma, access check, handle_mm_fault,
    mmap_read_unlock.

speculative (Michel Lespinasse's v2, the seed)
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
       the sequence (SEQ1), ``pmd_same``, ``spin_trylock`` the PTL, re-check
       the sequence (SEQ2).  Anything else aborts with VM_FAULT_RETRY,
       before any visible effect, and the fault is redone classically.

dufour (Laurent Dufour's v11, the SPF shipped in Android kernels)
    the speculative path above with three decisions changed (knobs, set by
    the protocol: see config.DUFOUR_KNOBS): no mm-wide sequence — after the
    lookup (under ``mm_rb_lock``, a cost here) the VMA is pinned
    (``get_vma``: ``vm_ref_count``, honoured by the free) and *its*
    sequence sampled (``vm_lock_seq``: a writer inside it → SPF_ABORT_ODD);
    the re-checks after the copy and at SEQ1/SEQ2 ask only whether this
    VMA changed or left the tree, so a writer elsewhere in the mm does not
    abort the fault; ``put_vma`` when the attempt ends.

pervma (Linux 6.4+)
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
from bisect import bisect_right
from typing import Any

from specfault.constants import BUS_ADRERR, SEGV_ACCERR, SEGV_MAPERR, TASK_SIZE
from specfault.errors import BusError, OutOfMemory, SegmentationFault
from specfault.mm.fault_flags import (
    FAULT_FLAG_DEFAULT,
    FAULT_FLAG_INSTRUCTION,
    FAULT_FLAG_SPECULATIVE,
    FAULT_FLAG_USER,
    FAULT_FLAG_VMA_LOCK,
    FAULT_FLAG_WRITE,
    VM_FAULT_COMPLETED,
    VM_FAULT_OOM,
    VM_FAULT_RETRY,
    VM_FAULT_SIGBUS,
    VM_FAULT_SIGSEGV,
)
from specfault.mm.memory import handle_mm_fault, spf_abort, spf_seq_changed, spf_vma_seq_begin
from specfault.mm.mmap import expand_stack
from specfault.mm.mmap_lock import mmap_read_lock, mmap_read_unlock
from specfault.mm.vma import VM_EXEC, VM_GROWSDOWN, VM_READ, VM_WRITE
from specfault.mm.vma_ops import get_vma, put_vma
from specfault.runtime import Load, ModelBug, Op, UseAfterFree
from specfault.sync.seqcount import mmap_lock_speculate_try_begin
from specfault.sync.vma_lock import VMA_EAGAIN, vma_end_read, vma_start_read

ACCESS_READ, ACCESS_WRITE, ACCESS_EXEC = 0, 1, 2


def access_error(access: int, vma: Any, prot: bool = False) -> bool:
    """x86 access_error(): may this access use this VMA at all?  ``prot`` is
    the PF_PROT bit (the PTE was present).  An instruction fetch from a
    page that is not present is treated as a read — it maps the page (zero
    page, fault-around...) and only the refault, now a protection fault on
    an NX PTE, is an error."""
    flags = vma.vm_flags
    if access == ACCESS_WRITE:
        return not flags & VM_WRITE
    if prot:
        return True          # read/exec of a present page: NX (or PROTNONE)
    return not flags & (VM_READ | VM_WRITE | VM_EXEC)   # vma_is_accessible()


_FLAGS = (FAULT_FLAG_DEFAULT | FAULT_FLAG_USER,
          FAULT_FLAG_DEFAULT | FAULT_FLAG_USER | FAULT_FLAG_WRITE,
          FAULT_FLAG_DEFAULT | FAULT_FLAG_USER | FAULT_FLAG_INSTRUCTION)


def fault_flags(access: int) -> int:
    """FAULT_FLAG_* for a user read, write or instruction fetch."""
    return _FLAGS[access]


def raise_for(fault: int, address: int) -> None:
    if fault & VM_FAULT_OOM:
        raise OutOfMemory(errno.ENOMEM, f"page fault at {address:#x}: out of memory (VM_FAULT_OOM)")
    if fault & VM_FAULT_SIGBUS:
        raise BusError(address, BUS_ADRERR)
    if fault & VM_FAULT_SIGSEGV:
        raise SegmentationFault(address, SEGV_ACCERR)


async def do_user_addr_fault(mm: Any, address: int, access: int, prot: bool = False) -> None:
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
        if fault is not None:
            raise_for(fault, address)
            return
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
    await mmap_read_unlock(mm)
    raise_for(fault, address)


# ------------------------------------------------------------ lockless lookup
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


class VmaCopy(Op):
    """``pvma = *vma``: copy the VMA's fields in one go (it may be freed
    after the RCU section ends, never during it)."""

    __slots__ = ("vma",)
    kind = "vma_copy"

    def __init__(self, vma: Any) -> None:
        self.vma = vma

    def perform(self) -> Any:
        vma = self.vma
        if vma.freed_at is not None:
            raise UseAfterFree(vma, vma.freed_at, "speculative VMA copy")
        return vma.snapshot()

    def footprint(self) -> tuple[tuple[object, str, str], ...]:
        return ((self.vma, "fields", "r"),)

    def describe(self) -> str:
        return f"copy {self.vma.label()}"


# ------------------------------------------------------------------ speculative
async def do_speculative_fault(mm: Any, address: int, access: int, flags: int,
                               prot: bool = False) -> int | None:
    """Try the fault without mmap_lock.  Returns the fault result, or None
    when it aborted (counted) and the classic path must run.  Lespinasse's
    SPF ("speculative") and Dufour's ("dufour": the knobs spf_seq="vma",
    spf_vma_refcount, spf_vma_pin, spf_mm_rb_rwlock) both run here."""
    if mm.mm_users <= 1:
        return None                               # no_spf: nobody to race with
    kernel = mm.kernel
    cfg = mm.config
    kernel.count("spf_attempt")
    # knob spf_seq: "mm" validates against the per-mm mm_lock_seq sampled
    # here — any writer anywhere aborts the fault; "vma" (Dufour) against
    # the found VMA's own sequence, sampled after the lookup
    per_vma = cfg.knob("spf_seq") == "vma"
    seq = 0
    if not per_vma:
        ok, seq = await mmap_lock_speculate_try_begin(mm)
        # knob speculate_while_odd: begin even though a writer holds mmap_lock
        if not ok and not cfg.knob("speculate_while_odd"):
            return spf_abort(kernel, "SPF_ABORT_ODD")
    rcu = kernel.rcu
    await rcu.read_lock()
    vma = await find_vma_rcu(mm, address)
    if vma is None:
        await rcu.read_unlock()
        return spf_abort(kernel, "SPF_ABORT_UNMAPPED")
    # knob spf_vma_refcount (Laurent Dufour's series, not the seed): every
    # attempt pins the VMA it found with an atomic on its refcount
    # (get_vma(): under mm->mm_rb_lock, atomic_inc(&vma->vm_ref_count)) and
    # drops it when done or aborted (put_vma()).  Alone, a cost knob for the
    # simulator; with spf_vma_pin the free honours the pin (vma_ops.py).
    # The pin is taken inside the lookup's RCU section: the VMA cannot have
    # been freed yet, and once pinned it is not freed until put_vma.
    if not cfg.knob("spf_vma_refcount"):
        return await _spf_with_vma(mm, kernel, cfg, rcu, vma, seq, per_vma,
                                   address, access, flags, prot)
    # (in Dufour's get_vma() the lookup itself runs under mm_rb_lock too;
    # the lock excludes no one in the model, so only its line traffic counts)
    if cfg.knob("spf_mm_rb_rwlock"):
        await MmRbReadLock(mm, 1)
    await get_vma(vma)
    if cfg.knob("spf_mm_rb_rwlock"):
        await MmRbReadLock(mm, -1)
    fault = await _spf_with_vma(mm, kernel, cfg, rcu, vma, seq, per_vma, address, access, flags, prot)
    await put_vma(vma)
    return fault


class MmRbReadLock(Op):
    """``read_lock(&mm->mm_rb_lock)`` (``delta`` +1) / ``read_unlock`` (-1)
    of Dufour's v11 (the rwlock that protected the mm_rb tree for lockless
    VMA lookups; the model's tree is RCU-walked, so the lock excludes no
    one here).  Only its cost matters: an atomic on one line of the mm,
    shared by every thread.  Used with knob spf_mm_rb_rwlock."""

    __slots__ = ("mm", "delta")
    kind = "atomic"

    def __init__(self, mm: Any, delta: int) -> None:
        self.mm = mm
        self.delta = delta

    def perform(self) -> None:
        return None

    def footprint(self) -> tuple[tuple[object, str, str], ...]:
        return ((self.mm, "mm_rb_lock", "w"),)

    def describe(self) -> str:
        return f"{'read_lock' if self.delta > 0 else 'read_unlock'} mm_rb_lock"


async def _spf_with_vma(mm: Any, kernel: Any, cfg: Any, rcu: Any, vma: Any, seq: int,
                        per_vma: bool, address: int, access: int, flags: int,
                        prot: bool) -> int | None:
    """do_speculative_fault() after the lockless lookup found ``vma``
    (inside rcu_read_lock, which it drops).  ``per_vma``: ``seq`` is still
    to be sampled, from the VMA."""
    if per_vma:
        ok, seq = await spf_vma_seq_begin(mm, vma)
        if not ok:                                # a writer is changing this VMA
            await rcu.read_unlock()
            return spf_abort(kernel, "SPF_ABORT_ODD")
    if await Load(vma, "vm_file") is not None:
        await rcu.read_unlock()
        return spf_abort(kernel, "SPF_ABORT_NO_SPECULATE")
    pvma = await VmaCopy(vma)
    await rcu.read_unlock()
    # knob no_seq_check_after_lookup: trust a copy a writer may have torn
    if not cfg.knob("no_seq_check_after_lookup") and \
            await spf_seq_changed(mm, seq, vma, pvma):
        return spf_abort(kernel, "SPF_ABORT_VMA_COPY")
    # (vm_mm: with vma_typesafe_rcu a VMA found through a stale tree node
    # may have been recycled into another mm — a per-VMA sequence cannot
    # tell, the mm_lock_seq of our mm did)
    if pvma.vm_mm is not mm or not pvma.vm_start <= address < pvma.vm_end:
        return spf_abort(kernel, "SPF_ABORT_UNMAPPED")
    if access_error(access, pvma, prot):
        return spf_abort(kernel, "SPF_ABORT_ACCESS_ERROR")
    fault = await handle_mm_fault(pvma, address, flags | FAULT_FLAG_SPECULATIVE, seq, vma)
    if fault & VM_FAULT_RETRY:
        kernel.count("spf_abort")                 # the reason was counted where it happened
        return None
    kernel.count("spf_success")                   # model-only: attempt = success + abort
    return fault


# --------------------------------------------------------------------- per-VMA
async def lock_vma_under_rcu(mm: Any, address: int) -> Any:
    """Find and read-lock the VMA covering ``address`` without mmap_lock;
    None when that is not possible now (fall back to mmap_lock)."""
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


async def do_vma_locked_fault(mm: Any, address: int, access: int, flags: int,
                              prot: bool = False) -> int | None:
    """Fault under the VMA lock.  Returns the fault result, or None when the
    classic path must run."""
    kernel = mm.kernel
    vma = await lock_vma_under_rcu(mm, address)
    if vma is None:
        return None
    if access_error(access, vma, prot):
        await vma_end_read(vma)
        kernel.count("vma_lock_success")
        raise SegmentationFault(address, SEGV_ACCERR)
    fault = await handle_mm_fault(vma, address, flags | FAULT_FLAG_VMA_LOCK)
    # (Linux's handlers drop the VMA lock themselves before VM_FAULT_RETRY;
    # the model's return it held, so it is dropped here in both cases)
    if not fault & VM_FAULT_COMPLETED:
        await vma_end_read(vma)
    if not fault & VM_FAULT_RETRY:
        kernel.count("vma_lock_success")
        return fault
    kernel.count("vma_lock_retry")
    return None


__all__ = ["ACCESS_EXEC", "ACCESS_READ", "ACCESS_WRITE", "ModelBug", "access_error",
           "do_user_addr_fault", "find_vma_rcu", "lock_vma_under_rcu"]
