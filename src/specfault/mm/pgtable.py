"""x86-64 page tables: 4 levels of 512 entries, 4 KiB pages, split PTLs.

A PTE is an ``int`` laid out as on x86-64 (arch/x86/include/asm/pgtable_types.h):
bit 0 present, 1 RW, 2 user, 5 accessed, 6 dirty, 8 PROTNONE (a PROT_NONE
mapping: present to the kernel, not to the MMU), 9 special (the zero page),
11 soft-dirty, 63 NX; PFN in bits 12-51.  ``0`` is pte_none.  Upper levels
hold :class:`PageTable` objects (or None), so ``pmd_same`` is identity —
except that a PMD entry may instead be an ``int``: a huge PMD
(pmd_trans_huge) mapping a 2 MiB transparent huge page, laid out as a PTE
with _PAGE_PSE (bit 7) set and the head page's PFN (mm/huge_memory.py).
``pmd_same`` of two huge PMDs compares their values.

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
# pte_offset_map_lock() re-checks the PMD under the PTL.  A PMD table's
# huge entries (ints) are set, changed and split under its own ``ptl``
# (pmd_lock: the split PMD ptlock) with the fault's lock or mmap_lock held;
# khugepaged replaces a PTE table by one under mmap_lock (write).
    entries   512 slots
    nr        number of non-empty slots
# immutable
    level (1 = PTE ... 4 = PGD), base (first address covered), ptl
"""

from __future__ import annotations

from typing import Any

from specfault.runtime import KObject, ModelBug, Op, UseAfterFree, load_item, store_item, work
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
_PAGE_PSE = 1 << 7
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
    """Not none and not present: a swap entry — a real one (a slot of a swap
    device) or a migration entry (:func:`non_swap_entry`; the model has no
    PTE markers, device or hwpoison entries)."""
    return pte != 0 and not pte & (_PAGE_PRESENT | _PAGE_PROTNONE)


# ------------------------------------------------------- migration entries
# include/linux/swap.h as configured on the host (CONFIG_MIGRATION,
# CONFIG_PTE_MARKER_UFFD_WP; no CONFIG_DEVICE_PRIVATE, no
# CONFIG_MEMORY_FAILURE): the top swap types are not swap devices
SWP_MIGRATION_NUM = 3
SWP_PTE_MARKER_NUM = 1
MAX_SWAPFILES = (1 << MAX_SWAPFILES_SHIFT) - SWP_MIGRATION_NUM - SWP_PTE_MARKER_NUM
SWP_MIGRATION_READ = MAX_SWAPFILES
SWP_MIGRATION_READ_EXCLUSIVE = MAX_SWAPFILES + 1
SWP_MIGRATION_WRITE = MAX_SWAPFILES + 2
# include/linux/swapops.h: the PFN in the offset's low SWP_PFN_BITS
# (MAX_PHYSMEM_BITS 46 - PAGE_SHIFT on x86-64), the accessed and dirty bits
# of the PTE it replaced above it (migration_entry_supports_ad() on x86)
SWP_PFN_BITS = 46 - 12
SWP_MIG_YOUNG = 1 << SWP_PFN_BITS
SWP_MIG_DIRTY = 1 << (SWP_PFN_BITS + 1)


def non_swap_entry(entry: int) -> bool:
    """non_swap_entry(): a type beyond the swap devices' (here: migration)."""
    return swp_type(entry) >= MAX_SWAPFILES


def make_migration_entry(type_: int, pfn: int, young: bool = False, dirty: bool = False) -> int:
    """make_{readable,readable_exclusive,writable}_migration_entry(pfn) —
    ``type_`` picks which — with make_migration_entry_young/dirty()."""
    return swp_entry(type_, pfn | (SWP_MIG_YOUNG if young else 0) | (SWP_MIG_DIRTY if dirty else 0))


def is_migration_entry(entry: int) -> bool:
    return SWP_MIGRATION_READ <= swp_type(entry) <= SWP_MIGRATION_WRITE


def is_writable_migration_entry(entry: int) -> bool:
    return swp_type(entry) == SWP_MIGRATION_WRITE


def is_readable_exclusive_migration_entry(entry: int) -> bool:
    return swp_type(entry) == SWP_MIGRATION_READ_EXCLUSIVE


def is_migration_entry_young(entry: int) -> bool:
    return bool(swp_offset(entry) & SWP_MIG_YOUNG)


def is_migration_entry_dirty(entry: int) -> bool:
    return bool(swp_offset(entry) & SWP_MIG_DIRTY)


def swp_offset_pfn(entry: int) -> int:
    """swp_offset_pfn(): the PFN a migration entry refers to."""
    return swp_offset(entry) & ((1 << SWP_PFN_BITS) - 1)


