"""Anonymous transparent huge pages (mm/huge_memory.c), under Linux's names.

A huge PMD is an ``int`` in a PMD table's slot (pgtable.pmd_trans_huge):
a PTE-like value with _PAGE_PSE and the PFN of the head of a 2 MiB folio
(512 frames, contiguous and 512-aligned: page.AllocHugePage), or of the
huge zero folio (512 reserved zero frames: PhysMem.get_huge_zero_page;
_PAGE_SPECIAL set, as on the zero page's PTEs).  It is set, changed and
split under the PMD table's ``ptl`` (Linux's pmd_lock, the split PMD
ptlock), by a task that also holds what keeps the PMD table alive
(mmap_lock, or the VMA lock of a fault).

Where a huge PMD comes from and where it goes:

==============================  ==========================================
fault, pmd_none, THP allowed    do_huge_pmd_anonymous_page: the huge zero
                                page (read, use_zero_page) or a new THP
                                (thp_fault_alloc; no 512 aligned free
                                frames: thp_fault_fallback, PTEs instead)
write to a read-only huge PMD   do_huge_pmd_wp_page: a new THP for the
                                huge zero page (do_huge_zero_wp_pmd);
                                reuse when exclusive; else split + PTEs
zap (munmap, DONTNEED, exit)    zap_huge_pmd when the range covers it
                                whole; __split_huge_pmd when not
mprotect                        change_huge_pmd whole; split partial
mremap                          move_huge_pmd (whole, aligned); split else
fork                            copy_huge_pmd: both PMDs write-protected,
                                the folio shared
a VMA boundary inside 2 MiB     vma_adjust_trans_huge: split
khugepaged, MADV_COLLAPSE       khugepaged.py: a PTE table becomes a THP
==============================  ==========================================

Page accounting.  Each of a THP's 512 pages carries its own refcount and
mapcount — one per PMD or PTE that maps it — where Linux keeps one folio
refcount, an entire mapcount and per-page mapcounts: every existing rule
(rmap, RSS, check_mm's counts) then holds page by page.  The head's
``entire_mapcount`` counts the PMDs mapping the folio; when it drops to 0
(its last PMD split or zapped) the folio is split into 512 order-0 pages
at once (Linux defers that split: deferred_split_folio).  A PMD-mapped THP
is not on the LRU (reclaim never sees it); its pages join the LRU when the
folio is split.
"""

from __future__ import annotations

from typing import Any

from specfault.mm.anon import vmf_anon_prepare
from specfault.mm.fault_flags import (
    FAULT_FLAG_SPECULATIVE,
    FAULT_FLAG_WRITE,
    VM_FAULT_FALLBACK,
)
from specfault.mm.page import AllocHugePage, Page, folio_page, lru_add, put_page
from specfault.mm.pgtable import (
    _PAGE_ACCESSED,
    _PAGE_DIRTY,
    _PAGE_PRESENT,
    _PAGE_PSE,
    _PAGE_SOFT_DIRTY,
    HPAGE_PMD_MASK,
    HPAGE_PMD_NR,
    HPAGE_PMD_SIZE,
    PageTable,
    mk_huge_pmd,
    mk_pte,
    pmd_trans_huge,
    pte_mkspecial,
    pte_modify,
    pte_pfn,
    pte_special,
    pte_write,
)
from specfault.mm.tlb import flush_tlb_range
from specfault.mm.vma import VM_DROPPABLE, VM_HUGEPAGE, VM_NOHUGEPAGE, VM_SHARED, VM_SPECIAL, VM_WRITE
from specfault.runtime import Work, load_item, store_item

# thp_vma_allowable_order()'s callers (enum tva_type)
TVA_SMAPS, TVA_PAGEFAULT, TVA_KHUGEPAGED, TVA_FORCED_COLLAPSE = range(4)


def pmd_write(pmd: int) -> bool:
    return pte_write(pmd)


def pmd_dirty(pmd: int) -> bool:
    return bool(pmd & _PAGE_DIRTY)


def pmd_young(pmd: int) -> bool:
    return bool(pmd & _PAGE_ACCESSED)


