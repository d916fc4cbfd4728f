"""Page-fault handling (mm/memory.c), under Linux's names.

``handle_mm_fault`` walks (``pgtable.walk``, allocating the upper levels)
to the PMD and reads the PTE without the PTL; ``handle_pte_fault``
dispatches on the VMA, that original PTE and the access (a speculative
fault walks in spf.py, then enters here):

====================================  =====================================
PTE none, anonymous VMA               do_anonymous_page (zero page on read)
PTE none, file/shmem VMA, read        do_read_fault (with fault-around)
PTE none, private file VMA, write     do_cow_fault
PTE none, shared file VMA, write      do_shared_fault
PTE present read-only, write          do_wp_page (reuse, or wp_page_copy;
                                      wp_page_shared for shared mappings)
PTE present and allowed               spurious: mark young/dirty, done
PTE holds a swap entry                do_swap_page (a major fault if the
                                      folio must be read from the device)
====================================  =====================================

Locks.  Each handler states what it holds on entry and on return, as
Linux's do.  "The fault's lock" below is what keeps ``vmf.vma`` stable,
by protocol: mmap_lock held for read (classic), the VMA read-locked
(FAULT_FLAG_VMA_LOCK), or — FAULT_FLAG_SPECULATIVE, see spf.py — no lock at
all: ``vmf.vma`` is a private copy validated by a sequence snapshot, and
every commit goes through ``pte_map_lock``, which then checks the sequence
under the PTL.  Every handler returns with the fault's lock still held
(the caller drops it) and the PTL released.  Returns VM_FAULT_* bits; 0
is success.  The speculative path's helpers are in spf.py, which imports
this file (``Vmf``, ``handle_pte_fault``); this file never imports it: a
speculative entry hands the handlers its commit point in the vmf
(``vmf.spf_map_lock``, called by ``pte_map_lock``), and a handler that
cannot speculate aborts with ``fault_flags.spf_fail``.
"""

from __future__ import annotations

from typing import Any

from specfault.mm.anon import anon_vma_prepare, release_fault_lock, vmf_anon_prepare
from specfault.mm.fault_flags import (
    FAULT_FLAG_ALLOW_RETRY,
    FAULT_FLAG_SPECULATIVE,
    FAULT_FLAG_TRIED,
    FAULT_FLAG_WRITE,
    VM_FAULT_FALLBACK,
    VM_FAULT_MAJOR,
    VM_FAULT_NOPAGE,
    VM_FAULT_OOM,
    VM_FAULT_RETRY,
    VM_FAULT_SIGBUS,
    spf_fail,
)
from specfault.mm.filemap import FindGetPage, filemap_fault, i_size_read
from specfault.mm.huge_memory import (
    TVA_PAGEFAULT,
    do_huge_pmd_anonymous_page,
    do_huge_pmd_wp_page,
    huge_pmd_set_accessed,
    thp_vma_allowable_order,
)
from specfault.mm.mmu_gather import rss_kind
from specfault.mm.page import CopyPage, GetPage, Page, alloc_page, lru_add, put_page
from specfault.mm.pgtable import (
    PMD_LEVEL,
    __pte_alloc,
    is_readable_exclusive_migration_entry,
    is_swap_pte,
    is_writable_migration_entry,
    mk_pte,
    non_swap_entry,
    pmd_trans_huge,
    pte_mkdirty,
    pte_mksoft_dirty,
    pte_mkspecial,
    pte_mkwrite,
    pte_mkyoung,
    pte_none,
    pte_offset_map,
    pte_offset_map_lock,
    pte_pfn,
    pte_special,
    pte_swp_exclusive,
    pte_swp_soft_dirty,
    pte_to_swp_entry,
    pte_write,
    swp_offset_pfn,
    walk,
)
from specfault.mm.swap_state import (
    add_to_swap_cache,
    folio_free_swap,
    folio_lock,
    folio_trylock,
    folio_unlock,
    swap_cache_get_folio,
    swap_read_folio,
)
from specfault.mm.swapfile import swap_free, swapcache_prepare, vm_swap_full
from specfault.mm.tlb import flush_tlb_range
from specfault.mm.vma import (
    VM_DROPPABLE,
    VM_LOCKED,
    VM_SHARED,
    VM_WRITE,
    VmArea,
)
from specfault.runtime import Yield, load_item, store_item, work


class Vmf:
    """struct vm_fault: the state of one fault, passed to every helper.

    Fields — private to the faulting task (no lock guards the struct; the
    objects it points to are protected as the entry protocol says: mmap_lock,
    the VMA lock, or for a speculative fault nothing but the sequence check)
    # set at entry, then read-only
        vma       the VMA (speculative: the private copy ``pvma``)
        mm, address (page-aligned), flags (FAULT_FLAG_*), pgoff, pte_idx
        seq, orig_vma   speculative only: the sequence snapshot and the
                  VMA ``vma`` was copied from (spf.py)
        spf_map_lock    speculative only: the commit point pte_map_lock
                  calls (spf.spf_pte_map_lock, set by the entry)
    # set by the walk, before handle_pte_fault; read-only after
        pmd       the PMD-level table; pmd_idx its entry for ``address``
        orig_pmd  the PTE table that entry held (None: pmd_none; set by
                  vmf_pte_alloc) — pmd_same compares against it
        orig_pte  the PTE read without the PTL; re-checked under it
    # set with the PTL held (pte_map_lock .. pte_unmap_unlock)
        ptl       the PTL held, or None
        committed a PTE was changed: an abort now would be visible
    # the pages of a COW or file fault (references held by the fault)
        page, cow_page
    """

    __slots__ = ("vma", "mm", "address", "flags", "pgoff", "pmd", "pmd_idx", "orig_pmd",
                 "pte_idx", "orig_pte", "ptl", "page", "cow_page", "seq", "orig_vma",
                 "spf_map_lock", "committed")

    def __init__(self, vma: VmArea, address: int, flags: int) -> None:
        self.vma = vma
        self.mm = vma.vm_mm
        self.address = address = address & ~0xFFF
        self.flags = flags
        self.pgoff = ((address - vma.vm_start) >> 12) + vma.vm_pgoff
        self.pte_idx = (address >> 12) & 511
        self.pmd_idx = (address >> 21) & 511
        self.ptl: Any = None
        self.page: Page | None = None
        self.cow_page: Page | None = None
        self.committed = False
        # set by the walk: pmd, orig_pmd, orig_pte; by a speculative entry: seq, orig_vma


