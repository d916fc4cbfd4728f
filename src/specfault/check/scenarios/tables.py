"""Races against the writers that replace or free page tables, or change
PTEs, under mmap_lock for *read* or under no mmap_lock at all: empty
PTE-table reclaim on MADV_DONTNEED (mm/pt_reclaim.py).

Layout (P = the process, threads T0, T1):

    R:  [ page0 | page1 | ... 512 pages ... ]   anonymous, read-write,
        exactly one PMD's range (2 MiB, PMD-aligned), page0 written — so
        the PTE table and the anon_vma exist and a speculative fault has
        something to speculate on; MADV_DONTNEED of the whole of R empties
        the table and reclaims it (CONFIG_PT_RECLAIM)

The region checked (maps, contents, reverse map, TLBs) is R's first two
pages.
"""

from __future__ import annotations

from typing import Any

import specfault as sf
from specfault.check.scenarios.base import MmSpec, access, syscall
from specfault.mm.madvise import sys_madvise
from specfault.mm.pgtable import PMD_SIZE

PAGE = 4096
RW = sf.PROT_READ | sf.PROT_WRITE
ANON = sf.MAP_PRIVATE | sf.MAP_ANONYMOUS
#: where R goes: PMD-aligned, clear of anything else the setup maps
R_ADDR = 0x40000000


def pmd_region(touch: tuple[int, ...] = (0,), threads: int = 2):  # type: ignore[no-untyped-def]
    """Setup: R (one PMD's range at R_ADDR), the pages ``touch`` written."""

    def setup(m: sf.Machine) -> tuple[dict[str, Any], dict[str, int], list[tuple[int, int]]]:
        p = m.spawn("P")
        for _ in range(threads - 1):
            p.thread()
        r = p.mmap(R_ADDR, PMD_SIZE, RW, ANON | sf.MAP_FIXED_NOREPLACE)
        for i in touch:
            p.write(r + i * PAGE, b"init")
        return {"P": p}, {"R": r, "R1": r + PAGE}, [(r, r + 2 * PAGE)]

    return setup


def _dontneed_pmd(key: str):  # type: ignore[no-untyped-def]
    """MADV_DONTNEED of the whole PMD's range at ``key``: zaps it and
    reclaims the emptied PTE table."""
    return lambda w, p: sys_madvise(p.mm, w.addr[key], PMD_SIZE, sf.MADV_DONTNEED)


SPECS: list[MmSpec] = [
    MmSpec(
        "fault-vs-table-reclaim",
        "T0 reads page0 and write-faults page1 (none: a new page) while T1 "
        "zaps the whole PMD with MADV_DONTNEED, which frees the emptied PTE "
        "table (mmap_lock for read: no sequence count moves, and no VMA is "
        "locked): the fault re-checks the PMD under the PTL (pmd_same) and "
        "faults again into a new table; the reclaimed table is freed only "
        "after a grace period, so the lockless walks that found it read live "
        "memory.",
        pmd_region(), [("P", [access("R", "read"), access("R1", "write")]),
                       ("P", [syscall("madvise DONTNEED R (2 MiB)", _dontneed_pmd("R"))])]),
]
