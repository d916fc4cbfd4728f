"""check_mm(): the structural invariants of an address space and of the
machine's page accounting, checkable after any operation.

Every check is an executable statement of a rule from the kernel:

* the VMA tree is ordered, non-overlapping, balanced, and agrees with the
  VMAs' own vm_start/vm_end; map_count matches; no VMA in it is freed;
* every present PTE lies inside a VMA and is no more permissive than it:
  writable only if VM_WRITE, executable only if VM_EXEC, user-accessible
  only if the VMA is accessible; in a private (COW) mapping a writable PTE
  maps an exclusive anonymous page — anything else lets a write reach a
  page another mm can see;
* page tables count their entries correctly and none reachable is freed;
* each page's mapcount equals the PTEs that map it (over every live mm),
  its refcount equals mapcount + the page cache's reference, and no frame
  is allocated without an owner (no leaks) — these hold whenever no fault
  or syscall is in flight (quiescent=True);
* the mm's RSS counters equal the pages its PTEs map;
* the reverse map finds every PTE (``properties.rmap_problem``): an
  anonymous page's anon_vma is on its VMA's chain and its index is the
  VMA's linear index of the address; a file page is in its file's page
  cache at that index and its VMA among the file's mappings.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from specfault.check.pressure_invariants import pressure_problems
from specfault.check.properties import rmap_problem
from specfault.mm.mmu_gather import rss_kind
from specfault.mm.pgtable import (
    _PAGE_NX,
    _PAGE_PRESENT,
    _PAGE_PROTNONE,
    PMD_SIZE,
    PageTable,
    is_migration_pte,
    is_swap_pte,
    pte_pfn,
    pte_present,
    pte_special,
    pte_to_swp_entry,
    pte_write,
    swp_offset_pfn,
)
from specfault.mm.swap_state import folio_test_locked
from specfault.mm.vma import VM_EXEC, VM_READ, VM_SHARED, VM_WRITE
from specfault.runtime import ModelBug


class InvariantViolation(ModelBug):
    """check_mm() found the structure broken; ``problems`` lists how."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        shown = "\n  ".join(problems[:12])
        more = f"\n  ... and {len(problems) - 12} more" if len(problems) > 12 else ""
        super().__init__(f"check_mm: {len(problems)} invariant(s) violated:\n  {shown}{more}")


def _tables(t: PageTable, out: list[PageTable]) -> None:
    out.append(t)
    if t.level > 1:
        for c in t.entries:
            if c is not None and type(c) is not int:      # an int: a huge PMD
                _tables(c, out)


def _huge_pmds(tables: list[PageTable]) -> list[tuple[int, int]]:
    """(address, entry) of every huge PMD in ``tables``."""
    return [(t.base + (i << 21), e) for t in tables if t.level == 2
            for i, e in enumerate(t.entries) if type(e) is int]