def vm_normal_page(mm: Any, pte: int) -> Page | None:
    """The struct page a present PTE maps, or None for the zero page."""
    if pte_special(pte):
        return None
    return mm.kernel.mem.pages[pte_pfn(pte)]  # type: ignore[no-any-return]


# --------------------------------------------------------------- page tables
async def vmf_pte_alloc(vmf: Vmf) -> int:
    """pte_alloc(mm, vmf->pmd) for a fault whose walk read the PMD entry
    none (``vmf.orig_pmd`` None — Linux's pte_alloc re-tests pmd_none, the
    walk's read is that test here): ``__pte_alloc`` installs a PTE table,
    or finds the one a racing fault installed first; ``vmf.orig_pmd`` is
    then that table.  Returns 0, or VM_FAULT_NOPAGE when a racing fault
    mapped a huge PMD there instead (pte_offset_map fails: the access
    retries).  Entered with the fault's lock (never speculative: SPF
    allocates no table), no PTL; takes and drops mm.page_table_lock."""
    assert vmf.pmd is not None
    pt = await __pte_alloc(vmf.mm, vmf.pmd, vmf.pmd_idx)
    if pmd_trans_huge(pt):
        return VM_FAULT_NOPAGE
    vmf.orig_pmd = pt
    return 0


async def pte_map_lock(vmf: Vmf) -> bool:
    """``ok = await pte_map_lock(vmf)``: lock the PTL of the faulting PTE's
    table, the commit point of every handler:

    1. not speculative: pte_offset_map_lock — the table the PMD holds now,
       its PTL taken and the PMD re-checked under it (a racing
       MADV_DONTNEED may have reclaimed the table the walk found, and a
       racing fault installed another); ``vmf.orig_pmd`` becomes that
       table — True; False when the PMD is none now (map_lock_failed);
    2. speculative: the entry's commit, ``vmf.spf_map_lock`` (spf.py's
       spf_pte_map_lock), which re-checks the sequence,
       pmd_same, trylocks the PTL and re-checks the sequence — False, the
       reason counted, when any of that fails: return VM_FAULT_RETRY.

    Entered with the fault's lock and no PTL; returns with the PTL held
    (``vmf.ptl``) when True, nothing more held when False.  The caller then
    re-reads the PTE (``ptep_get``) and compares it with ``orig_pte``."""
    if vmf.flags & FAULT_FLAG_SPECULATIVE:
        return bool(await vmf.spf_map_lock(vmf))
    assert vmf.pmd is not None
    pt = await pte_offset_map_lock(vmf.mm, vmf.pmd, vmf.address)
    if pt is None:
        return False
    vmf.orig_pmd = pt
    vmf.ptl = pt.ptl
    return True


def pte_unmap_unlock(vmf: Vmf) -> Any:
    """``await pte_unmap_unlock(vmf)``: release the PTL pte_map_lock took."""
    ptl = vmf.ptl
    vmf.ptl = None
    return ptl.unlock()


def ptep_get(vmf: Vmf) -> Any:
    """``await ptep_get(vmf)``: READ_ONCE of the faulting PTE (under the
    PTL, to re-check what the walk read without it)."""
    pt = vmf.orig_pmd
    assert pt is not None
    return load_item(pt, pt.entries, vmf.pte_idx)


def set_pte_at(vmf: Vmf, pte: int) -> Any:
    """``await set_pte_at(vmf, pte)``; caller holds the PTL (which also
    protects the table's entry count)."""
    pt = vmf.orig_pmd
    assert pt is not None
    vmf.committed = True
    old = pt.entries[vmf.pte_idx]
    if old == 0 and pte != 0:
        pt.nr += 1
    elif old != 0 and pte == 0:
        pt.nr -= 1
    return store_item(pt, pt.entries, vmf.pte_idx, pte)


# --------------------------------------------------------------------- entry
async def handle_mm_fault(vma: VmArea, address: int, flags: int) -> int:
    """Resolve a fault at ``address`` in ``vma`` (classic and VMA-lock
    protocols; a speculative fault enters at spf.spf_handle_mm_fault).

    We enter with mmap_lock held for read, or (FAULT_FLAG_VMA_LOCK) the
    VMA read-locked — either keeps ``vma`` from changing while concurrent
    faults run — and no page-table lock.  The caller has checked the
    access against vm_flags.  The walk allocates the missing upper levels
    (pud_alloc, pmd_alloc under page_table_lock); the PTE table is left to
    the handler that installs a PTE.  We return with what we entered with
    still held (mmap_lock or the VMA lock) and no PTL; VM_FAULT_* bits, 0
    on success.  (Linux's handlers drop the VMA lock before returning
    VM_FAULT_RETRY; the model's caller does.)  THP faults run here too,
    under either lock (Linux 6.18 handles them under the VMA lock)."""
    mm = vma.vm_mm
    mm.vmstat["pgfault"] += 1
    vmf = Vmf(vma, address, flags)
    vmf.pmd = pmd = await walk(mm, vmf.address, PMD_LEVEL, alloc=True)   # pud/pmd_alloc
    # pte_offset_map(): under rcu_read_lock — MADV_DONTNEED may reclaim the
    # table (mmap_lock for read, pt_reclaim.py); it is freed only after a
    # grace period, and pte_map_lock re-checks the PMD under the PTL
    rcu = mm.kernel.rcu
    await rcu.read_lock()
    pt = await pte_offset_map(pmd, vmf.address)             # pmdp_get_lockless()
    if pmd_trans_huge(pt) or (pt is None and thp_vma_allowable_order(vma, TVA_PAGEFAULT)):
        await rcu.read_unlock()
        ret = await __handle_huge_pmd(vmf, pt)
        if not ret & VM_FAULT_FALLBACK:
            return ret
        await rcu.read_lock()
        pt = await pte_offset_map(pmd, vmf.address)
        if pmd_trans_huge(pt):
            await rcu.read_unlock()
            return 0      # a racing fault mapped a THP since: the access retries
    vmf.orig_pmd = pt
    vmf.orig_pte = 0 if pt is None else await load_item(pt, pt.entries, vmf.pte_idx)
    await rcu.read_unlock()
    return await handle_pte_fault(vmf)