def is_huge_zero_pmd(pmd: int) -> bool:
    return pte_special(pmd)


def pmd_index(addr: int) -> int:
    return (addr >> 21) & 511


# ------------------------------------------------------------- eligibility
def vma_is_anonymous(vma: Any) -> bool:
    """A private anonymous VMA (shared anonymous memory is shmem: its THPs
    follow shmem_enabled, not modelled)."""
    return vma.vm_file is None and not vma.vm_flags & VM_SHARED


def thp_vma_allowable_order(vma: Any, tva_type: int) -> bool:
    """thp_vma_allowable_order(vma, vm_flags, type, PMD_ORDER) for the
    model's anonymous VMAs: the machine's ``transparent_hugepage`` mode
    (always; madvise: VM_HUGEPAGE only; never), never with VM_NOHUGEPAGE or
    on special or droppable mappings; MADV_COLLAPSE ignores the mode;
    khugepaged and MADV_COLLAPSE want an anon_vma (a VMA never faulted has
    nothing to collapse) and a VMA that holds an aligned 2 MiB range."""
    flags = vma.vm_flags
    if not vma_is_anonymous(vma) or flags & (VM_SPECIAL | VM_NOHUGEPAGE | VM_DROPPABLE):
        return False
    if tva_type != TVA_FORCED_COLLAPSE:
        mode = vma.vm_mm.config.knob("transparent_hugepage")
        if mode == "never" or (mode == "madvise" and not flags & VM_HUGEPAGE):
            return False
    if vma.anon_vma is None and tva_type in (TVA_KHUGEPAGED, TVA_FORCED_COLLAPSE):
        return False
    # outside a fault, the VMA must hold an aligned 2 MiB at all (the
    # highest aligned one below vm_end; the fault checks its own range)
    if tva_type != TVA_PAGEFAULT and vma.vm_end - HPAGE_PMD_SIZE < vma.vm_start:
        return False
    return tva_type == TVA_PAGEFAULT or thp_vma_suitable_order(vma, vma.vm_end - HPAGE_PMD_SIZE)


def thp_vma_suitable_order(vma: Any, addr: int) -> bool:
    """The VMA holds the whole 2 MiB-aligned range around ``addr``."""
    haddr = addr & HPAGE_PMD_MASK
    return haddr >= vma.vm_start and haddr + HPAGE_PMD_SIZE <= vma.vm_end


def khugepaged_enter_vma(vma: Any) -> None:
    """khugepaged_enter_vma(): register the mm for khugepaged's scan (once)
    when THPs are enabled for ``vma`` at all — on a THP fault and on
    MADV_HUGEPAGE (Linux also wants the VMA to have an anon_vma already
    for the latter; the model registers the mm either way and the scan
    skips VMAs without one)."""
    mm = vma.vm_mm
    if mm in mm.kernel.khugepaged_mms:
        return
    if vma_is_anonymous(vma) and not vma.vm_flags & VM_NOHUGEPAGE and \
            mm.config.knob("transparent_hugepage") != "never":
        mm.kernel.khugepaged_mms.append(mm)


# ----------------------------------------------------------------- mapping
def map_anon_folio_pmd(folio: Page, vma: Any, haddr: int) -> int:
    """map_anon_folio_pmd_nopf()'s bookkeeping for a new THP at ``haddr``:
    its 512 pages anonymous, exclusive, indexed for the reverse map, mapped
    once; RSS.  Returns the PMD entry to store (writable and dirty if the
    VMA is writable: maybe_pmd_mkwrite(pmd_mkdirty())).  Caller holds the
    PMD lock."""
    mem = vma.vm_mm.kernel.mem
    first = vma.linear_page_index(haddr)
    for i in range(HPAGE_PMD_NR):
        page = folio_page(mem, folio, i)
        page.anon = True
        page.mapping = vma.anon_vma
        page.index = first + i
        page.mapcount = 1
        page.anon_exclusive = True
    folio.entire_mapcount = 1
    vma.vm_mm.rss["anon"] += HPAGE_PMD_NR
    entry = mk_huge_pmd(folio.pfn, vma.vm_page_prot) | _PAGE_DIRTY | _PAGE_SOFT_DIRTY
    if vma.vm_flags & VM_WRITE:
        entry |= 2                                    # pmd_mkwrite
    return entry