def mm_problems(mm: Any, quiescent: bool = True) -> list[str]:
    problems: list[str] = []
    if mm.dead:
        return problems
    tree = mm.mm_mt
    problems += [f"vma tree: {p}" for p in tree.check()]
    items = list(tree.items())
    if len(items) != mm.map_count:
        problems.append(f"map_count {mm.map_count} != {len(items)} VMAs in the tree")
    last = 0
    for start, end, vma in items:
        if vma.freed_at is not None:
            problems.append(f"tree holds freed {vma.label()} ({vma.freed_at})")
        if (vma.vm_start, vma.vm_end) != (start, end):
            problems.append(f"{vma.label()} but the tree says {start:#x}-{end:#x}")
        if vma.vm_start & 0xFFF or vma.vm_end & 0xFFF or vma.vm_start >= vma.vm_end:
            problems.append(f"{vma.label()}: bad range")
        if vma.vm_start < last:
            problems.append(f"{vma.label()} overlaps the previous VMA")
        if vma.vm_mm is not mm:
            problems.append(f"{vma.label()} belongs to another mm")
        if vma.detached:
            problems.append(f"{vma.label()} is in the tree but marked detached")
        if quiescent and vma.vm_ref_count:
            problems.append(f"{vma.label()}: vm_ref_count {vma.vm_ref_count} with no fault "
                            f"running (a speculative fault's pin was not dropped)")
        last = vma.vm_end
    # page tables
    tables: list[PageTable] = []
    _tables(mm.pgd, tables)
    rss: Counter[str] = Counter()
    mappings: dict[int, list[Any]] = {}
    for t in tables:
        if t.freed_at is not None:
            problems.append(f"{t.label()} reachable but freed ({t.freed_at})")
        nr = sum(1 for e in t.entries if e) if t.level == 1 else \
            sum(1 for e in t.entries if e is not None)
        if nr != t.nr:
            problems.append(f"{t.label()}: nr {t.nr} but {nr} entries")
        if t.level != 1:
            for i, c in enumerate(t.entries):
                if c is not None and type(c) is not int and \
                        (c.level != t.level - 1 or c.base != t.base + i * c.span()):
                    problems.append(f"{t.label()}[{i}] holds misplaced {c.label()}")
            continue
        for i, pte in enumerate(t.entries):
            if not pte:
                continue
            addr = t.base + (i << 12)
            vma = tree.find(addr)
            if vma is None or vma.vm_start > addr:
                problems.append(f"PTE {pte:#x} at {addr:#x} outside every VMA")
                continue
            if not pte_present(pte):
                if not is_swap_pte(pte):
                    problems.append(f"non-present non-none PTE {pte:#x} at {addr:#x}")
                elif is_migration_pte(pte):
                    # a migration entry (mm/migrate.py) is not a mapping: it
                    # counts as its page's RSS, and the migrator holds the
                    # page locked until it replaces the entry
                    page = mm.kernel.mem.pages.get(swp_offset_pfn(pte_to_swp_entry(pte)))
                    if page is None:
                        problems.append(f"migration entry at {addr:#x} names a free frame")
                        continue
                    rss[rss_kind(page)] += 1
                    if quiescent:
                        problems.append(f"migration entry at {addr:#x} left behind "
                                        f"for {page!r}")
                    elif not folio_test_locked(page):
                        problems.append(f"migration entry at {addr:#x} for unlocked {page!r}")
                continue                 # swap PTEs: pressure_invariants.swap_problems
            flags = vma.vm_flags
            if pte_write(pte) and not flags & VM_WRITE:
                problems.append(f"writable PTE at {addr:#x} in {vma.label()} without VM_WRITE")
            if pte & _PAGE_PRESENT and not flags & (VM_READ | VM_WRITE | VM_EXEC):
                problems.append(f"accessible PTE at {addr:#x} in an inaccessible VMA")
            if pte & _PAGE_PRESENT and not pte & _PAGE_NX and not flags & VM_EXEC:
                problems.append(f"executable PTE at {addr:#x} in {vma.label()} without VM_EXEC")
            if pte_special(pte):
                if pte_pfn(pte) != mm.kernel.mem.zero_page.pfn:
                    problems.append(f"special PTE at {addr:#x} is not the zero page")
                if pte_write(pte):
                    problems.append(f"writable zero-page PTE at {addr:#x}")
                continue
            page = mm.kernel.mem.pages.get(pte_pfn(pte))
            if page is None:
                problems.append(f"PTE at {addr:#x} maps free pfn {pte_pfn(pte):#x}")
                continue
            rss[rss_kind(page)] += 1
            bad = rmap_problem(mm.kernel, vma, addr, page, mappings)
            if bad is not None:
                problems.append(f"rmap: {bad}")
            if pte_write(pte) and not flags & VM_SHARED:
                if not page.anon or not page.anon_exclusive:
                    problems.append(f"writable PTE at {addr:#x} in a private mapping maps a "
                                    f"non-exclusive page {page!r} (COW broken)")
    for addr, entry in _huge_pmds(tables):
        problems += _huge_pmd_problems(mm, addr, entry, rss, mappings, quiescent)
    if quiescent:
        for kind in ("anon", "file", "shmem"):
            if mm.rss[kind] != rss[kind]:
                problems.append(f"rss[{kind}] is {mm.rss[kind]} but PTEs map {rss[kind]}")
    return problems


def _huge_pmd_problems(mm: Any, addr: int, entry: int, rss: Counter[str],
                       mappings: dict[int, list[Any]], quiescent: bool) -> list[str]:
    """A huge PMD at ``addr``: inside one private anonymous VMA whole, no
    more permissive than it; the huge zero page read-only; a THP's 512
    pages one folio, alive, indexed for the reverse map, exclusive when
    writable.  Counts its pages in ``rss``."""
    problems: list[str] = []
    mem = mm.kernel.mem
    vma = mm.mm_mt.find(addr)
    if vma is None or vma.vm_start > addr or vma.vm_end < addr + PMD_SIZE:
        return [f"huge PMD {entry:#x} at {addr:#x} not inside one VMA"]
    flags = vma.vm_flags
    if vma.vm_file is not None or flags & VM_SHARED:
        problems.append(f"huge PMD at {addr:#x} in a file or shared {vma.label()}")
    if not entry & (_PAGE_PRESENT | _PAGE_PROTNONE):
        if quiescent:
            problems.append(f"huge PMD {entry:#x} at {addr:#x} not present (left invalidated)")
        return problems
    if pte_write(entry) and not flags & VM_WRITE:
        problems.append(f"writable huge PMD at {addr:#x} in {vma.label()} without VM_WRITE")
    if entry & _PAGE_PRESENT and not entry & _PAGE_NX and not flags & VM_EXEC:
        problems.append(f"executable huge PMD at {addr:#x} in {vma.label()} without VM_EXEC")
    if pte_special(entry):
        if not mem.is_huge_zero_pfn(pte_pfn(entry)) or pte_pfn(entry) & 511:
            problems.append(f"special huge PMD at {addr:#x} is not the huge zero page")
        if pte_write(entry):
            problems.append(f"writable huge zero PMD at {addr:#x}")
        return problems
    head = mem.pages.get(pte_pfn(entry))
    if head is None or head.compound_head is not head or pte_pfn(entry) & 511:
        return problems + [f"huge PMD at {addr:#x} maps {head!r}, not the head of a THP"]
    if head.entire_mapcount < 1:
        problems.append(f"THP {head!r} mapped by a PMD with entire_mapcount "
                        f"{head.entire_mapcount}")
    for i in range(512):
        page = mem.pages.get(head.pfn + i)
        if page is None or page.compound_head is not head:
            problems.append(f"THP at {addr:#x}: page {i} is not in the folio")
            continue
        rss[rss_kind(page)] += 1
        bad = rmap_problem(mm.kernel, vma, addr + (i << 12), page, mappings)
        if bad is not None:
            problems.append(f"rmap: {bad}")
        if pte_write(entry) and not (page.anon and page.anon_exclusive):
            problems.append(f"writable huge PMD at {addr:#x} maps non-exclusive {page!r} "
                            f"(COW broken)")
    return problems