async def __handle_huge_pmd(vmf: Vmf, entry: Any) -> int:
    """__handle_mm_fault()'s PMD level (huge_memory.py): ``entry`` none in
    a VMA that may have a THP there (create_huge_pmd), or a huge PMD (a
    write to a read-only one: wp_huge_pmd; else huge_pmd_set_accessed).
    VM_FAULT_FALLBACK: go on at the PTE level.  Locks as handle_mm_fault
    (the fault's lock held throughout, no PTL or PMD lock on return)."""
    if entry is None:
        return await do_huge_pmd_anonymous_page(vmf)
    vmf.orig_pmd = entry
    if vmf.flags & FAULT_FLAG_WRITE and not pte_write(entry):
        return await do_huge_pmd_wp_page(vmf)
    return await huge_pmd_set_accessed(vmf)


async def handle_pte_fault(vmf: Vmf) -> int:
    """Dispatch on the PTE read by the walk (``vmf.orig_pte``), as the
    table at the top of this file says.

    We enter with the fault's lock held (mmap_lock read, the VMA lock, or
    speculatively none) and the PTE read but neither mapped nor locked.  We
    return with the fault's lock still held and the PTL released (the
    handlers below take and drop it themselves)."""
    vma = vmf.vma
    if pte_none(vmf.orig_pte):
        if vma.vm_file is None:
            return await do_anonymous_page(vmf)
        if vmf.flags & FAULT_FLAG_SPECULATIVE:
            return spf_fail(vmf, "SPF_ABORT_NO_SPECULATE")
        return await do_fault(vmf)
    if is_swap_pte(vmf.orig_pte):
        return await do_swap_page(vmf)
    if vmf.flags & FAULT_FLAG_SPECULATIVE:
        vmf.mm.kernel.count("SPF_ATTEMPT_PTE")
    if await pte_map_lock(vmf) is False:
        return map_lock_failed(vmf)
    entry = await ptep_get(vmf)
    # knob wp_no_pte_same_recheck (a mutant): a write to a write-protected
    # PTE goes to do_wp_page on the PTE read without the PTL — not
    # re-checked, so do_wp_page reuses or copies a page that a racing COW
    # or zap may have replaced meanwhile
    unchecked = vmf.flags & FAULT_FLAG_WRITE and not pte_write(vmf.orig_pte) and \
        vmf.mm.config.knob("wp_no_pte_same_recheck")
    if entry != vmf.orig_pte and not unchecked:
        await pte_unmap_unlock(vmf)
        return 0
    if vmf.flags & FAULT_FLAG_WRITE:
        if unchecked or not pte_write(entry):
            return await do_wp_page(vmf)        # returns with the PTL released
        entry = pte_mkdirty(entry)
    entry = pte_mkyoung(entry)
    if entry != vmf.orig_pte:
        await set_pte_at(vmf, entry)            # ptep_set_access_flags()
    await pte_unmap_unlock(vmf)
    return 0


def map_lock_failed(vmf: Vmf) -> int:
    """What a handler returns when pte_map_lock failed: VM_FAULT_RETRY for
    a speculative fault (aborted, the reason counted: redo it under a
    lock); 0 for the others — their PTE table was reclaimed
    (pt_reclaim.py: pte_offset_map_lock found the PMD none), and as in
    Linux ("if (!vmf->pte) goto release") the access simply faults again."""
    return VM_FAULT_RETRY if vmf.flags & FAULT_FLAG_SPECULATIVE else 0


# ------------------------------------------------------------ anonymous pages
async def do_anonymous_page(vmf: Vmf) -> int:
    """First touch of an anonymous page (the seed's flow):

    1. read fault: use the zero page; write fault: allocate a data page;
    2. lock the page table;
    3. verify the PTE is still none (a concurrent fault may have won);
    4. set the PTE to the new page;
    5. unlock the page table.

    We enter with the fault's lock held (mmap_lock read, the VMA lock, or
    speculatively none) and the PTE neither mapped nor locked (pte_none
    read by the walk; ``orig_pmd`` None when there is no PTE table yet —
    vmf_pte_alloc then, never speculatively).  We return with the fault's
    lock still held and the PTE unmapped and unlocked.
    """
    vma, mm, flags = vmf.vma, vmf.mm, vmf.flags
    spec = flags & FAULT_FLAG_SPECULATIVE
    if spec:
        mm.kernel.count("SPF_ATTEMPT_ANON")
    vm_flags = vma.vm_flags
    if vm_flags & VM_SHARED:
        return VM_FAULT_SIGBUS
    if vmf.orig_pmd is None and (ret := await vmf_pte_alloc(vmf)):
        return ret
    # knob no_pte_none_recheck: install without re-checking under the PTL
    # that no racing fault installed a page first
    recheck = not mm.no_pte_none_recheck
    if not flags & FAULT_FLAG_WRITE:
        zero = mm.kernel.mem.zero_page
        entry = pte_mkspecial(mk_pte(zero.pfn, vma.vm_page_prot))
        if await pte_map_lock(vmf) is False:
            return map_lock_failed(vmf)
        if recheck and not pte_none(await ptep_get(vmf)):
            await pte_unmap_unlock(vmf)
            return 0
        await set_pte_at(vmf, entry)
        await pte_unmap_unlock(vmf)
        mm.kernel.count("zero_page_fault")
        return 0
    mm.kernel.count("anon_fault")
    if vma.anon_vma is None:
        if spec:
            return spf_fail(vmf, "SPF_ABORT_ANON_VMA")
        fault = await vmf_anon_prepare(vmf)
        if fault:
            return fault
    mem = mm.kernel.mem
    page = await alloc_page(mem)
    if page is None:
        mm.kernel.count("oom")
        return VM_FAULT_OOM
    await work("clear_page")
    entry = pte_mkdirty(mk_pte(page.pfn, vma.vm_page_prot))
    if vm_flags & VM_WRITE:
        entry = pte_mkwrite(entry)
    if await pte_map_lock(vmf) is False:
        await put_page(mem, page)
        return map_lock_failed(vmf)
    if recheck and not pte_none(await ptep_get(vmf)):
        await pte_unmap_unlock(vmf)
        await put_page(mem, page)
        return 0
    if not recheck and not pte_none(await ptep_get(vmf)):
        _lost_race_overwrite(vmf)
    page_add_new_anon_rmap(page, vma, vmf.address)
    mm.rss["anon"] += 1
    await set_pte_at(vmf, entry)
    await pte_unmap_unlock(vmf)
    return 0


