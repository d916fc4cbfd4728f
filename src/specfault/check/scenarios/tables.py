"""Races against the writers that replace or free page tables, or change
PTEs, under mmap_lock for *read* or under no mmap_lock at all: empty
PTE-table reclaim on MADV_DONTNEED (mm/pt_reclaim.py) and page migration
by kcompactd (mm/migrate.py), and mremap's move_ptes against the reverse
map's writers.

Layouts (P = the process, threads T0, T1):

    R:  [ page0 | page1 | ... 512 pages ... ]   anonymous, read-write,
        exactly one PMD's range (2 MiB, PMD-aligned), page0 written — so
        the PTE table and the anon_vma exist and a speculative fault has
        something to speculate on; MADV_DONTNEED of the whole of R empties
        the table and reclaims it (CONFIG_PT_RECLAIM)

The region checked (maps, contents, reverse map, TLBs) is R's first two
pages.

    R:  [ page0 | page1 ]   anonymous, read-write, both written (resident,
        on the LRU: what kcompactd migrates), or page0 COW-shared with a
        forked child C (``cow_shared``)

A "kcompactd" actor (``MmSpec.kcompactd``) is a kernel thread that makes
one compaction pass whenever the explorer runs it: each movable folio
migrated to a free frame at the top of memory — its PTEs replaced by
migration entries under their PTLs (no mmap_lock), the contents copied,
the entries replaced by PTEs of the copy.
"""

from __future__ import annotations

from typing import Any

import specfault as sf
from specfault.check.scenarios.base import MmSpec, access, syscall
from specfault.check.scenarios.pressure import SWAP, _kswapd, cow_shared, swapped
from specfault.check.scenarios.races import _mprotect
from specfault.mm.madvise import sys_madvise
from specfault.mm.mremap import sys_mremap
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


def _dontneed(key: str, pages: int):  # type: ignore[no-untyped-def]
    return lambda w, p: sys_madvise(p.mm, w.addr[key], pages * PAGE, sf.MADV_DONTNEED)


def _mremap_below(key: str, pages: int):  # type: ignore[no-untyped-def]
    """mremap(MAYMOVE|FIXED) of ``pages`` at ``key`` to one PMD below it
    (another PTE table: move_ptes holds both PTLs)."""
    return lambda w, p: sys_mremap(p.mm, w.addr[key], pages * PAGE, pages * PAGE,
                                   sf.MREMAP_MAYMOVE | sf.MREMAP_FIXED,
                                   w.addr[key] - PMD_SIZE)


def moved_below(setup):  # type: ignore[no-untyped-def]
    """``setup``, plus the region one PMD below R observed (where the
    mremap moves it)."""

    def wrapped(m: sf.Machine) -> tuple[dict[str, Any], dict[str, int], list[tuple[int, int]]]:
        procs, addr, region = setup(m)
        lo, hi = region[0]
        return procs, addr, region + [(lo - PMD_SIZE, hi - PMD_SIZE)]

    return wrapped


SPECS += [
    MmSpec(
        "fault-vs-migration",
        "T0 writes page0 and reads page1, T1 writes page1 and reads page0, "
        "while kcompactd migrates both: a fault that finds a migration entry "
        "waits for the folio's lock (migration_entry_wait; a speculative fault "
        "aborts first) and faults again into the copy; no store is lost "
        "between the unmap and the copy (the batched flush comes first).",
        swapped(out=()), [("P", [access("R", "write"), access("R1", "read")]),
                          ("P", [access("R1", "write"), access("R", "read")])],
        kcompactd=True),
    MmSpec(
        "cow-vs-migration",
        "T0 write-faults page0, COW-shared with a forked child C, while T1 "
        "reads it and kcompactd migrates it: both PTEs become readable "
        "migration entries (the page is not exclusive), the copy is mapped "
        "read-only in both, and the COW breaks on the copy or on the "
        "original — C keeps the old contents.",
        cow_shared(), [("P", [access("R", "write")]), ("P", [access("R", "read")])],
        kcompactd=True),
    MmSpec(
        "dontneed-vs-migration",
        "T0 zaps the region with MADV_DONTNEED (mmap_lock for read) while T1 "
        "writes page1 and kcompactd migrates both pages: a zapped migration "
        "entry drops its page's RSS, and remove_migration_ptes finds it gone; "
        "the copy is freed.",
        swapped(out=()), [("P", [syscall("madvise DONTNEED R", _dontneed("R", 2))]),
                          ("P", [access("R1", "write")])],
        kcompactd=True, linearizable=False),
    MmSpec(
        "mprotect-vs-migration",
        "T0 makes the region read-only while T1 reads page0 and kcompactd "
        "migrates both pages: mprotect turns a writable migration entry into "
        "a readable one (change_pte_range), so the copy is not mapped "
        "writable in a read-only VMA.",
        swapped(out=()), [("P", [syscall("mprotect R read-only",
                                         _mprotect("R", 2, sf.PROT_READ))]),
                          ("P", [access("R", "read")])],
        kcompactd=True),
    MmSpec(
        "mremap-vs-reclaim",
        "T0 moves the region one PMD down (mremap: move_ptes under both PTLs, "
        "mmap_lock for write) while kswapd swaps its pages out through the "
        "reverse map (no mmap_lock, the source PTL only): each PTE is moved "
        "whole — present, or the swap entry reclaim wrote — never both, "
        "never neither.",
        moved_below(swapped(out=())),
        [("P", [syscall("mremap R one PMD down", _mremap_below("R", 2))]),
         ("P", [syscall("kswapd R", _kswapd("R", "R1"))])],
        knobs=SWAP, linearizable=False),
]