async def free_huge_folio(mem: Any, folio: Page) -> None:
    """folio_put() of a THP nobody mapped: its 512 references."""
    for i in range(HPAGE_PMD_NR):
        await put_page(mem, folio_page(mem, folio, i))


def folio_unmapped_pmd(mem: Any, folio: Page) -> None:
    """One PMD mapping of ``folio`` went (split or zapped).  The last one
    splits the folio into order-0 pages (Linux: deferred_split_folio, then
    split_huge_page); those still mapped by PTEs join the LRU.  Under the
    PMD lock."""
    folio.entire_mapcount -= 1
    if folio.entire_mapcount:
        return
    for i in range(HPAGE_PMD_NR):
        page = folio_page(mem, folio, i)
        page.compound_head = None
        if page.mapcount:
            lru_add(mem, page)


async def alloc_huge_folio(vmf: Any) -> Page | None:
    """vma_alloc_anon_folio_pmd(): a zeroed 2 MiB folio, or None
    (thp_fault_fallback) — the caller falls back to PTEs."""
    mm = vmf.mm
    folio = await AllocHugePage(mm.kernel.mem)
    if folio is None:
        mm.kernel.count("thp_fault_fallback")
        return None
    await Work("clear_page", HPAGE_PMD_NR)            # folio_zero_user()
    return folio


# ------------------------------------------------------------------ faults
async def do_huge_pmd_anonymous_page(vmf: Any) -> int:
    """create_huge_pmd() for an anonymous VMA whose PMD entry for the fault
    is none and which may have a THP there (the caller checked
    thp_vma_allowable_order):

    1. the 2 MiB range must lie in the VMA, else VM_FAULT_FALLBACK;
    2. vmf_anon_prepare (may return VM_FAULT_RETRY under the VMA lock);
    3. a read fault with use_zero_page maps the huge zero page;
    4. otherwise allocate a THP (none: VM_FAULT_FALLBACK, counted), zero it;
    5. take the PMD lock, check the entry is still none (a racing fault
       may have installed a table or a huge PMD: drop ours, return 0 — the
       access retries), map it (thp_fault_alloc), unlock.

    Entered with the fault's lock (mmap_lock read or the VMA lock; never
    speculative: the speculative walk aborts on pmd_none), no PTL; returns
    with the fault's lock still held (but for vmf_anon_prepare's
    VM_FAULT_RETRY) and no PMD lock.  VM_FAULT_FALLBACK: the caller goes
    on with PTEs."""
    vma, mm = vmf.vma, vmf.mm
    assert not vmf.flags & FAULT_FLAG_SPECULATIVE
    haddr = vmf.address & HPAGE_PMD_MASK
    if not thp_vma_suitable_order(vma, haddr):
        return VM_FAULT_FALLBACK
    ret = await vmf_anon_prepare(vmf)
    if ret:
        return ret
    khugepaged_enter_vma(vma)
    pmd, idx = vmf.pmd, vmf.pmd_idx
    mem = mm.kernel.mem
    if not vmf.flags & FAULT_FLAG_WRITE and mm.config.knob("thp_use_zero_page"):
        zero_pfn = mem.get_huge_zero_page()
        await pmd.ptl.lock()                          # pmd_lock()
        if await load_item(pmd, pmd.entries, idx) is None:
            entry = pte_mkspecial(mk_huge_pmd(zero_pfn, vma.vm_page_prot))
            _set_new_pmd(mm, pmd, idx)
            await store_item(pmd, pmd.entries, idx, entry)    # set_huge_zero_folio()
        await pmd.ptl.unlock()
        return 0
    folio = await alloc_huge_folio(vmf)
    if folio is None:
        return VM_FAULT_FALLBACK
    await pmd.ptl.lock()
    if await load_item(pmd, pmd.entries, idx) is not None:
        await pmd.ptl.unlock()
        await free_huge_folio(mem, folio)
        return 0
    entry = map_anon_folio_pmd(folio, vma, haddr)
    _set_new_pmd(mm, pmd, idx)
    await store_item(pmd, pmd.entries, idx, entry)
    mm.kernel.count("thp_fault_alloc")
    await pmd.ptl.unlock()
    return 0