def page_add_new_anon_rmap(page: Page, vma: VmArea, address: int) -> None:
    """folio_add_new_anon_rmap() + folio_add_lru_vma(): a new, exclusive
    anonymous page, indexed for the reverse map (its anon_vma, its linear
    page index) and put on the inactive anon LRU.  A MAP_DROPPABLE
    mapping's pages are not swap-backed (Linux 6.11+): reclaim drops them."""
    page.anon = True
    page.mapping = vma.anon_vma
    page.index = vma.linear_page_index(address)
    page.mapcount = 1
    page.anon_exclusive = True
    if vma.vm_flags & VM_DROPPABLE:
        page.lazyfree = True
    lru_add(vma.vm_mm.kernel.mem, page)


# ------------------------------------------------------------------- swap-in
async def do_swap_page(vmf: Vmf) -> int:
    """The PTE holds a swap entry: bring the page back (mm/memory.c).

    1. speculative: knob ``spf_swap`` — "abort" (Lespinasse: SPF_ABORT_SWAP,
       the fault is redone under a lock), "cache" (Dufour: a swap-cache hit
       is handled speculatively, a miss aborts — no I/O, no readahead
       while speculating);
    2. look the entry up in the swap cache, taking a reference;
    3. a miss: allocate a folio, claim the slot (swapcache_prepare: another
       swap-in of the same entry holds it → back off and refault; the slot
       was freed by a racing zap → refault), lock the folio, add it to the
       swap cache and the LRU, read the slot (slow I/O: VM_FAULT_MAJOR,
       pgmajfault) — with FAULT_FLAG_ALLOW_RETRY on a first attempt the
       fault's lock is dropped for the read and VM_FAULT_RETRY returned
       (the retry, FAULT_FLAG_TRIED, finds the folio in the swap cache); a
       hit: lock the folio (folio_lock_or_retry: a folio locked by a read
       in progress or by reclaim is waited for without the fault's lock,
       and the fault retried) and re-check it is still this entry's
       swap-cache folio (reclaim may have removed it meanwhile) — else
       refault;
    4. lock the PTL and re-check that the PTE still holds the entry
       (pte_same — a racing munmap, swap-in or fork changed it: drop
       everything and refault).  Mutant ``no_pte_same_after_swapin`` skips
       this: the folio is mapped over whatever is there now;
    5. map it: the PTE's reference to the slot goes (swap_free); the slot
       itself too when freeing it is worth it (should_try_to_free_swap: a
       write fault holding the only other reference, or swap half full);
       the page is exclusive if the swap PTE said so (it was
       PageAnonExclusive when unmapped) or nobody else holds it; a write
       fault on an exclusive page maps it writable and dirty;
    6. unlock the folio; a write fault on a page that is not exclusive
       goes on into do_wp_page with the PTL held (COW);
    7. unlock the PTL, drop the reference of 2/3.

    We enter with the fault's lock (mmap_lock read, the VMA lock, or
    speculatively none) and no PTL; we return with the fault's lock still
    held and the PTL released — except VM_FAULT_RETRY from 3, returned
    with the fault's lock released (release_fault_lock).  The folio lock
    is taken and released here (a sleeping lock: never under the PTL)."""
    vma, mm = vmf.vma, vmf.mm
    kernel = mm.kernel
    mem = kernel.mem
    orig_pte: int = vmf.orig_pte  # type: ignore[attr-defined]  # set by the walk
    entry = pte_to_swp_entry(orig_pte)
    spec = vmf.flags & FAULT_FLAG_SPECULATIVE
    if non_swap_entry(entry):
        return await do_migration_entry(vmf, entry)
    if spec and mm.config.knob("spf_swap") == "abort":
        return spf_fail(vmf, "SPF_ABORT_SWAP")
    ret = 0
    folio = await swap_cache_get_folio(kernel, entry)      # with a reference
    if folio is not None:
        retry = await folio_lock_or_retry(folio, vmf)
        if retry:
            await put_page(mem, folio)
            return retry
        if not folio.swapcache or folio.swap != entry:
            await folio_unlock(folio)                       # reclaim freed its slot
            await put_page(mem, folio)
            return spf_fail(vmf, "SPF_ABORT_SWAP") if spec else 0
    else:
        if spec:
            return spf_fail(vmf, "SPF_ABORT_SWAP")          # I/O: not speculatively
        folio = await alloc_page(mem)
        if folio is None:
            kernel.count("oom")
            return VM_FAULT_OOM
        err = swapcache_prepare(kernel, entry)
        if err:
            # another swap-in owns the slot's cache bit (its folio is on
            # the way into the cache: let it run — Linux sleeps a tick,
            # schedule_timeout_uninterruptible(1)), or the entry was freed:
            # refault
            await put_page(mem, folio)
            await Yield()
            return 0
        folio.anon = True                                    # __folio_set_swapbacked
        await folio_lock(folio)
        add_to_swap_cache(kernel, folio, entry)
        lru_add(mem, folio)
        kernel.count("pgmajfault")
        ret = VM_FAULT_MAJOR
        if fault_flag_allow_retry_first(vmf.flags):
            # the read is in flight with the folio locked: folio_lock_or_retry
            # finds it locked, drops the fault's lock for the I/O and asks
            # for a retry, which finds the folio in the swap cache
            await release_fault_lock(vmf)
            await swap_read_folio(kernel, folio, entry)
            await folio_unlock(folio)                        # the I/O's completion
            await put_page(mem, folio)
            kernel.count("fault_retry")
            return ret | VM_FAULT_RETRY
        await swap_read_folio(kernel, folio, entry)
    # 4. the PTE must still hold the entry
    if await pte_map_lock(vmf) is False:
        await folio_unlock(folio)
        await put_page(mem, folio)
        return map_lock_failed(vmf)
    if not mm.config.knob("no_pte_same_after_swapin") and await ptep_get(vmf) != orig_pte:
        await pte_unmap_unlock(vmf)
        await _swapin_drop(kernel, folio, entry)
        return ret
    # 5. map it
    write = bool(vmf.flags & FAULT_FLAG_WRITE)
    exclusive = pte_swp_exclusive(orig_pte)
    swap_free(kernel, entry)
    mm.rss["swap"] -= 1
    if folio.swapcache and (vm_swap_full(kernel) or vma.vm_flags & VM_LOCKED
                            or (write and folio.refcount == 2)):
        await folio_free_swap(kernel, folio)                 # should_try_to_free_swap
    if not exclusive and folio.mapcount == 0 and folio.refcount == 1:
        exclusive = True        # out of the swap cache and unmapped: only ours
    entry_pte = mk_pte(folio.pfn, vma.vm_page_prot)
    if pte_swp_soft_dirty(orig_pte):
        entry_pte = pte_mksoft_dirty(entry_pte)
    if exclusive and vma.vm_flags & VM_WRITE:
        # an exclusive page is mapped writable even on a read fault (a
        # later store needs no fault); a write fault also makes it dirty
        entry_pte = pte_mkwrite(entry_pte)
        if write:
            entry_pte = pte_mkdirty(entry_pte)
            write = False                                     # nothing left for do_wp_page
            folio.dirty = True
    if folio.mapping is None:
        # __folio_set_anon(): a folio that may be shared must be found from
        # every mapping: the oldest anon_vma (the root) when not exclusive
        av = vma.anon_vma
        assert av is not None, "do_swap_page: a swap PTE in a VMA without anon_vma"
        folio.mapping = av if exclusive else av.root
        folio.index = vma.linear_page_index(vmf.address)
    folio.mapcount += 1
    folio.refcount += 1                                      # the mapping's reference
    if exclusive:
        folio.anon_exclusive = True
    mm.rss["anon"] += 1
    await set_pte_at(vmf, entry_pte)
    await folio_unlock(folio)
    await put_page(mem, folio)                               # the lookup's reference
    if write:
        vmf.orig_pte = entry_pte  # type: ignore[attr-defined]
        return ret | await do_wp_page(vmf)                   # releases the PTL
    await pte_unmap_unlock(vmf)
    return ret