def kernel_problems(kernel: Any, quiescent: bool = True) -> list[str]:
    """Page accounting over every live mm and the page caches."""
    problems: list[str] = []
    mem = kernel.mem
    mapped: Counter[int] = Counter()
    pmds: Counter[int] = Counter()         # head pfn -> huge PMDs mapping the THP
    for mm in kernel.mms:
        if mm.dead:
            continue
        tables: list[PageTable] = []
        _tables(mm.pgd, tables)
        for t in tables:
            if t.level == 1:
                for pte in t.entries:
                    if pte and pte_present(pte) and not pte_special(pte):
                        mapped[pte_pfn(pte)] += 1
        for _addr, entry in _huge_pmds(tables):
            if not pte_special(entry):
                pmds[pte_pfn(entry)] += 1
                for i in range(512):
                    mapped[pte_pfn(entry) + i] += 1
    cached: Counter[int] = Counter()
    for inode in _inodes(kernel):
        for idx, page in inode.pages.items():
            cached[page.pfn] += 1
            if page.mapping is not inode or page.index != idx:
                problems.append(f"page cache of {inode.path}[{idx}] holds {page!r} "
                                f"indexed {page.index}")
    for pfn, page in mem.pages.items():
        if page.zero:
            continue
        if page.freed:
            problems.append(f"freed {page!r} still in the pfn map")
        if page.mapcount != mapped[pfn]:
            problems.append(f"{page!r}: mapcount {page.mapcount} but {mapped[pfn]} PTEs map it")
        if quiescent:
            want = mapped[pfn] + cached[pfn] + int(page.swapcache)
            if page.refcount != want:
                what = "leaked (no mapping, not cached)" if want == 0 else f"expected {want}"
                problems.append(f"{page!r}: refcount {page.refcount}, {what}")
        if page.compound_head is page and page.entire_mapcount != pmds[pfn]:
            problems.append(f"THP {page!r}: entire_mapcount {page.entire_mapcount} but "
                            f"{pmds[pfn]} PMDs map it")
        if page.anon_exclusive and page.mapcount > 1:
            problems.append(f"{page!r} is AnonExclusive but mapped {page.mapcount} times")
    for pfn in mapped:
        if pfn not in mem.pages:
            problems.append(f"a PTE maps free pfn {pfn:#x}")
    if quiescent:
        for vma in kernel.vma_free_deferred.values():
            problems.append(f"{vma.label()} never freed: vm_ref_count {vma.vm_ref_count} "
                            f"(a speculative fault's pin was not dropped)")
    problems += pressure_problems(kernel, quiescent)
    allocated = sum(1 for pfn in mem.pages if pfn >= mem.FIRST_PFN)   # not the zero pages
    if allocated + len(mem.free_pfns) != mem.nr_frames:
        problems.append(f"frames lost: {allocated} allocated + {len(mem.free_pfns)} "
                        f"free != {mem.nr_frames}")
    return problems


def _inodes(kernel: Any) -> list[Any]:
    seen = {id(i): i for i in kernel.fs.inodes.values()}
    for mm in kernel.mms:
        if mm.dead:
            continue
        for vma in mm.vmas():
            if vma.vm_file is not None:
                seen[id(vma.vm_file.inode)] = vma.vm_file.inode
    seen.update({id(i): i for i in kernel.fs.shmem_inodes})
    return list(seen.values())


def check_mm(mm: Any, quiescent: bool = True) -> None:
    """Raise InvariantViolation if ``mm`` (or the machine's page accounting)
    is broken.  ``quiescent``: no operation is in flight, so temporary page
    references and RSS updates have settled."""
    problems = mm_problems(mm, quiescent) + kernel_problems(mm.kernel, quiescent)
    if problems:
        raise InvariantViolation(problems)


def check_kernel(kernel: Any, quiescent: bool = True) -> None:
    problems = kernel_problems(kernel, quiescent)
    for mm in kernel.mms:
        problems += mm_problems(mm, quiescent)
    if problems:
        raise InvariantViolation(problems)