def _set_new_pmd(mm: Any, pmd: PageTable, idx: int) -> None:
    """A none PMD entry gets a huge one: the table's count, and
    mm_inc_nr_ptes() for the PTE table Linux deposits with it (the model
    makes it when the PMD is split)."""
    pmd.nr += 1
    mm.kernel.count("nr_page_table_pages")


async def huge_pmd_set_accessed(vmf: Any) -> int:
    """A read, or a write allowed by the PMD, faulted on a huge PMD (a
    stale TLB entry, or the PMD changed since the MMU read it): under the
    PMD lock, if the PMD is still ``vmf.orig_pmd`` set its accessed (and
    for a write dirty) bits — touch_pmd().  Entered and left with the
    fault's lock, no PMD lock."""
    pmd, idx = vmf.pmd, vmf.pmd_idx
    await pmd.ptl.lock()
    cur = await load_item(pmd, pmd.entries, idx)
    if cur == vmf.orig_pmd and pmd_trans_huge(cur):
        new = cur | _PAGE_ACCESSED
        if vmf.flags & FAULT_FLAG_WRITE:
            new |= _PAGE_DIRTY | _PAGE_SOFT_DIRTY
        if new != cur:
            await store_item(pmd, pmd.entries, idx, new)
    await pmd.ptl.unlock()
    return 0


async def do_huge_zero_wp_pmd(vmf: Any) -> int:
    """A write to the huge zero page: allocate a THP (none: fall back —
    the caller splits the PMD), then under the PMD lock, the PMD still the
    zero one, clear it, flush, map the THP (thp_fault_alloc).  Locks as
    do_huge_pmd_wp_page."""
    vma, mm = vmf.vma, vmf.mm
    folio = await alloc_huge_folio(vmf)
    if folio is None:
        return VM_FAULT_FALLBACK
    pmd, idx = vmf.pmd, vmf.pmd_idx
    haddr = vmf.address & HPAGE_PMD_MASK
    await pmd.ptl.lock()
    if await load_item(pmd, pmd.entries, idx) != vmf.orig_pmd:
        await pmd.ptl.unlock()
        await free_huge_folio(mm.kernel.mem, folio)
        return 0
    await store_item(pmd, pmd.entries, idx, vmf.orig_pmd & ~_PAGE_PRESENT)   # pmdp_huge_clear_flush()
    await flush_tlb_range(mm, haddr, haddr + HPAGE_PMD_SIZE)
    entry = map_anon_folio_pmd(folio, vma, haddr)
    await store_item(pmd, pmd.entries, idx, entry)
    mm.kernel.count("thp_fault_alloc")
    await pmd.ptl.unlock()
    return 0