def fault_flag_allow_retry_first(flags: int) -> bool:
    """fault_flag_allow_retry_first(): may this fault drop its lock and
    ask to be retried (the first attempt, retries allowed)?"""
    return bool(flags & FAULT_FLAG_ALLOW_RETRY) and not flags & FAULT_FLAG_TRIED


async def do_migration_entry(vmf: Vmf, entry: int) -> int:
    """do_swap_page()'s non_swap_entry branch for a migration entry (the
    model's only non-swap entry; mm/migrate.py):

    1. speculative (either SPF): abort, SPF_ABORT_SWAP — waiting maps the
       PTE table under its PTL, and nothing but a lock on the VMA keeps
       that table (Lespinasse's v2 aborts on every swap PTE; the model
       holds Dufour's to the same here);
    2. migration_entry_wait(): under the PTL, if the PTE still holds the
       entry, sleep until the folio it names is unlocked — the fault's
       lock (mmap_lock for read, or the VMA lock) held throughout;
    3. return 0: the access faults again and finds what the migration
       left (the new page mapped, or the old one restored).

    Two mutants map the page the entry names (the source) instead of
    waiting: knob migration_entry_no_wait, under the PTL after re-checking
    the PTE (pte_same) — the migration goes on and succeeds, and the
    source, isolated from the LRU and "freed" by the migrator, stays
    mapped off every LRU while the copy is dropped; knob
    migration_map_no_pte_same, without the re-check — a migration that
    finished meanwhile mapped the copy there and freed the source.

    Entered and left with the fault's lock and no PTL."""
    from specfault.mm.migrate import migration_entry_wait
    mm = vmf.mm
    if vmf.flags & FAULT_FLAG_SPECULATIVE:
        return spf_fail(vmf, "SPF_ABORT_SWAP")
    if mm.config.knob("migration_entry_no_wait"):
        return await _map_migration_page(vmf, entry, recheck=True)
    if mm.config.knob("migration_map_no_pte_same"):
        return await _map_migration_page(vmf, entry, recheck=False)
    assert vmf.pmd is not None
    await migration_entry_wait(mm, vmf.pmd, vmf.address)
    return 0


