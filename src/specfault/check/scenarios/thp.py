"""Races against the writers of huge PMDs (mm/huge_memory.py,
mm/khugepaged.py): khugepaged's collapse, which replaces a PTE table by a
huge PMD under mmap_lock (write), and the split of a huge PMD under
mmap_lock (read).

Layout (P = the process, threads T0, T1; H = the first pages of a 2 MiB-
aligned, 2 MiB anonymous read-write VMA with MADV_HUGEPAGE):

* ``small``: page0 written before MADV_HUGEPAGE — a PTE table of small
  pages, which khugepaged may collapse; page1 none;
* ``zero_thp``: page0 read after MADV_HUGEPAGE — the huge zero page
  mapped by a huge PMD.

A "khugepaged" step is one pass of khugepaged's scan over P's mm
(khugepaged_scan_mm: hpage_collapse_scan_pmd, then collapse_huge_page),
run by a thread of its own that holds no lock on entry.  The machine has
1100 frames: two 512-aligned blocks, one left free for a THP.
"""

from __future__ import annotations

from typing import Any

import specfault as sf
from specfault.check.scenarios.base import MmSpec, access, syscall
from specfault.mm.pgtable import HPAGE_PMD_NR, HPAGE_PMD_SIZE

PAGE = 4096
RW = sf.PROT_READ | sf.PROT_WRITE
ANON = sf.MAP_PRIVATE | sf.MAP_ANONYMOUS
FRAMES = 1100


def _region(m: sf.Machine, threads: int) -> tuple[Any, int]:
    p = m.spawn("P")
    for _ in range(threads - 1):
        p.thread()
    r = p.mmap(0, 2 * HPAGE_PMD_SIZE, RW, ANON)
    h = (r + HPAGE_PMD_SIZE - 1) & ~(HPAGE_PMD_SIZE - 1)
    if h > r:
        p.munmap(r, h - r)
    if r + 2 * HPAGE_PMD_SIZE > h + HPAGE_PMD_SIZE:
        p.munmap(h + HPAGE_PMD_SIZE, r + HPAGE_PMD_SIZE - h)
    return p, h


def small(threads: int = 2):  # type: ignore[no-untyped-def]
    """Setup: page0 written (a small page, a PTE table), then MADV_HUGEPAGE."""

    def setup(m: sf.Machine) -> tuple[dict[str, Any], dict[str, int], list[tuple[int, int]]]:
        p, h = _region(m, threads)
        p.write(h, b"page0")
        p.madvise(h, HPAGE_PMD_SIZE, sf.MADV_HUGEPAGE)
        return {"P": p}, {"H": h, "H1": h + PAGE}, [(h, h + 2 * PAGE)]

    return setup


def zero_thp(threads: int = 2):  # type: ignore[no-untyped-def]
    """Setup: MADV_HUGEPAGE, then page0 read: the huge zero page."""

    def setup(m: sf.Machine) -> tuple[dict[str, Any], dict[str, int], list[tuple[int, int]]]:
        p, h = _region(m, threads)
        p.madvise(h, HPAGE_PMD_SIZE, sf.MADV_HUGEPAGE)
        p.read(h, 1)
        return {"P": p}, {"H": h, "H1": h + PAGE}, [(h, h + 2 * PAGE)]

    return setup


async def _khugepaged(w: Any, p: Any) -> int:
    """One khugepaged pass over P's mm (no lock held on entry)."""
    from specfault.mm.khugepaged import khugepaged_scan_mm
    await khugepaged_scan_mm(p.mm, HPAGE_PMD_NR)
    return 0          # whether it collapsed depends on the interleaving: not a result


def _dontneed(key: str, pages: int):  # type: ignore[no-untyped-def]
    from specfault.mm.madvise import sys_madvise
    return lambda w, p: sys_madvise(p.mm, w.addr[key], pages * PAGE, sf.MADV_DONTNEED)


SPECS: list[MmSpec] = [
    MmSpec(
        "fault-vs-khugepaged",
        "T0 write-faults page1 (none, in a PTE table of small pages) while "
        "khugepaged collapses the range into a THP: mmap_lock (write) holds "
        "the classic fault off, the VMA write lock the per-VMA one; a "
        "speculative fault that walked to the old table must not commit into "
        "it once the PMD changed (mm_lock_seq, or under Dufour's per-VMA "
        "sequence the commit's pmd_same: the collapse leaves the VMA's "
        "sequence alone) — else its page is mapped by an orphaned table.",
        small(), [("P", [access("H1", "write")]), ("P", [syscall("khugepaged", _khugepaged)])],
        frames=FRAMES),
    MmSpec(
        "huge-zero-wp-vs-split",
        "T0 writes page1, mapped read-only by the huge zero page (a new THP "
        "replaces it: do_huge_zero_wp_pmd, under mmap_lock read or the VMA "
        "lock), while T1 zaps page0 with MADV_DONTNEED (mmap_lock read): the "
        "zap splits the huge PMD. Whichever takes the PMD lock second sees "
        "the PMD changed (pmd_same) and backs off: T0's fault retries on the "
        "PTEs, or the zap splits T0's new THP.",
        zero_thp(), [("P", [access("H1", "write", data=b"T0")]),
                     ("P", [syscall("madvise DONTNEED H", _dontneed("H", 1))])],
        frames=FRAMES),
]