async def do_huge_pmd_wp_page(vmf: Any) -> int:
    """wp_huge_pmd() / do_huge_pmd_wp_page() (Linux 6.18): a write to a
    write-protected huge PMD (``vmf.orig_pmd``):

    1. the huge zero page: do_huge_zero_wp_pmd; if it cannot allocate,
       split (step 4);
    2. take the PMD lock; the PMD changed: unlock, return 0 (retry);
    3. reuse the THP when it is exclusive (PageAnonExclusive) or we hold
       its only references: make the PMD writable, dirty, young; unlock;
    4. otherwise unlock and split the PMD (__split_huge_pmd) — no huge COW
       copy — and return VM_FAULT_FALLBACK: the fault goes on at the PTE
       level (do_wp_page copies the one page written).

    Entered with the fault's lock (mmap_lock read or the VMA lock), no
    PMD lock; returns with the fault's lock, no PMD lock."""
    vma, mm = vmf.vma, vmf.mm
    mem = mm.kernel.mem
    orig = vmf.orig_pmd
    pmd, idx = vmf.pmd, vmf.pmd_idx
    if is_huge_zero_pmd(orig):
        ret = await do_huge_zero_wp_pmd(vmf)
        if not ret & VM_FAULT_FALLBACK:
            return ret
    else:
        await pmd.ptl.lock()
        if await load_item(pmd, pmd.entries, idx) != orig:
            await pmd.ptl.unlock()
            return 0
        folio = mem.pages[pte_pfn(orig)]
        pages = [folio_page(mem, folio, i) for i in range(HPAGE_PMD_NR)]
        if folio.anon_exclusive or all(p.refcount == 1 for p in pages):
            for p in pages:
                p.anon_exclusive = True
            entry = orig | _PAGE_ACCESSED | _PAGE_DIRTY | _PAGE_SOFT_DIRTY
            if vma.vm_flags & VM_WRITE:
                entry |= 2                                  # pmd_mkwrite
            await store_item(pmd, pmd.entries, idx, entry)
            mm.kernel.count("pgreuse")
            await pmd.ptl.unlock()
            return 0
        await pmd.ptl.unlock()
    await __split_huge_pmd(vma, pmd, vmf.address)
    return VM_FAULT_FALLBACK


# --------------------------------------------------------------- splitting
async def __split_huge_pmd(vma: Any, pmd: PageTable, address: int) -> None:
    """__split_huge_pmd(vma, pmd, address, freeze=false): if the PMD entry
    for ``address`` is huge, replace it by a PTE table mapping the same 512
    pages with the same rights (__split_huge_pmd_locked).  Caller holds
    mmap_lock (read or write) or the VMA lock — what keeps ``pmd`` — and
    no PTL; the PMD lock is taken and dropped here."""
    idx = pmd_index(address)
    entry = await pmd_trans_huge_lock(pmd, idx)
    if entry is not None:
        await __split_huge_pmd_locked(vma, pmd, idx, entry)
        await pmd.ptl.unlock()


async def __split_huge_pmd_locked(vma: Any, pmd: PageTable, idx: int, entry: int) -> None:
    """The split itself, under the PMD lock (thp_split_pmd):

    1. pmdp_invalidate: the PMD made not present (still huge, so a fault
       on it waits for our PMD lock), then the TLBs flushed — no CPU may
       keep a 2 MiB translation once 4 KiB ones exist;
    2. fill a new PTE table (Linux withdraws the one deposited at map
       time): each subpage with the PMD's rights, dirty, young and
       soft-dirty bits — the huge zero page's become zero-page PTEs;
    3. pmd_populate: the PMD points to the table;
    4. a THP's folio loses a PMD mapping (split into order-0 pages if it
       was the last)."""
    mm = vma.vm_mm
    mem = mm.kernel.mem
    mm.kernel.count("thp_split_pmd")
    haddr = pmd.base + (idx << 21)
    await store_item(pmd, pmd.entries, idx, entry & ~_PAGE_PRESENT)       # 1
    await flush_tlb_range(mm, haddr, haddr + HPAGE_PMD_SIZE)
    pt = PageTable(1, haddr)                                               # 2
    if is_huge_zero_pmd(entry):
        zero = pte_mkspecial(mk_pte(mem.zero_page.pfn, vma.vm_page_prot))
        pt.entries = [zero] * 512
    else:
        keep = entry & (_PAGE_ACCESSED | _PAGE_DIRTY | _PAGE_SOFT_DIRTY | 2)
        prot = (vma.vm_page_prot & ~_PAGE_ACCESSED) | keep
        base = pte_pfn(entry)
        pt.entries = [mk_pte(base + i, prot) for i in range(512)]
    pt.nr = 512
    await store_item(pmd, pmd.entries, idx, pt)                            # 3
    if not is_huge_zero_pmd(entry):
        folio_unmapped_pmd(mem, mem.pages[pte_pfn(entry)])                 # 4