async def _map_migration_page(vmf: Vmf, entry: int, recheck: bool) -> int:
    """The migration_entry_no_wait / migration_map_no_pte_same mutants: map
    the folio a migration entry names (pfn_swap_entry_to_page) as the
    entry says (writable, exclusive), under the PTL — re-checking the PTE
    there first if ``recheck``."""
    mm, vma = vmf.mm, vmf.vma
    page = mm.kernel.mem.pages.get(swp_offset_pfn(entry))
    if page is None:
        return 0
    if await pte_map_lock(vmf) is False:
        return map_lock_failed(vmf)
    if recheck and await ptep_get(vmf) != vmf.orig_pte:
        await pte_unmap_unlock(vmf)
        return 0
    await GetPage(page)
    pte = mk_pte(page.pfn, vma.vm_page_prot)
    if is_writable_migration_entry(entry):
        pte = pte_mkwrite(pte_mkdirty(pte))
    page.mapcount += 1
    page.anon_exclusive = is_writable_migration_entry(entry) or \
        is_readable_exclusive_migration_entry(entry)
    await set_pte_at(vmf, pte)
    await pte_unmap_unlock(vmf)
    return 0


async def folio_lock_or_retry(folio: Page, vmf: Vmf) -> int:
    """folio_lock_or_retry(): lock the folio, or — when it is locked (I/O
    in progress, reclaim) and the fault may be retried — drop the fault's
    lock, wait for the folio to be unlocked (folio_wait_locked) and return
    VM_FAULT_RETRY: the fault is retried with FAULT_FLAG_TRIED, and nobody
    waits for I/O holding mmap_lock or a VMA lock.  Returns 0 with the
    folio locked, or VM_FAULT_RETRY with nothing held (the folio's
    reference is the caller's to drop).  Speculative: never sleeps — a
    locked folio aborts the attempt (VM_FAULT_RETRY, the fault's nothing
    still held)."""
    if await folio_trylock(folio):
        return 0
    if vmf.flags & FAULT_FLAG_SPECULATIVE:
        return spf_fail(vmf, "SPF_ABORT_SWAP")
    if fault_flag_allow_retry_first(vmf.flags):
        await release_fault_lock(vmf)
        await folio_lock(folio)                 # folio_wait_locked()
        await folio_unlock(folio)
        vmf.mm.kernel.count("fault_retry")
        return VM_FAULT_RETRY
    await folio_lock(folio)
    return 0


async def _swapin_drop(kernel: Any, folio: Page, entry: int) -> None:
    """The swap-in lost its race (the PTE changed under it): unlock and
    drop the folio.  A folio no swap PTE refers to any more leaves the swap
    cache now (free_swap_and_cache could not take it while we held it
    locked); Linux leaves it for reclaim to find."""
    from specfault.mm.swapfile import swap_count
    if folio.swapcache and folio.swap == entry and not folio.mapcount \
            and not swap_count(kernel, entry):
        await folio_free_swap(kernel, folio)
    await folio_unlock(folio)
    await put_page(kernel.mem, folio)


# --------------------------------------------------------------- write-protect
async def do_wp_page(vmf: Vmf) -> int:
    """Write to a present, write-protected PTE: reuse the page if this mm
    holds it exclusively, else copy it (wp_page_copy), or for a shared
    mapping make it writable (wp_page_shared).  We enter with the fault's
    lock held and the PTL held (taken by handle_pte_fault, the PTE
    re-checked equal to ``orig_pte``); we return with the fault's lock still
    held and the PTL released."""
    vma, mm = vmf.vma, vmf.mm
    if vmf.flags & FAULT_FLAG_SPECULATIVE:
        mm.kernel.count("SPF_ATTEMPT_WP")
    page = vm_normal_page(mm, vmf.orig_pte)
    if vma.vm_flags & VM_SHARED:
        return await wp_page_shared(vmf, page)
    if page is not None and page.anon:
        # wp_can_reuse_anon_folio(): exclusive, or we hold the only reference
        # — after dropping the swap cache's, if the slot is no longer used
        if not page.anon_exclusive and page.swapcache and page.refcount == 2 \
                and await folio_trylock(page):
            await folio_free_swap(vmf.mm.kernel, page)
            await folio_unlock(page)
        if page.anon_exclusive or page.refcount == 1:
            page.anon_exclusive = True
            page.mapping = vma.anon_vma
            entry = pte_mkyoung(pte_mkdirty(vmf.orig_pte))
            if vma.vm_flags & VM_WRITE:
                entry = pte_mkwrite(entry)
            await set_pte_at(vmf, entry)        # wp_page_reuse()
            await pte_unmap_unlock(vmf)
            mm.kernel.count("pgreuse")
            return 0
    # knob no_page_ref_in_wp_copy: copy from the old page without holding a
    # reference — a racing unmap may free it while we copy
    if page is not None and not mm.config.knob("no_page_ref_in_wp_copy"):
        await GetPage(page)
        vmf.cow_page = page          # the reference to drop when done
    await pte_unmap_unlock(vmf)
    vmf.page = page
    mm.kernel.count("cow_fault")
    return await wp_page_copy(vmf)


