"""x86-64 page tables: 4 levels of 512 entries, 4 KiB pages, split PTLs.

A PTE is an ``int`` laid out as on x86-64 (arch/x86/include/asm/pgtable_types.h):
bit 0 present, 1 RW, 2 user, 5 accessed, 6 dirty, 8 PROTNONE (a PROT_NONE
mapping: present to the kernel, not to the MMU), 9 special (the zero page),
11 soft-dirty, 63 NX; PFN in bits 12-51.  ``0`` is pte_none.  Upper levels
hold :class:`PageTable` objects (or None), so ``pmd_same`` is identity.

A swap PTE (is_swap_pte: not none, not present — neither _PAGE_PRESENT nor
_PAGE_PROTNONE) is laid out as x86-64's since the L1TF fix
(arch/x86/include/asm/pgtable_64.h): the swap type in bits 59-63, the
offset *inverted* in bits 9-58 (so the "PFN" bits of a non-present PTE
never point at real memory), and the software bits below 9:
_PAGE_SWP_SOFT_DIRTY (bit 1, _PAGE_RW's place), _PAGE_SWP_EXCLUSIVE (bit 3,
_PAGE_PWT's place: the page was PageAnonExclusive when it was unmapped).
``swp_entry_t`` is Linux's arch-independent value: type in the top 5 bits,
offset below (include/linux/swapops.h), an int here.

Fields
------
PageTable
# PTE level: protected by ``ptl`` (split PTL, one per PTE table); lockless
# readers (the MMU, speculative faults, GUP-fast) use LoadItem ops.
# upper levels: populated under mm.page_table_lock, cleared by
# free_pgtables under mmap_lock (write) — and a PMD entry also by PTE-table
# reclaim (pt_reclaim.py) under mmap_lock for *read*, holding the PMD
# table's lock and the PTE table's PTL: so a PTE table found without its
# PTL may be detached (and, a grace period later, freed) at any moment;
# pte_offset_map_lock() re-checks the PMD under the PTL.
    entries   512 slots
    nr        number of non-empty slots
# immutable
    level (1 = PTE ... 4 = PGD), base (first address covered), ptl
"""

from __future__ import annotations

from typing import Any

from specfault.runtime import KObject, Op, UseAfterFree, load_item, store_item, work
from specfault.sync import SpinLock

PTRS_PER_TABLE = 512
LEVEL_SHIFT = {1: 12, 2: 21, 3: 30, 4: 39}
_SHIFT = (0, 12, 21, 30, 39)             # LEVEL_SHIFT by level, as a tuple
PMD_SIZE = 1 << 21

_PAGE_PRESENT = 1 << 0
_PAGE_RW = 1 << 1
_PAGE_USER = 1 << 2
_PAGE_ACCESSED = 1 << 5
_PAGE_DIRTY = 1 << 6
_PAGE_PROTNONE = 1 << 8
_PAGE_SPECIAL = 1 << 9
_PAGE_SOFT_DIRTY = 1 << 11
_PAGE_NX = 1 << 63
PTE_PFN_MASK = ((1 << 52) - 1) & ~0xFFF
_PAGE_CHG_MASK = PTE_PFN_MASK | _PAGE_ACCESSED | _PAGE_DIRTY | _PAGE_SPECIAL | _PAGE_SOFT_DIRTY

PAGE_NONE = _PAGE_PROTNONE | _PAGE_ACCESSED
_BASE = _PAGE_PRESENT | _PAGE_USER | _PAGE_ACCESSED


def vm_get_page_prot(vm_flags: int, file: Any = None) -> int:
    """protection_map[] (arch/x86/mm/pgprot.c) + vma_set_page_prot():
    private writable mappings get read-only PTEs (COW on write); shared
    writable ones get RW unless the file wants write notification (dirty
    tracking of a regular file: the first write faults to mark it dirty)."""
    if not vm_flags & 0x7:
        return PAGE_NONE
    prot = _BASE
    if not vm_flags & 0x4:
        prot |= _PAGE_NX
    if vm_flags & 0x2 and vm_flags & 0x8:       # VM_WRITE and VM_SHARED
        if file is None or not getattr(file, "wants_writenotify", False):
            prot |= _PAGE_RW
    return prot


# ------------------------------------------------------------ swap entries
SWP_TYPE_BITS = 5
SWP_OFFSET_FIRST_BIT = 9                  # _PAGE_BIT_PROTNONE + 1
SWP_OFFSET_SHIFT = SWP_OFFSET_FIRST_BIT + SWP_TYPE_BITS
_PAGE_SWP_SOFT_DIRTY = 1 << 1
_PAGE_SWP_EXCLUSIVE = 1 << 3
_U64 = (1 << 64) - 1
MAX_SWAPFILES_SHIFT = 5
SWP_TYPE_SHIFT = 64 - MAX_SWAPFILES_SHIFT
SWP_OFFSET_MASK = (1 << SWP_TYPE_SHIFT) - 1


