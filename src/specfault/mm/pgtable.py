"""x86-64 page tables: 4 levels of 512 entries, 4 KiB pages, split PTLs.

A PTE is an ``int`` laid out as on x86-64 (arch/x86/include/asm/pgtable_types.h):
bit 0 present, 1 RW, 2 user, 5 accessed, 6 dirty, 8 PROTNONE (a PROT_NONE
mapping: present to the kernel, not to the MMU), 9 special (the zero page),
11 soft-dirty, 63 NX; PFN in bits 12-51.  ``0`` is pte_none.  Upper levels
hold :class:`PageTable` objects (or None), so ``pmd_same`` is identity.

Fields
------
PageTable
# PTE level: protected by ``ptl`` (split PTL, one per PTE table); lockless
# readers (the MMU, speculative faults, GUP-fast) use LoadItem ops.
# upper levels: populated under mm.page_table_lock, cleared by
# free_pgtables under mmap_lock (write).
    entries   512 slots
    nr        number of non-empty slots
# immutable
    level (1 = PTE ... 4 = PGD), base (first address covered), ptl
"""

from __future__ import annotations

from typing import Any

from specfault.runtime import KObject
from specfault.sync import SpinLock

PTRS_PER_TABLE = 512
LEVEL_SHIFT = {1: 12, 2: 21, 3: 30, 4: 39}
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


def walk(pgd: PageTable, addr: int) -> tuple[PageTable, int] | None:
    """The MMU's walk (and any walker holding the PTL of the result or
    mmap_lock): the PTE table and index for ``addr``, or None if a level is
    missing.  No ops: callers that race with table freeing wrap it in one."""
    t: Any = pgd
    for level in (4, 3, 2):
        t = t.entries[(addr >> LEVEL_SHIFT[level]) & 511]
        if t is None:
            return None
    return t, (addr >> 12) & 511


def walk_pmd(pgd: PageTable, addr: int) -> PageTable | None:
    """The PMD-level table covering ``addr`` (or None)."""
    t: Any = pgd
    for level in (4, 3):
        t = t.entries[(addr >> LEVEL_SHIFT[level]) & 511]
        if t is None:
            return None
    return t  # type: ignore[no-any-return]


def get_pte(pgd: PageTable, addr: int) -> int:
    found = walk(pgd, addr)
    if found is None:
        return 0
    table, idx = found
    return table.entries[idx]  # type: ignore[no-any-return]


def iter_pte_tables(table: PageTable, lo: int, hi: int):  # type: ignore[no-untyped-def]
    """Yield (pte_table) for every PTE table overlapping [lo, hi)."""
    if table.level == 1:
        yield table
        return
    shift = LEVEL_SHIFT[table.level]
    span = 1 << shift
    first = max(0, (lo - table.base) >> shift)
    last = min(511, (hi - 1 - table.base) >> shift)
    for i in range(first, last + 1):
        child = table.entries[i]
        if child is not None:
            yield from iter_pte_tables(child, max(lo, table.base + i * span),
                                       min(hi, table.base + (i + 1) * span))


def pte_soft_dirty(pte: int) -> bool:
    return bool(pte & _PAGE_SOFT_DIRTY)