async def wp_page_copy(vmf: Vmf) -> int:
    """Break COW by copying (the seed's flow):

    1. (do_wp_page) lock the PTL, verify the PTE is unchanged, see that we
       must copy, take a reference on the old page, unlock;
    2. allocate a new page (zeroed if the old one is the zero page);
    3. copy the old page into it;
    4. lock the PTL again and verify the PTE is still unchanged;
    5. if so, point the PTE at the new page (clear + flush first, so no CPU
       keeps the old translation), drop the old page's mapping;
    6. unlock; drop the reference taken in 1 (and the unused new page if
       the PTE changed under us).

    We enter (from do_wp_page) with the fault's lock held and the PTL
    released, holding a reference on the old page (``vmf.cow_page``).  We
    return with the fault's lock still held, the PTL released and that
    reference dropped — on every path, aborts included.
    """
    vma, mm = vmf.vma, vmf.mm
    mem = mm.kernel.mem
    old = vmf.page
    # knob wp_copy_no_anon_vma_prepare (a mutant): "a page is mapped, so the
    # VMA has an anon_vma" — not when it is the zero page a read fault
    # mapped: the copy is installed with no anon_vma (the rmap cannot find
    # it, and fork will not copy the VMA's pages)
    if vma.anon_vma is None and not mm.config.knob("wp_copy_no_anon_vma_prepare"):
        if vmf.flags & FAULT_FLAG_SPECULATIVE:
            return await _wp_copy_fail(vmf, spf_fail(vmf, "SPF_ABORT_ANON_VMA"))
        fault = await vmf_anon_prepare(vmf)
        if fault:
            return await _wp_copy_fail(vmf, fault)
    new = await alloc_page(mem)
    if new is None:
        mm.kernel.count("oom")
        return await _wp_copy_fail(vmf, VM_FAULT_OOM)
    if old is None:
        await work("clear_page")
    else:
        await CopyPage(new, old)
    if await pte_map_lock(vmf) is False:
        await put_page(mem, new)
        return await _wp_copy_fail(vmf, map_lock_failed(vmf))
    # knob no_pte_same_recheck_wp: replace the PTE without checking that
    # it still maps the page we copied
    if mm.config.knob("no_pte_same_recheck_wp") or await ptep_get(vmf) == vmf.orig_pte:
        entry = pte_mkdirty(mk_pte(new.pfn, vma.vm_page_prot))
        if vma.vm_flags & VM_WRITE:
            entry = pte_mkwrite(entry)
        await set_pte_at(vmf, 0)                 # ptep_clear_flush()
        # knob wp_copy_no_flush (a mutant): "the old PTE was read-only, no
        # CPU can write through it" — but other CPUs keep *reading* the old
        # page through their entries, and miss every store to the copy
        if not mm.config.knob("wp_copy_no_flush"):
            await flush_tlb_range(mm, vmf.address, vmf.address + 4096)
        page_add_new_anon_rmap(new, vma, vmf.address)
        mm.rss["anon"] += 1
        await set_pte_at(vmf, entry)
        if old is not None:
            mm.rss[rss_kind(old)] -= 1
            old.mapcount -= 1
            if old.mapcount == 0:
                old.anon_exclusive = False
            unused: Page | None = old            # drop the old mapping's reference
        else:
            unused = None
    else:
        unused = new
    await pte_unmap_unlock(vmf)
    if unused is not None:
        await put_page(mem, unused)
    if vmf.cow_page is not None:
        await put_page(mem, vmf.cow_page)       # the reference do_wp_page took
    return 0


async def _wp_copy_fail(vmf: Vmf, ret: int) -> int:
    if vmf.cow_page is not None:
        await put_page(vmf.mm.kernel.mem, vmf.cow_page)
    return ret


def _lost_race_overwrite(vmf: Vmf) -> None:
    """The no_pte_none_recheck mutant overwrites a PTE a racing fault set:
    the page it mapped keeps its mapcount and reference — leaked."""
    vmf.mm.kernel.count("pte_overwritten")


async def wp_page_shared(vmf: Vmf, page: Page | None) -> int:
    """Write to a shared mapping's write-protected page: page_mkwrite, then
    make the PTE writable and dirty (wp_page_shared + finish_mkwrite_fault).
    Entered with the fault's lock and the PTL held; drops the PTL for
    page_mkwrite (which may sleep), retakes it and re-checks the PTE;
    returns with the fault's lock still held and the PTL released."""
    vmf.mm.kernel.count("wp_shared_fault")
    await pte_unmap_unlock(vmf)
    await work("page_mkwrite")
    if await pte_map_lock(vmf) is False:
        return map_lock_failed(vmf)
    if await ptep_get(vmf) != vmf.orig_pte:
        await pte_unmap_unlock(vmf)
        return 0
    await set_pte_at(vmf, pte_mkyoung(pte_mkwrite(pte_mkdirty(vmf.orig_pte))))
    if page is not None:
        page.dirty = True
    await pte_unmap_unlock(vmf)
    return 0


# ----------------------------------------------------------------- file pages
async def do_fault(vmf: Vmf) -> int:
    """A file (or shmem) page is not mapped: read, private write (COW) or
    shared write.  Entered with the fault's lock (never speculative:
    handle_pte_fault aborts those first), PTE none and not locked; returns
    with the fault's lock held and the PTL released."""
    vma = vmf.vma
    if not vmf.flags & FAULT_FLAG_WRITE:
        return await do_read_fault(vmf)
    if not vma.vm_flags & VM_SHARED:
        return await do_cow_fault(vmf)
    return await do_shared_fault(vmf)


async def do_read_fault(vmf: Vmf) -> int:
    """Read fault on a file page: map what is cached around it first
    (fault-around), then fault in the page itself if still needed.  Locks
    as do_fault: the fault's lock held throughout, no PTL on entry or on
    return."""
    mm = vmf.mm
    mm.kernel.count("file_read_fault")
    if mm.config.fault_around_bytes >> 12 > 1:
        ret = await do_fault_around(vmf)
        if ret:
            return ret
    ret, page = await filemap_fault(mm.kernel, vmf.vma.vm_file.inode, vmf.pgoff)
    if page is None:
        return ret
    ret |= await finish_fault(vmf, page)        # mapped under the folio lock
    await folio_unlock(page)
    return ret