def swp_entry(type_: int, offset: int) -> int:
    """swp_entry(): the arch-independent swp_entry_t value."""
    return (type_ << SWP_TYPE_SHIFT) | (offset & SWP_OFFSET_MASK)


def swp_type(entry: int) -> int:
    return entry >> SWP_TYPE_SHIFT


def swp_offset(entry: int) -> int:
    return entry & SWP_OFFSET_MASK


def swp_entry_to_pte(entry: int) -> int:
    """__swp_entry_to_pte(): type in bits 59-63, offset inverted in 9-58."""
    type_, offset = swp_type(entry), swp_offset(entry)
    return (((~offset << SWP_OFFSET_SHIFT) & _U64) >> SWP_TYPE_BITS) | (type_ << (64 - SWP_TYPE_BITS))


def pte_to_swp_entry(pte: int) -> int:
    """__pte_to_swp_entry(), the software bits ignored."""
    type_ = pte >> (64 - SWP_TYPE_BITS)
    offset = ((~pte << SWP_TYPE_BITS) & _U64) >> SWP_OFFSET_SHIFT
    return swp_entry(type_, offset)


def is_swap_pte(pte: int) -> bool:
    """Not none and not present: a swap entry (the model has no migration
    entries or PTE markers)."""
    return pte != 0 and not pte & (_PAGE_PRESENT | _PAGE_PROTNONE)


def pte_swp_exclusive(pte: int) -> bool:
    return bool(pte & _PAGE_SWP_EXCLUSIVE)


def pte_swp_mkexclusive(pte: int) -> int:
    return pte | _PAGE_SWP_EXCLUSIVE


def pte_swp_clear_exclusive(pte: int) -> int:
    return pte & ~_PAGE_SWP_EXCLUSIVE


def pte_swp_soft_dirty(pte: int) -> bool:
    return bool(pte & _PAGE_SWP_SOFT_DIRTY)


def pte_swp_mksoft_dirty(pte: int) -> int:
    return pte | _PAGE_SWP_SOFT_DIRTY


def mk_pte(pfn: int, prot: int) -> int:
    return (pfn << 12) | prot


def pte_none(pte: int) -> bool:
    return pte == 0


def pte_present(pte: int) -> bool:
    return bool(pte & (_PAGE_PRESENT | _PAGE_PROTNONE))


def pte_pfn(pte: int) -> int:
    return (pte & PTE_PFN_MASK) >> 12


def pte_write(pte: int) -> bool:
    return bool(pte & _PAGE_RW)


def pte_dirty(pte: int) -> bool:
    return bool(pte & _PAGE_DIRTY)


def pte_special(pte: int) -> bool:
    return bool(pte & _PAGE_SPECIAL)


def pte_mkwrite(pte: int) -> int:
    return pte | _PAGE_RW


def pte_mkdirty(pte: int) -> int:
    return pte | _PAGE_DIRTY | _PAGE_SOFT_DIRTY


def pte_mksoft_dirty(pte: int) -> int:
    return pte | _PAGE_SOFT_DIRTY


def pte_mkspecial(pte: int) -> int:
    return pte | _PAGE_SPECIAL


def pte_wrprotect(pte: int) -> int:
    return pte & ~_PAGE_RW


def pte_mkyoung(pte: int) -> int:
    return pte | _PAGE_ACCESSED


def pte_modify(pte: int, newprot: int) -> int:
    """Keep PFN, dirty, accessed, special; take the rest from newprot."""
    return (pte & _PAGE_CHG_MASK) | (newprot & ~_PAGE_CHG_MASK)


def hw_allows(pte: int, write: bool, exec_: bool) -> bool:
    """Would the MMU complete this access with this PTE?"""
    if not pte & _PAGE_PRESENT:
        return False
    if write and not pte & _PAGE_RW:
        return False
    return not (exec_ and pte & _PAGE_NX)


