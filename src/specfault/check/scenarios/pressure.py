"""Races against the writers that change page tables without mmap_lock:
reclaim (try_to_unmap through the reverse map, under the PTL only) and
swap-in (do_swap_page, which sleeps on I/O between reading the PTE and
re-checking it).

Layouts (P = the process, threads T0, T1; R = [ page0 | page1 ],
anonymous, read-write; a swap device of 15 slots):

* ``swapped``: page0 and page1 written, page1 paged out (a swap PTE; its
  folio freed) — page0 keeps the tables and the anon_vma in place;
* ``resident``: both written and present (exclusive, on the LRU);
* ``cow_shared``: page0 written, then a fork: C shares it COW (mapcount 2).

A "kswapd" step is a reclaim pass under maximal pressure: every folio on
the LRU is isolated and shrunk with references ignored — what kswapd or
direct reclaim does to a cold page, run by a thread of its own that holds
no mmap_lock (the explorer interleaves it with the faults and syscalls).
"""

from __future__ import annotations

from typing import Any

import specfault as sf
from specfault.check.scenarios.base import MmSpec, access, syscall
from specfault.check.scenarios.races import PAGE, _mmap, _munmap
from specfault.mm.access import mmu_walk
from specfault.mm.pgtable import pte_pfn, pte_present, pte_special
from specfault.mm.vmscan import (
    IsolateLruFolios,
    ScanControl,
    isolate_lru_folios,
    shrink_folio_list,
)

RW = sf.PROT_READ | sf.PROT_WRITE
ANON = sf.MAP_PRIVATE | sf.MAP_ANONYMOUS
SWAP = {"swap_pages": 16}


def swapped(threads: int = 2, out: tuple[int, ...] = (1,)):  # type: ignore[no-untyped-def]
    """Setup: R written, the pages ``out`` paged out to swap."""

    def setup(m: sf.Machine) -> tuple[dict[str, Any], dict[str, int], list[tuple[int, int]]]:
        p = m.spawn("P")
        for _ in range(threads - 1):
            p.thread()
        r = p.mmap(0, 2 * PAGE, RW, ANON)
        p.write(r, b"page0")
        p.write(r + PAGE, b"page1")
        for i in out:
            p.madvise(r + i * PAGE, PAGE, sf.MADV_PAGEOUT)
        return {"P": p}, {"R": r, "R1": r + PAGE}, [(r, r + 2 * PAGE)]

    return setup


def cow_shared(threads: int = 2):  # type: ignore[no-untyped-def]
    """Setup: page0 written, then fork: P and C share it COW."""

    def setup(m: sf.Machine) -> tuple[dict[str, Any], dict[str, int], list[tuple[int, int]]]:
        p = m.spawn("P")
        for _ in range(threads - 1):
            p.thread()
        r = p.mmap(0, 2 * PAGE, RW, ANON)
        p.write(r, b"page0")
        c = p.fork()
        return {"P": p, "C": c}, {"R": r, "R1": r + PAGE}, [(r, r + 2 * PAGE)]

    return setup


def _kswapd(*keys: str):  # type: ignore[no-untyped-def]
    """A reclaim pass, as kswapd runs it (no mmap_lock): isolate the folios
    mapped at ``keys`` when the step starts (every folio on the LRU if no
    key is given) and shrink them, references ignored — the cold end of
    the LRU under maximal pressure."""

    async def run(w: Any, p: Any) -> int:
        kernel = p.mm.kernel
        mem = kernel.mem
        if not keys:
            folios: list[Any] = []
            for lru in range(len(mem.lru)):
                folios += await isolate_lru_folios(mem, lru, len(mem.lru[lru]))
        else:
            def mapped() -> list[Any]:
                want = []
                for key in keys:
                    table = mmu_walk(p.mm, w.addr[key])
                    pte = table.entries[(w.addr[key] >> 12) & 511] if table is not None else 0
                    if pte_present(pte) and not pte_special(pte):
                        want.append(mem.pages[pte_pfn(pte)])
                return want
            folios = await IsolateLruFolios(mem, pages=mapped)
        await shrink_folio_list(kernel, folios, ScanControl(len(folios), kswapd=True,
                                                            ignore_references=True))
        return 0      # how many it freed depends on the interleaving: not a result

    return run


def _pageout(key: str, pages: int):  # type: ignore[no-untyped-def]
    from specfault.mm.madvise import sys_madvise
    return lambda w, p: sys_madvise(p.mm, w.addr[key], pages * PAGE, sf.MADV_PAGEOUT)


async def _fork_write_child_reads(w: Any, p: Any) -> int:
    """fork; the child reads page1 (a swap entry the fork shared, or the
    page T0 brought back), then exits."""
    from specfault.mm.access import user_access
    from specfault.mm.fault import ACCESS_READ
    from specfault.mm.fork import dup_mmap, exit_mmap
    child_mm = await dup_mmap(p.mm)
    seen = await user_access(child_mm, w.addr["R1"], ACCESS_READ, 8)
    await exit_mmap(child_mm)
    return hash(seen) & 0xFFFF