async def do_cow_fault(vmf: Vmf) -> int:
    """Write fault on a private file mapping: copy the file page into a new
    anonymous page and map the copy — holding the file page's folio lock
    until the copy is mapped, so a truncation that removes the page (and
    waits for that lock) finds the copy mapped and its second
    unmap_mapping_range(even_cows) removes it (truncate.py, step 4).
    Locks as do_fault (anon_vma_prepare takes page_table_lock; filemap_fault
    the folio lock, held to the end; finish_fault the PTL)."""
    vma, mm = vmf.vma, vmf.mm
    mem = mm.kernel.mem
    mm.kernel.count("file_cow_fault")
    if not await anon_vma_prepare(vma):
        return VM_FAULT_OOM
    cow = await alloc_page(mem)
    if cow is None:
        mm.kernel.count("oom")
        return VM_FAULT_OOM
    ret, page = await filemap_fault(mm.kernel, vma.vm_file.inode, vmf.pgoff)
    if page is None:
        await put_page(mem, cow)
        return ret
    await CopyPage(cow, page)
    cow.anon = True          # __do_fault + copy: finish_fault maps it as anon
    ret |= await finish_fault(vmf, cow)
    await folio_unlock(page)
    await put_page(mem, page)
    return ret


async def do_shared_fault(vmf: Vmf) -> int:
    """Write fault on a shared file mapping: the page-cache page, made
    writable and dirty (page_mkwrite, then finish_fault), mapped under its
    folio lock (do_page_mkwrite returns it locked, after re-checking
    ``folio->mapping``: the page is still the file's here, as the lock
    was held since filemap_fault checked).  Locks as do_fault."""
    mm = vmf.mm
    mm.kernel.count("file_shared_fault")
    ret, page = await filemap_fault(mm.kernel, vmf.vma.vm_file.inode, vmf.pgoff)
    if page is None:
        return ret
    await work("page_mkwrite")
    ret |= await finish_fault(vmf, page)
    if page.mapcount:
        page.dirty = True                       # fault_dirty_shared_page()
    await folio_unlock(page)
    return ret


async def finish_fault(vmf: Vmf, page: Page) -> int:
    """Map ``page`` (whose reference we hold) at the faulting address unless
    a racing fault already filled the PTE (VM_FAULT_NOPAGE; the reference
    is dropped).  We enter with the fault's lock held and no PTL (the PTE
    table allocated here if missing: vmf_pte_alloc); we return with the
    fault's lock still held and the PTE unmapped and unlocked."""
    vma, mm = vmf.vma, vmf.mm
    mem = mm.kernel.mem
    if vmf.orig_pmd is None and (ret := await vmf_pte_alloc(vmf)):
        await put_page(mem, page)
        return ret
    if await pte_map_lock(vmf) is False:
        await put_page(mem, page)
        return map_lock_failed(vmf)
    if not pte_none(await ptep_get(vmf)):
        await pte_unmap_unlock(vmf)
        await put_page(mem, page)
        return VM_FAULT_NOPAGE
    write = bool(vmf.flags & FAULT_FLAG_WRITE)
    entry = mk_pte(page.pfn, vma.vm_page_prot)
    if write:
        entry = pte_mkdirty(entry)
        if vma.vm_flags & VM_WRITE:
            entry = pte_mkwrite(entry)
    if page.anon:
        page_add_new_anon_rmap(page, vma, vmf.address)
    else:
        page.mapcount += 1
    mm.rss[rss_kind(page)] += 1
    await set_pte_at(vmf, entry)
    await pte_unmap_unlock(vmf)
    return 0


async def do_fault_around(vmf: Vmf) -> int:
    """Map the cached pages in the fault_around_bytes-aligned window around
    the fault (clamped to the VMA, the PTE table and EOF) with read-only
    PTEs — filemap_map_pages(), each page under its folio lock (trylock:
    a locked page is skipped) after re-checking it is still the file's
    and within i_size.  Returns VM_FAULT_NOPAGE if the faulting
    page itself got mapped.  Entered and left with the fault's lock held
    and no PTL; takes the PTE table's PTL once for the whole window."""
    vma, mm = vmf.vma, vmf.mm
    inode = vma.vm_file.inode
    nr_pages = mm.config.fault_around_bytes >> 12
    pte_off = vmf.pte_idx
    vma_off = vmf.pgoff - vma.vm_pgoff
    from_pte = max(pte_off & ~(nr_pages - 1), pte_off - min(pte_off, vma_off))
    to_pte = min(from_pte + nr_pages, 512, pte_off + vma.pages() - vma_off) - 1
    start_pgoff = vmf.pgoff - (pte_off - from_pte)
    end_pgoff = min(start_pgoff + (to_pte - from_pte), inode.nr_pages() - 1)
    if end_pgoff < start_pgoff or not any(
            i in inode.pages for i in range(start_pgoff, end_pgoff + 1)):
        return 0
    if vmf.orig_pmd is None and (ret := await vmf_pte_alloc(vmf)):
        return ret
    if await pte_map_lock(vmf) is False:
        return map_lock_failed(vmf)
    pt = vmf.orig_pmd
    assert pt is not None
    ret = 0
    mapped = 0
    mem = mm.kernel.mem
    for pgoff in range(start_pgoff, end_pgoff + 1):
        if pgoff not in inode.pages:
            continue
        idx = from_pte + (pgoff - start_pgoff)
        if not pte_none(await load_item(pt, pt.entries, idx)):
            continue
        # next_uptodate_folio(): the page with a reference (the mapping's,
        # if it is mapped); skipped if locked by someone (truncation), no
        # longer the file's, or beyond i_size (read now: a truncation
        # writes it before it locks the pages)
        page = await FindGetPage(inode, pgoff)
        if page is None:
            continue
        if not await folio_trylock(page):
            await put_page(mem, page)
            continue
        if page.mapping is not inode or pgoff >= (await i_size_read(inode) + 4095) >> 12:
            await folio_unlock(page)
            await put_page(mem, page)
            continue
        page.mapcount += 1
        mm.rss[rss_kind(page)] += 1
        pt.nr += 1
        await store_item(pt, pt.entries, idx, mk_pte(page.pfn, vma.vm_page_prot))
        await folio_unlock(page)
        mapped += 1
        if idx == vmf.pte_idx:
            ret = VM_FAULT_NOPAGE
    await pte_unmap_unlock(vmf)
    if mapped:
        mm.kernel.count("fault_around")
    return ret