def huge_pmd_table(mm: Any, address: int) -> PageTable | None:
    """The PMD table holding a huge PMD for ``address``, or None — a plain
    walk, no ops (Linux's callers test pmd_trans_huge without the lock
    too): whoever acts on it re-checks under the PMD lock.  Callers that
    find none pay nothing, so the syscalls' steps are unchanged where no
    THP is."""
    t = mm.pgd
    for shift in (39, 30):
        t = t.entries[(address >> shift) & 511]
        if t is None:
            return None
    return t if pmd_trans_huge(t.entries[pmd_index(address)]) else None


async def split_huge_pmd_address(vma: Any, address: int) -> None:
    """split_huge_pmd_address(): split the huge PMD mapping ``address``, if
    any.  Caller holds mmap_lock (or the VMA lock)."""
    pmd = huge_pmd_table(vma.vm_mm, address)
    if pmd is not None:
        await __split_huge_pmd(vma, pmd, address)


async def split_huge_pmds(vma: Any, start: int, end: int, partial_only: bool = False) -> None:
    """Split the huge PMDs of ``vma`` that [start, end) touches — or, with
    ``partial_only``, only those it does not cover whole (what zap,
    mprotect and mremap do before working on PTEs).  Caller holds
    mmap_lock (or the VMA lock)."""
    addr = start & HPAGE_PMD_MASK
    while addr < end:
        whole = addr >= start and addr + HPAGE_PMD_SIZE <= end
        if not (partial_only and whole):
            await split_huge_pmd_address(vma, max(addr, start))
        addr += HPAGE_PMD_SIZE


async def vma_adjust_trans_huge(vma: Any, addr: int) -> None:
    """vma_adjust_trans_huge(): a boundary of ``vma`` is about to move to
    ``addr`` (a split, a shrink): a huge PMD across it is split first, so
    no huge PMD ever maps across two VMAs or outside its own.  Caller
    holds mmap_lock for write."""
    if addr & ~HPAGE_PMD_MASK:
        await split_huge_pmd_address(vma, addr)


# ------------------------------------------------------ syscalls on huge PMDs
async def pmd_trans_huge_lock(pmd: PageTable, idx: int) -> int | None:
    """__pmd_trans_huge_lock(): take the PMD lock; if entry ``idx`` is a
    huge PMD return it with the lock held, else drop the lock and return
    None (split or zapped meanwhile: the caller goes on with PTEs)."""
    await pmd.ptl.lock()
    entry = await load_item(pmd, pmd.entries, idx)
    if pmd_trans_huge(entry):
        return entry  # type: ignore[no-any-return]
    await pmd.ptl.unlock()
    return None


async def zap_huge_pmd(tlb: Any, vma: Any, pmd: PageTable, addr: int) -> bool:
    """zap_huge_pmd(): the range covers the huge PMD at ``addr`` whole:
    clear it under the PMD lock; a THP's 512 pages lose a mapping each and
    go to the gather (freed after the TLB flush).  False if the entry is no
    longer huge (the caller walks the PTEs instead).  Caller holds
    mmap_lock (write, or read for MADV_DONTNEED)."""
    mm = tlb.mm
    mem = mm.kernel.mem
    idx = pmd_index(addr)
    entry = await pmd_trans_huge_lock(pmd, idx)
    if entry is None:
        return False
    await store_item(pmd, pmd.entries, idx, None)          # pmdp_huge_get_and_clear_full
    pmd.nr -= 1
    mm.kernel.count("nr_page_table_pages", -1)              # zap_deposited_table()
    if not is_huge_zero_pmd(entry):
        folio = mem.pages[pte_pfn(entry)]
        for i in range(HPAGE_PMD_NR):
            page = folio_page(mem, folio, i)
            page.mapcount -= 1
            if page.mapcount == 0:
                page.anon_exclusive = False
            tlb.pages.append(page)
        mm.rss["anon"] -= HPAGE_PMD_NR
        folio_unmapped_pmd(mem, folio)
    await pmd.ptl.unlock()
    haddr = addr & HPAGE_PMD_MASK
    tlb.track(haddr, haddr + HPAGE_PMD_SIZE)
    return True