SPECS: list[MmSpec] = [
    MmSpec(
        "swapin-vs-munmap",
        "T0 reads page1, swapped out, while T1 unmaps the region: the swap-in "
        "sleeps on the read and must find the PTE gone when it returns (pte_same "
        "under the PTL); the slot and the folio are freed either way.",
        swapped(), [("P", [access("R1", "read")]), ("P", [syscall("munmap R", _munmap("R", 2))])],
        knobs=SWAP),
    MmSpec(
        "two-swapins",
        "T0 reads and T1 writes page1, swapped out: one reads the slot into a "
        "folio in the swap cache, the other finds it there (or finds the PTE "
        "already restored); one mapping, the slot's count right, no lost write.",
        swapped(), [("P", [access("R1", "read")]), ("P", [access("R1", "write")])],
        knobs=SWAP),
    MmSpec(
        "swapin-vs-fork",
        "T0 writes page1, swapped out, while T1 forks and the child reads "
        "page1 and exits: fork copies the swap entry (one more reference) or "
        "the page T0 brought back; the child sees page1 as it was at the fork.",
        swapped(), [("P", [access("R1", "write")]),
                    ("P", [syscall("fork; child reads R; child exits", _fork_write_child_reads)])],
        knobs=SWAP),
    MmSpec(
        "cow-vs-reclaim",
        "T0 write-faults page0, COW-shared with a forked child C, while kswapd "
        "reclaims it — try_to_unmap through the reverse map turns both PTEs into "
        "swap entries under their PTLs, with no mmap_lock: the COW either copies "
        "first (and its pte_same sees nothing changed) or backs off and swaps "
        "the page in; C keeps the old contents.",
        cow_shared(), [("P", [access("R", "write")]), ("P", [syscall("kswapd R", _kswapd("R"))])],
        knobs=SWAP),
    MmSpec(
        "write-vs-reclaim",
        "T0 reads page1 and writes it four times (through its TLB) while kswapd "
        "swaps the page out: every write lands in the page before it is written "
        "to swap, or faults and swaps it back in — the flush must come before "
        "the write-out and the free.",
        swapped(out=()), [("P", [access("R1", "read"), access("R1", "write", data=b"T0-a"),
                                 access("R1", "write", data=b"T0-b"),
                                 access("R1", "write", data=b"T0-c"),
                                 access("R1", "write", data=b"T0-d")]),
                          ("P", [syscall("kswapd R1", _kswapd("R1"))])],
        knobs=SWAP),
    MmSpec(
        "reclaim-vs-munmap",
        "kswapd reclaims the region's pages while T0 unmaps the region: the "
        "munmap's zap and try_to_unmap both change the PTEs, serialised by the "
        "PTL alone (reclaim holds no mmap_lock); no slot or frame leaks.",
        swapped(out=()), [("P", [syscall("munmap R", _munmap("R", 2))]),
                          ("P", [syscall("kswapd", _kswapd())])],
        knobs=SWAP, linearizable=False),
    MmSpec(
        "fault-vs-pageout",
        "T0 reads page0 and writes page1 while T1 pages the region out "
        "(MADV_PAGEOUT: try_to_unmap through the reverse map): an access that "
        "finds its PTE turned into a swap entry faults the page back, and a "
        "speculative fault's commit sees the rmap walker's change (no "
        "mm_lock_seq bump) in its pte_same check.",
        swapped(out=()), [("P", [access("R", "read"), access("R1", "write")]),
                          ("P", [syscall("madvise PAGEOUT R", _pageout("R", 2))])],
        knobs=SWAP),
    MmSpec(
        "swapin-vs-mmap-fixed",
        "T0 reads page1, swapped out, while T1 maps a fresh mapping over the "
        "region with MAP_FIXED: the swap-in must not install the old page into "
        "the new mapping.",
        swapped(), [("P", [access("R1", "read")]),
                    ("P", [syscall("mmap FIXED over R", lambda w, p: _mmap(
                        p.mm, w.addr["R"], 2 * PAGE, RW, ANON | sf.MAP_FIXED))])],
        knobs=SWAP),
]


def filled(pages: int, threads: int = 2):  # type: ignore[no-untyped-def]
    """Setup: a region of ``pages`` anonymous pages, all but the last two
    written and then made cold (MADV_COLD: old PTEs, the inactive list's
    cold end) — with free memory at the low watermark, so the threads'
    next allocations wake kswapd and (at min) reclaim directly."""

    def setup(m: sf.Machine) -> tuple[dict[str, Any], dict[str, int], list[tuple[int, int]]]:
        p = m.spawn("P")
        for _ in range(threads - 1):
            p.thread()
        r = p.mmap(0, pages * PAGE, RW, ANON)
        for i in range(pages - 2):
            p.write(r + i * PAGE, b"old%d" % i)
        p.madvise(r, (pages - 2) * PAGE, sf.MADV_COLD)
        m.kernel.kswapd_wait = False            # the setup's own wakeups are over
        last = r + (pages - 2) * PAGE
        return {"P": p}, {"R": r, "R1": r + PAGE, "N0": last, "N1": last + PAGE}, \
            [(r, r + pages * PAGE)]

    return setup


SPECS += [
    MmSpec(
        "faults-under-pressure",
        "T0 and T1 write-fault new pages with free memory at the watermarks: "
        "their allocations wake kswapd and, below min, reclaim directly — "
        "swapping out the region's old pages through the reverse map while "
        "kswapd (an actor of its own) does the same and T1 reads an old page "
        "back; every page keeps its contents.",
        filled(9), [("P", [access("N0", "write"), access("R", "read")]),
                    ("P", [access("N1", "write"), access("R1", "read")])],
        knobs={"swap_pages": 16, "watermark_min": 2}, frames=10, kswapd=True),
]