class PteClear(Op):
    """An atomic read-modify-write of one PTE that clears ``mask`` and
    returns the old value: ptep_get_and_clear() (mask all ones: an xchg
    with 0) and ptep_test_and_clear_young() (mask _PAGE_ACCESSED: a locked
    btr).  Atomic against the MMU, which sets accessed/dirty bits without
    the PTL — a separate load and store would lose a dirty bit set between
    them."""

    __slots__ = ("table", "index", "mask")
    kind = "xchg"

    def __init__(self, table: Any, index: int, mask: int) -> None:
        self.table = table
        self.index = index
        self.mask = mask

    def perform(self) -> int:
        t = self.table
        if t.freed_at is not None:
            raise UseAfterFree(t, t.freed_at, f"xchg [{self.index}]")
        old: int = t.entries[self.index]
        t.entries[self.index] = old & ~self.mask
        return old

    def footprint(self) -> tuple[tuple[object, str, str], ...]:
        return ((self.table, str(self.index), "w"),)

    def describe(self) -> str:
        return f"xchg {self.table.label()}[{self.index}]"


def ptep_get_and_clear(table: Any, index: int) -> PteClear:
    """``old = await ptep_get_and_clear(pt, idx)``: the PTE, now none."""
    return PteClear(table, index, -1)


def ptep_test_and_clear_young(table: Any, index: int) -> PteClear:
    """``old = await ptep_test_and_clear_young(pt, idx)``: the PTE before
    its accessed bit was cleared."""
    return PteClear(table, index, _PAGE_ACCESSED)


def index(level: int, addr: int) -> int:
    return (addr >> LEVEL_SHIFT[level]) & 511


class PageTable(KObject):
    __slots__ = ("level", "base", "entries", "ptl", "nr")

    def __init__(self, level: int, base: int) -> None:
        super().__init__()
        self.level = level
        self.base = base
        self.entries: list[Any] = [0 if level == 1 else None] * PTRS_PER_TABLE
        # split PTLs: one per PTE table (the PMD-level lock is Linux's
        # split pmd ptlock; the model only takes the PTE-level ones)
        self.ptl = SpinLock(f"ptl@{base:#x}" if level == 1 else f"pmd_ptl@{base:#x}")
        self.nr = 0

    def span(self) -> int:
        return 1 << (LEVEL_SHIFT[self.level] + 9)

    def label(self) -> str:
        name = {1: "pte", 2: "pmd", 3: "pud", 4: "pgd"}[self.level]
        return f"{name} table @{self.base:#x}"

    def __repr__(self) -> str:
        return f"<PageTable {self.label()} nr={self.nr}>"


# ----------------------------------------------------------------- the walk
PTE_LEVEL, PMD_LEVEL = 1, 2


async def walk(mm: Any, addr: int, level: int = PTE_LEVEL, alloc: bool = False) -> PageTable:
    """xv6's ``walk(pagetable, va, alloc)``; Linux's pgd_offset / pud_offset
    / pmd_offset, with pud_alloc / pmd_alloc / pte_alloc when ``alloc``.

    Descends from ``mm.pgd`` towards the table of ``level`` (PTE_LEVEL: the
    PTE table; PMD_LEVEL: the PMD table) covering ``addr``, reading each
    entry with one READ_ONCE op (``load_item``), which checks the table it
    reads for use-after-free — at every level.  A missing entry is
    allocated when ``alloc`` (``__pte_alloc``: under page_table_lock, unless
    a racing fault installed one first); otherwise the walk stops there and
    returns the table it reached, whose ``level`` is then above ``level``.

    The one software walk: the fault paths (classic, per-VMA and — no
    alloc — speculative), the syscalls (zap, mprotect, mremap, the fork
    copy), GUP and the /proc views all use it.  Callers hold what keeps the
    tables they reach from being freed: mmap_lock, the VMA lock, or (a
    speculative fault) rcu_read_lock / interrupts off.  (The MMU's walk is
    the hardware's, inside one op: ``access.mmu_walk``.)"""
    table: PageTable = mm.pgd
    while table.level > level:
        idx = (addr >> _SHIFT[table.level]) & 511
        nxt = await load_item(table, table.entries, idx)
        if nxt is None:
            if not alloc:
                return table
            nxt = await __pte_alloc(mm, table, idx)
        table = nxt
    return table


async def __pte_alloc(mm: Any, parent: PageTable, idx: int) -> PageTable:
    """__pte_alloc() (and __pmd_alloc / __pud_alloc, one level up): make the
    missing table below ``parent[idx]`` and install it under
    mm.page_table_lock unless a racing fault installed one first (the
    one found is then used and ours dropped).  Returns the table now there."""
    level = parent.level - 1
    new = PageTable(level, parent.base + idx * (1 << LEVEL_SHIFT[parent.level]))
    await work("pgtable_alloc")
    await mm.page_table_lock.lock()
    cur = await load_item(parent, parent.entries, idx)
    if cur is None:
        await store_item(parent, parent.entries, idx, new)   # pmd_populate()
        parent.nr += 1
        mm.kernel.count("nr_page_table_pages")
        cur = new
    await mm.page_table_lock.unlock()
    return cur  # type: ignore[no-any-return]