def can_change_pmd_writable(vma: Any, pmd: int) -> bool:
    """can_change_pmd_writable(): may mprotect make this huge PMD writable
    without a write fault?  Only a THP of a private mapping that is
    exclusive (the write fault would reuse it anyway) — never the huge
    zero page."""
    if vma.vm_flags & VM_SHARED or is_huge_zero_pmd(pmd):
        return False
    head = vma.vm_mm.kernel.mem.pages.get(pte_pfn(pmd))
    return head is not None and head.anon and head.anon_exclusive


async def change_huge_pmd(vma: Any, pmd: PageTable, addr: int, newprot: int) -> bool:
    """change_huge_pmd(): mprotect over a whole huge PMD: the rights of
    ``newprot``, the PFN, dirty, young and soft-dirty bits kept
    (pmd_modify); writable only where that is safe without a fault
    (MM_CP_TRY_CHANGE_WRITABLE), as change_pte_range() does per PTE.  Under
    the PMD lock; the caller flushes the TLBs.  False if the entry is no
    longer huge."""
    idx = pmd_index(addr)
    entry = await pmd_trans_huge_lock(pmd, idx)
    if entry is None:
        return False
    new = pte_modify(entry, newprot) | _PAGE_PSE
    if vma.vm_flags & VM_WRITE and not pte_write(new) and can_change_pmd_writable(vma, entry):
        new |= 2                                              # pmd_mkwrite
    if new != entry:
        await store_item(pmd, pmd.entries, idx, new)
    await pmd.ptl.unlock()
    return True


async def copy_huge_pmd(dst_vma: Any, src_vma: Any, dst_pmd: PageTable, src_pmd: PageTable,
                        addr: int) -> None:
    """copy_huge_pmd() at fork: the child gets the same huge PMD, both
    write-protected, the folio COW-shared; each page gains a mapping and loses
    PageAnonExclusive (folio_try_dup_anon_rmap_pmd — the model has no
    pinned pages, so it never fails).  The huge zero page is shared as is.
    Caller holds both mmap_locks for write; takes the source PMD lock, then
    the child's (nested)."""
    src_mm, dst_mm = src_vma.vm_mm, dst_vma.vm_mm
    mem = src_mm.kernel.mem
    idx = pmd_index(addr)
    entry = await pmd_trans_huge_lock(src_pmd, idx)
    if entry is None:
        return
    if not is_huge_zero_pmd(entry):
        folio = mem.pages[pte_pfn(entry)]
        folio.entire_mapcount += 1
        for i in range(HPAGE_PMD_NR):
            page = folio_page(mem, folio, i)
            page.mapcount += 1
            page.refcount += 1
            page.anon_exclusive = False
        dst_mm.rss["anon"] += HPAGE_PMD_NR
        if pte_write(entry):
            entry &= ~2                                     # pmdp_set_wrprotect()
            await store_item(src_pmd, src_pmd.entries, idx, entry)
    entry &= ~_PAGE_ACCESSED                                # pmd_mkold()
    await dst_pmd.ptl.lock()
    _set_new_pmd(dst_mm, dst_pmd, idx)
    await store_item(dst_pmd, dst_pmd.entries, idx, entry)
    await dst_pmd.ptl.unlock()
    await src_pmd.ptl.unlock()


def smaps_anon_huge(mm: Any, vma: Any) -> tuple[int, int]:
    """(Rss, AnonHugePages) in kB that the VMA's huge PMDs contribute
    (smaps_pmd_entry: the huge zero page counts in neither).  Caller holds
    mmap_lock (read)."""
    rss = 0
    addr = vma.vm_start & HPAGE_PMD_MASK
    while addr < vma.vm_end:
        pmd = huge_pmd_table(mm, addr)
        if pmd is not None:
            entry = pmd.entries[pmd_index(addr)]
            if not is_huge_zero_pmd(entry) and entry & (_PAGE_PRESENT | (1 << 8)):
                rss += 2048
        addr += HPAGE_PMD_SIZE
    return rss, rss