def is_migration_pte(pte: int) -> bool:
    """The PTE holds a migration entry (is_swap_pte + is_migration_entry)."""
    return is_swap_pte(pte) and is_migration_entry(pte_to_swp_entry(pte))


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
        elif type(nxt) is int:
            return table            # a huge PMD: the walk ends at its PMD table
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
    if pt.level == PMD_LEVEL:
        pmd = pt.entries[(addr >> 21) & 511]      # what stopped the walk (read by it)
        if type(pmd) is int:
            return huge_subpage_pte(pmd, addr)       # follow_huge_pmd()
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
    with the table's PTL held, or with nothing more held when None (none,
    or a huge PMD: __pte_offset_map fails on pmd_trans_huge)."""
    rcu = mm.kernel.rcu
    idx = (addr >> 21) & 511
    while True:
        await rcu.read_lock()
        pt = await load_item(pmd, pmd.entries, idx)
        if pt is None or type(pt) is int:        # none, or a huge PMD: no table
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


async def walk_range(mm: Any, start: int, end: int,
                     huge: bool = False) -> list[tuple[PageTable, int, int]]:
    """The PTE tables covering [start, end), as ``(pte_table, lo, hi)`` for
    the part [lo, hi) of the range each covers: :func:`walk` (no alloc) once
    per table, or per hole, skipping a missing entry's whole span (the shape
    of zap_pmd_range / change_pmd_range / copy_pmd_range).

    A huge PMD in the range is returned as ``(pmd_table, lo, hi)`` (level
    PMD_LEVEL: the caller reads the entry, which may have changed since,
    under the PMD table's ptl) when ``huge``; otherwise meeting one is a
    ModelBug — a walker that does not handle huge PMDs must split them
    first (huge_memory.split_huge_pmd_range), never skip them as holes."""
    out = []
    addr = start
    while addr < end:
        table = await walk(mm, addr)
        if table.level == PMD_LEVEL and type(table.entries[(addr >> 21) & 511]) is int:
            nxt = min((addr & ~(PMD_SIZE - 1)) + PMD_SIZE, end)
            if not huge:
                raise ModelBug(f"walk_range met a huge PMD at {addr:#x}: the caller must "
                               f"split it or handle it")
            out.append((table, addr, nxt))
            addr = nxt
            continue
        nxt = addr_end(table, addr, end)
        if table.level == PTE_LEVEL:
            out.append((table, addr, nxt))
        addr = nxt
    return out


def pte_soft_dirty(pte: int) -> bool:
    return bool(pte & _PAGE_SOFT_DIRTY)


# ------------------------------------------------------------------ huge PMDs
HPAGE_PMD_ORDER = 9
HPAGE_PMD_NR = 1 << HPAGE_PMD_ORDER
HPAGE_PMD_SIZE = PMD_SIZE
HPAGE_PMD_MASK = ~(PMD_SIZE - 1)


def pmd_trans_huge(entry: Any) -> bool:
    """A PMD entry that maps a 2 MiB page itself (an int with _PAGE_PSE)
    rather than pointing at a PTE table (a PageTable) or being none."""
    return type(entry) is int


def mk_huge_pmd(pfn: int, prot: int) -> int:
    """pfn_pmd(pfn, prot) + pmd_mkhuge(): the head page's PFN, _PAGE_PSE."""
    return mk_pte(pfn, prot) | _PAGE_PSE


def huge_subpage_pte(pmd: int, addr: int) -> int:
    """The PTE an access at ``addr`` sees through huge PMD ``pmd``: the
    PMD's bits (PSE cleared) with the PFN of the subpage ``addr`` falls
    in — what the MMU caches in its TLB, and follow_huge_pmd's page."""
    return (pmd & ~(PTE_PFN_MASK | _PAGE_PSE)) | ((pte_pfn(pmd) + ((addr >> 12) & 511)) << 12)


class HugePmdView:
    """A huge PMD seen as the PTE table it stands for: ``entries[i]`` is
    the PTE of subpage ``i`` (:func:`huge_subpage_pte`); storing to it sets
    the accessed/dirty bits the store carries on the PMD itself (the MMU's
    walk of a 2 MiB translation).  What the MMU's walk (access.mmu_walk)
    and the checker's own walk return for a huge PMD, so a reader of
    ``table.entries[addr >> 12 & 511]`` needs no second case; ``ptl`` and
    ``freed_at`` are the PMD table's."""

    __slots__ = ("pmd", "idx", "base", "level")

    def __init__(self, pmd: PageTable, idx: int) -> None:
        self.pmd = pmd
        self.idx = idx
        self.base = pmd.base + (idx << 21)
        self.level = PTE_LEVEL

    @property
    def entries(self) -> _HugeEntries:
        return _HugeEntries(self)

    @property
    def ptl(self) -> Any:
        return self.pmd.ptl

    @property
    def freed_at(self) -> Any:
        return self.pmd.freed_at

    def label(self) -> str:
        return f"huge pmd @{self.base:#x}"


class _HugeEntries:
    __slots__ = ("view",)

    def __init__(self, view: HugePmdView) -> None:
        self.view = view

    def __getitem__(self, i: int) -> int:
        v = self.view
        pmd = v.pmd.entries[v.idx]
        if type(pmd) is not int:
            return 0            # split or zapped since: the caller walks again
        return huge_subpage_pte(pmd, v.base + (i << 12))

    def __setitem__(self, i: int, pte: int) -> None:
        v = self.view
        pmd = v.pmd.entries[v.idx]
        if type(pmd) is int:
            v.pmd.entries[v.idx] = pmd | (pte & (_PAGE_ACCESSED | _PAGE_DIRTY))
