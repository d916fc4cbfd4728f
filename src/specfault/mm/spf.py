"""Speculative page faults: Michel Lespinasse's (the seed; protocol
"speculative") and Laurent Dufour's (protocol "dufour") — every helper of
the speculative path in one file.

The path, in order (``fault.do_user_addr_fault`` picks it):

1. :func:`do_speculative_fault` — the entry: never when the mm has one
   user; sample ``mm_lock_seq`` (odd: SPF_ABORT_ODD); under
   ``rcu_read_lock()`` find the VMA locklessly (``mmap_lock.find_vma_rcu``),
   with Dufour's knobs pin it (:func:`get_vma`) and sample *its* sequence
   (:func:`spf_vma_seq_begin`); copy it (:class:`VmaCopy`); re-check the
   sequence (:func:`spf_seq_changed`: Lespinasse's mmap_seq_read_check,
   Dufour's vma_has_changed); check the access against the copy;
2. :func:`spf_handle_mm_fault` — the walk without allocation, under RCU
   or with interrupts off (:func:`spf_walk_begin`), then the generic
   handlers of ``memory.py`` with FAULT_FLAG_SPECULATIVE;
3. :func:`spf_pte_map_lock` — the commit point every handler goes
   through (``memory.pte_map_lock``): SEQ1, trylock the PTL, pmd_same
   under it, SEQ2;
4. any failure aborts with VM_FAULT_RETRY, counted under its
   ``SPF_ABORT_*`` name (:func:`spf_abort` before the walk,
   :func:`spf_fail` from inside it), before any visible effect, and
   :func:`put_vma` drops the pin; the fault is redone classically.

The entry calls ``memory.py``'s handlers (``memory.handle_pte_fault``) with
this file's commit point in the vmf (``vmf.spf_map_lock``), which
``memory.pte_map_lock`` calls; aborts from inside a handler go through
``fault_flags.spf_fail``.  So this file imports memory.py and never the
other way round (the package's import graph is acyclic).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from specfault.mm import memory
from specfault.mm.fault_flags import FAULT_FLAG_SPECULATIVE, VM_FAULT_RETRY, access_error, spf_fail
from specfault.mm.mmap_lock import find_vma_rcu
from specfault.mm.pgtable import PMD_LEVEL, pmd_trans_huge, pte_offset_map, walk
from specfault.mm.vma_ops import _free_now
from specfault.runtime import AtomicAdd, Load, ModelBug, Op, UseAfterFree, load_item
from specfault.sync.cpu import local_irq_disable, local_irq_enable
from specfault.sync.seqcount import mmap_lock_speculate_retry, mmap_lock_speculate_try_begin

if TYPE_CHECKING:
    from specfault.mm.memory import Vmf
    from specfault.mm.vma import VmArea


# ------------------------------------------------------------------ the entry
async def do_speculative_fault(mm: Any, address: int, access: int, flags: int,
                               prot: bool = False) -> int | None:
    """Try the fault without mmap_lock.  Returns the fault result, or None
    when it aborted (counted) and the classic path must run.  Lespinasse's
    SPF ("speculative") and Dufour's ("dufour": the knobs spf_seq="vma",
    spf_vma_refcount, spf_vma_pin, spf_mm_rb_rwlock) both run here; the
    flow is this module's, steps 1-4.

    We enter with no lock held and return with none (the RCU section of
    the lookup is left before the walk; a Dufour pin is dropped)."""
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
    # knob dufour_seq_after_copy (a mutant): the VMA is copied before its
    # sequence is sampled — a writer that changes the VMA after the copy
    # and is done before the sample leaves a stale copy with a fresh sequence
    late = per_vma and cfg.knob("dufour_seq_after_copy")
    if per_vma and not late:
        ok, seq = await spf_vma_seq_begin(mm, vma)
        if not ok:                                # a writer is changing this VMA
            await rcu.read_unlock()
            return spf_abort(kernel, "SPF_ABORT_ODD")
    if await Load(vma, "vm_file") is not None:
        await rcu.read_unlock()
        return spf_abort(kernel, "SPF_ABORT_NO_SPECULATE")
    pvma = await VmaCopy(vma)
    if late:
        ok, seq = await spf_vma_seq_begin(mm, vma)
        if not ok:
            await rcu.read_unlock()
            return spf_abort(kernel, "SPF_ABORT_ODD")
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
    fault = await spf_handle_mm_fault(pvma, address, flags, seq, vma)
    if fault & VM_FAULT_RETRY:
        kernel.count("spf_abort")                 # the reason was counted where it happened
        return None
    kernel.count("spf_success")                   # model-only: attempt = success + abort
    return fault


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


def get_vma(vma: VmArea) -> AtomicAdd:
    """``await get_vma(vma)``: atomic_inc(&vma->vm_ref_count).  The caller
    found ``vma`` under rcu_read_lock() and is still inside it, so the VMA
    is not freed yet; from here the pin keeps it (with spf_vma_pin)."""
    return AtomicAdd(vma, "vm_ref_count", 1)


def put_vma(vma: VmArea) -> Op:
    """``await put_vma(vma)``: drop a pin.  With spf_vma_pin, the last put of
    a VMA whose free was deferred frees it (atomic_dec_and_test); without,
    a plain atomic decrement (the count is a cost only)."""
    if vma.vm_mm.config.knob("spf_vma_pin"):
        return PutVma(vma)
    return AtomicAdd(vma, "vm_ref_count", -1)


class PutVma(Op):
    """put_vma(): ``if (atomic_dec_and_test(&vma->vm_ref_count))`` free the
    VMA if its free was deferred.  Returns the new count."""

    __slots__ = ("vma",)
    kind = "atomic"

    def __init__(self, vma: VmArea) -> None:
        self.vma = vma

    def perform(self) -> int:
        vma = self.vma
        vma.check_live("put_vma vm_ref_count")
        count: int = vma.vm_ref_count - 1
        if count < 0:
            raise ModelBug(f"put_vma: {vma.label()} vm_ref_count underflow")
        vma.vm_ref_count = count
        site = vma.vm_free_pending
        if count == 0 and site is not None:
            vma.vm_free_pending = None
            _free_now(vma, site)
        return count

    def _frees(self) -> bool:
        vma = self.vma
        return vma.vm_ref_count == 1 and vma.vm_free_pending is not None

    def footprint(self) -> tuple[tuple[object, str, str], ...]:
        # the put that frees writes the whole VMA (poison, or reuse)
        return ((self.vma, "*" if self._frees() else "vm_ref_count", "w"),)

    def describe(self) -> str:
        return f"put_vma {self.vma.label()}"


# ------------------------------------------------------------ sequence checks
def spf_abort(kernel: Any, reason: str) -> int | None:
    """Count an abort decided before handle_mm_fault; None = fall back."""
    kernel.count(reason)
    kernel.count("spf_abort")
    return None


async def spf_seq_changed(mm: Any, seq: int, orig: Any, copy: Any) -> bool:
    """mmap_seq_read_check(): has a writer taken mmap_lock since ``seq``?
    Knob spf_seq="vma" (Dufour's SPF): has a writer changed *this* VMA
    (``orig``) since ``seq``, its snapshot of the VMA's sequence (see
    :func:`spf_vma_seq_begin`)?  Knob vma_recheck_not_mm_seq (a mutant)
    instead compares the live VMA with the copy — unsafe: the COW ABA
    interleaving restores the VMA."""
    cfg = mm.config
    if cfg.knob("vma_recheck_not_mm_seq"):
        return bool(await VmaChanged(orig, copy))
    if cfg.knob("spf_seq") == "vma":
        return bool(await VmaSeqChanged(orig, seq))
    return bool(await mmap_lock_speculate_retry(mm, seq))


async def spf_vma_seq_begin(mm: Any, vma: Any) -> tuple[bool, int]:
    """Dufour's per-VMA sequence (``vma->vm_sequence``), on the model's
    per-VMA write marking: ``ok, seq = await spf_vma_seq_begin(mm, vma)``
    right after the lookup (inside rcu_read_lock, the VMA pinned).

    A writer changes a VMA only after ``vma_start_write(vma)`` has stored
    its (odd) ``mm_lock_seq`` in ``vma.vm_lock_seq``, and ``mmap_write_unlock``
    ends the write section of every VMA it marked at once.  So ``vm_lock_seq
    == mm_lock_seq`` means "a writer is changing this VMA now" (the odd
    ``vm_sequence``: ``ok`` False), and a later ``vm_lock_seq != seq`` means
    "a writer touched it since" (:class:`VmaSeqChanged`).

    The two loads are in this order on purpose: the VMA's value first.  If
    it was stored by write section S, then when mm_lock_seq is read either
    S is still running (equal: abort) or it has ended, with all of its
    changes to the VMA made; any later section marks the VMA anew before
    touching it.  Read the other way round, a writer could enter and mark
    the VMA between the two loads, and its value would pass for a finished
    section's (mutant dufour_seq_loads_reordered).

    No ABA: the values a VMA's ``vm_lock_seq`` takes are the odd
    ``mm_lock_seq`` of successive write sections of its mm (64 bits: no
    wraparound), strictly increasing, so once it moves away from ``seq`` it
    cannot come back to it.  The only other value, -1, is stored when a
    (recycled, with vma_typesafe_rcu) VMA is re-initialised, which needs a
    free, which the pin defers for a VMA pinned while in the tree; a VMA
    pinned after its free is detached, or re-linked with a new value, or
    belongs to another mm — each check of the fault catches one of those."""
    # knob dufour_seq_loads_reordered (a mutant): mm_lock_seq first
    if mm.config.knob("dufour_seq_loads_reordered"):
        cur: int = await Load(mm, "mm_lock_seq")
        seq: int = await Load(vma, "vm_lock_seq")
        return (seq != cur, seq)
    seq = await Load(vma, "vm_lock_seq")
    return (seq != await Load(mm, "mm_lock_seq"), seq)


class VmaSeqChanged(Op):
    """Dufour's vma_has_changed(): the VMA left the tree (detached) or a
    writer marked it since the snapshot ``seq`` of ``vm_lock_seq``."""

    __slots__ = ("vma", "seq", "detached")
    kind = "seq_retry"

    def __init__(self, vma: Any, seq: int) -> None:
        self.vma = vma
        self.seq = seq
        # knob dufour_no_detached_check (a mutant): only the sequence — a
        # VMA found just before a writer removed it, its sequence sampled
        # after that writer finished, carries the writer's value, unchanged
        # since the snapshot
        self.detached = not vma.vm_mm.config.knob("dufour_no_detached_check")

    def perform(self) -> bool:
        vma = self.vma
        vma.check_live("speculative vm_lock_seq re-check")
        return bool(vma.vm_lock_seq != self.seq or (self.detached and vma.detached))

    def footprint(self) -> tuple[tuple[object, str, str], ...]:
        return ((self.vma, "vm_lock_seq", "r"), (self.vma, "vm_refcnt", "r"))

    def describe(self) -> str:
        return f"vma_has_changed {self.vma.label()}"


class VmaChanged(Op):
    """The mutant's per-VMA re-check: do the live VMA's fields differ from
    the speculative copy (or is it gone)?"""

    __slots__ = ("vma", "copy")
    kind = "vma_recheck"

    def __init__(self, vma: Any, copy: Any) -> None:
        self.vma = vma
        self.copy = copy

    def perform(self) -> bool:
        v, c = self.vma, self.copy
        if v is None or v.freed_at is not None or v.detached:
            return True
        return (v.vm_start, v.vm_end, v.vm_flags, v.vm_pgoff, v.anon_vma) != \
            (c.vm_start, c.vm_end, c.vm_flags, c.vm_pgoff, c.anon_vma)

    def footprint(self) -> tuple[tuple[object, str, str], ...]:
        return ((self.vma, "fields", "r"),)

    def describe(self) -> str:
        return f"recheck {self.vma.label() if self.vma is not None else 'vma'}"


def spf_walk_mode(mm: Any) -> str:
    """How a speculative walk keeps page tables from being freed under it:
    "rcu" when tables are freed after a grace period, "irq" (interrupts
    off) when they are freed after an IPI round.  Knob spf_walk overrides
    (the Lutomirski mutant walks with interrupts off while tables go
    through RCU)."""
    mode = mm.config.knob("spf_walk")
    if mode == "auto":
        return "irq" if mm.config.page_table_free == "ipi" else "rcu"
    return str(mode)


async def spf_walk_begin(mm: Any) -> None:
    if spf_walk_mode(mm) == "rcu":
        await mm.kernel.rcu.read_lock()
    else:
        await local_irq_disable()


async def spf_walk_end(mm: Any) -> None:
    if spf_walk_mode(mm) == "rcu":
        await mm.kernel.rcu.read_unlock()
    else:
        await local_irq_enable()


async def spf_pte_map_lock(vmf: Vmf) -> bool:
    """__pte_map_lock() for a speculative fault — the commit point:

    1. spf_walk_begin (rcu_read_lock, or interrupts off): the PTE table
       cannot be freed while we look at it;
    2. SEQ1: no writer since the snapshot (spf_seq_changed), else
       SPF_ABORT_PTE_MAP_LOCK_SEQ1;
    3. spin_trylock the PTL of the PTE table we walked to
       (``vmf.orig_pmd``) — never wait: the holder may be a writer waiting
       for us (interrupts off) — else SPF_ABORT_PTE_MAP_LOCK_PTL;
    4. pmd_same, under that PTL: the PMD entry still holds that table,
       else unlock, SPF_ABORT_PTE_MAP_LOCK_PMD.  Under the PTL because
       MADV_DONTNEED reclaims an emptied table (pt_reclaim.py) under
       mmap_lock for *read* — no sequence count moves — holding the
       table's PTL: checked before the trylock (Lespinasse's order, mutant
       spf_pmd_same_before_ptl), a reclaim can detach the table between
       the check and the trylock; not checked (mutant spf_no_pmd_same),
       the fault maps its page into a detached table.  The writers that
       take mmap_lock for write (free_pgtables, mremap's move_normal_pmd)
       are caught by SEQ2 either way;
    5. SEQ2: no writer got in between 2 and 3, else unlock,
       SPF_ABORT_PTE_MAP_LOCK_SEQ2 (knob no_seq2_check skips it);
    6. spf_walk_end.

    We enter with no lock held.  We return True with the PTL held (from
    here a writer that changes this PTE must wait for us), or False with
    nothing held, the reason counted."""
    mm = vmf.mm
    cfg = mm.config
    await spf_walk_begin(mm)
    if await spf_seq_changed(mm, vmf.seq, vmf.orig_vma, vmf.vma):
        await spf_walk_end(mm)
        spf_fail(vmf, "SPF_ABORT_PTE_MAP_LOCK_SEQ1")
        return False
    pmd = vmf.pmd
    assert pmd is not None
    # knob spf_pmd_same_before_ptl (a mutant): Lespinasse's order — the
    # check before the trylock, none under the PTL
    early = cfg.knob("spf_pmd_same_before_ptl")
    if early and await load_item(pmd, pmd.entries, vmf.pmd_idx) is not vmf.orig_pmd:
        await spf_walk_end(mm)
        spf_fail(vmf, "SPF_ABORT_PTE_MAP_LOCK_PMD")
        return False
    pt = vmf.orig_pmd
    assert pt is not None
    if not await pt.ptl.trylock():
        await spf_walk_end(mm)
        spf_fail(vmf, "SPF_ABORT_PTE_MAP_LOCK_PTL")
        return False
    # knob spf_no_pmd_same (a mutant): no pmd_same at all
    if not early and not cfg.knob("spf_no_pmd_same") and \
            await load_item(pmd, pmd.entries, vmf.pmd_idx) is not pt:
        await pt.ptl.unlock()
        await spf_walk_end(mm)
        spf_fail(vmf, "SPF_ABORT_PTE_MAP_LOCK_PMD")
        return False
    # knob no_seq2_check: commit although a writer may have run after SEQ1
    if not cfg.knob("no_seq2_check") and \
            await spf_seq_changed(mm, vmf.seq, vmf.orig_vma, vmf.vma):
        await pt.ptl.unlock()
        await spf_walk_end(mm)
        spf_fail(vmf, "SPF_ABORT_PTE_MAP_LOCK_SEQ2")
        return False
    await spf_walk_end(mm)
    vmf.ptl = pt.ptl
    return True


# --------------------------------------------------------- the speculative walk
async def spf_handle_mm_fault(vma: Any, address: int, flags: int, seq: int, orig_vma: Any) -> int:
    """handle_mm_fault(FAULT_FLAG_SPECULATIVE) on ``vma``, the private copy
    of ``orig_vma`` validated against ``seq`` (the mm_lock_seq snapshot,
    or with spf_seq="vma" the VMA's own).

    We enter with no lock at all: not mmap_lock, not the VMA lock, not in
    an RCU section.  The walk allocates nothing (a missing level aborts:
    SPF_ABORT_PUD, SPF_ABORT_PMD) and runs under spf_walk_begin/end —
    rcu_read_lock, or interrupts off when tables are freed after an IPI —
    reading every level through ops checked for use-after-free.  The
    handlers (memory.handle_pte_fault and below) commit only through
    :func:`spf_pte_map_lock`.  We return with no lock held: the result, or
    VM_FAULT_RETRY (the reason counted) before any visible effect."""
    mm = vma.vm_mm
    mm.vmstat["pgfault"] += 1
    vmf = memory.Vmf(vma, address, flags | FAULT_FLAG_SPECULATIVE)
    vmf.seq = seq
    vmf.orig_vma = orig_vma
    vmf.spf_map_lock = spf_pte_map_lock          # pte_map_lock's commit
    await spf_walk_begin(mm)
    pmd = await walk(mm, vmf.address, PMD_LEVEL)                # no alloc
    if pmd.level != PMD_LEVEL:
        await spf_walk_end(mm)
        return spf_fail(vmf, "SPF_ABORT_PUD")
    vmf.pmd = pmd
    pt = await pte_offset_map(pmd, vmf.address)
    # pmd_none or pmd_trans_huge: the speculative path allocates no table
    # and handles no huge PMD (a THP fault, a split) — both abort
    if pt is None or pmd_trans_huge(pt):
        await spf_walk_end(mm)
        return spf_fail(vmf, "SPF_ABORT_PMD")
    vmf.orig_pmd = pt
    # knob spf_walk_end_early (a mutant): the walk's RCU section (or
    # interrupts-off section) ends once the PTE table is found, before its
    # entry is read — "we only need the table pointer" — and munmap frees
    # the table in between
    if mm.config.knob("spf_walk_end_early"):
        await spf_walk_end(mm)
        vmf.orig_pte = await load_item(pt, pt.entries, vmf.pte_idx)
    else:
        vmf.orig_pte = await load_item(pt, pt.entries, vmf.pte_idx)
        await spf_walk_end(mm)
    ret = await memory.handle_pte_fault(vmf)
    if ret & VM_FAULT_RETRY and vmf.committed:
        raise ModelBug(f"aborted speculative fault at {address:#x} left a visible effect")
    return ret