async def follow_pte(mm: Any, addr: int) -> int:
    """The PTE mapping ``addr`` as a lockless lookup reads it (:func:`walk`
    without alloc, then one READ_ONCE of the entry), or 0 (none) when a
    table on the way is missing — follow_page_pte()'s lookup before it
    takes the PTL.  Caller holds mmap_lock (or the VMA lock)."""
    pt = await walk(mm, addr)
    if pt.level != PTE_LEVEL:
        return 0
    return await load_item(pt, pt.entries, (addr >> 12) & 511)  # type: ignore[no-any-return]


def pte_offset_map(pmd: PageTable, addr: int) -> Any:
    """``pt = await pte_offset_map(pmd, addr)``: the PTE table the PMD entry
    for ``addr`` points to, or None (pmd_none) — one READ_ONCE of the PMD
    entry (pmdp_get_lockless), ``pmd`` checked for use-after-free."""
    return load_item(pmd, pmd.entries, (addr >> 21) & 511)


async def pte_offset_map_lock(mm: Any, pmd: PageTable, addr: int) -> PageTable | None:
    """__pte_offset_map_lock() (mm/pgtable-generic.c): the PTE table the
    PMD entry for ``addr`` holds, with its PTL taken, or None (pmd_none):

    1. rcu_read_lock() (__pte_offset_map): a table reclaimed under us
       (pt_reclaim.py) is freed only after a grace period;
    2. read the PMD entry (pmdp_get_lockless); none: unlock RCU, None;
    3. spin_lock() the table's PTL;
    4. pmd_same: the PMD entry still holds that table — else unlock and
       start again at 1 (a reclaimer detached it while we waited, maybe a
       fault installed a new one);
    5. rcu_read_unlock(): from here the PTL keeps the table (a reclaimer
       needs it to detach the table; free_pgtables needs mmap_lock for
       write, which every caller excludes one way or another).  Linux keeps
       the RCU section until pte_unmap(); nothing in it needs it longer.

    Entered with the caller's lock on the VMA (mmap_lock, the VMA lock, or
    for the rmap walkers an RCU section of their own) and no PTL; returns
    with the table's PTL held, or with nothing more held when None."""
    rcu = mm.kernel.rcu
    idx = (addr >> 21) & 511
    while True:
        await rcu.read_lock()
        pt = await load_item(pmd, pmd.entries, idx)
        if pt is None:
            await rcu.read_unlock()
            return None
        await pt.ptl.lock()
        if await load_item(pmd, pmd.entries, idx) is pt:
            await rcu.read_unlock()
            return pt  # type: ignore[no-any-return]
        await pt.ptl.unlock()
        await rcu.read_unlock()


async def pte_alloc(mm: Any, pmd: PageTable, addr: int) -> PageTable:
    """pte_alloc(): the PTE table under ``pmd`` for ``addr``, allocated
    (``__pte_alloc``) if the PMD entry is none."""
    pt = await pte_offset_map(pmd, addr)
    if pt is None:
        pt = await __pte_alloc(mm, pmd, (addr >> 21) & 511)
    return pt  # type: ignore[no-any-return]


def addr_end(table: PageTable, addr: int, end: int) -> int:
    """pmd_addr_end() / pud_addr_end() / pgd_addr_end(), by the level the
    walk stopped at: the end of what ``table`` (a PTE table) covers, or of
    the missing entry of ``table`` (an upper level) that stopped the walk
    at ``addr`` — capped at ``end``."""
    span = 1 << (LEVEL_SHIFT[table.level] + 9 if table.level == PTE_LEVEL
                 else LEVEL_SHIFT[table.level])
    return min((addr & ~(span - 1)) + span, end)


async def walk_range(mm: Any, start: int, end: int) -> list[tuple[PageTable, int, int]]:
    """The PTE tables covering [start, end), as ``(pte_table, lo, hi)`` for
    the part [lo, hi) of the range each covers: :func:`walk` (no alloc) once
    per table, or per hole, skipping a missing entry's whole span (the shape
    of zap_pmd_range / change_pmd_range / copy_pmd_range)."""
    out = []
    addr = start
    while addr < end:
        table = await walk(mm, addr)
        nxt = addr_end(table, addr, end)
        if table.level == PTE_LEVEL:
            out.append((table, addr, nxt))
        addr = nxt
    return out


def pte_soft_dirty(pte: int) -> bool:
    return bool(pte & _PAGE_SOFT_DIRTY)
