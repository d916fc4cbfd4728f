"""The races: each a few threads on a small address space.

Layouts (P = the process, its threads T0, T1; pages of the region R):

    R:  [ page0 | page1 ]   anonymous, read-write, page0 faulted in
                            (so the tables and the anon_vma exist and a
                            speculative fault has something to speculate on)
"""

from __future__ import annotations

from typing import Any

import specfault as sf
from specfault.check.scenarios.base import MmSpec, access, syscall
from specfault.mm.fork import dup_mmap, exit_mmap
from specfault.mm.madvise import sys_madvise
from specfault.mm.mmap import sys_mmap, sys_munmap
from specfault.mm.mprotect import sys_mprotect
from specfault.mm.mremap import sys_mremap

RW = sf.PROT_READ | sf.PROT_WRITE
ANON = sf.MAP_PRIVATE | sf.MAP_ANONYMOUS
PAGE = 4096


def region(pages: int = 2, touch: tuple[int, ...] = (0,), threads: int = 2,
           length_override: int | None = None,
           also: tuple[int, ...] = ()):  # type: ignore[no-untyped-def]
    """Setup: one process, ``pages`` anonymous RW pages, some written.
    ``also``: page offsets from R of other places to observe (where the
    region may move to)."""

    def setup(m: sf.Machine) -> tuple[dict[str, Any], dict[str, int], list[tuple[int, int]]]:
        p = m.spawn("P")
        for _ in range(threads - 1):
            p.thread()
        length = length_override or pages * PAGE
        r = p.mmap(0, length, RW, ANON)
        for i in touch:
            p.write(r + i * PAGE, b"init")
        extra = [(r + off * PAGE, r + (off + pages) * PAGE) for off in also]
        return {"P": p}, {"R": r, "R1": r + PAGE}, [(r, r + pages * PAGE)] + extra

    return setup


async def _mmap(mm: Any, addr: int, length: int, prot: int, flags: int) -> int:
    """mmap(2) of anonymous memory: the address or -errno."""
    ret, _populate = await sys_mmap(mm, addr, length, prot, flags, None, 0)
    return ret


def _munmap(key: str, pages: int):  # type: ignore[no-untyped-def]
    return lambda w, p: sys_munmap(p.mm, w.addr[key], pages * PAGE)


def _mprotect(key: str, pages: int, prot: int):  # type: ignore[no-untyped-def]
    return lambda w, p: sys_mprotect(p.mm, w.addr[key], pages * PAGE, prot)


async def _fork_and_exit(w: Any, p: Any) -> int:
    """fork, let the child read page0 (what it sees is part of the
    history), then the child exits."""
    from specfault.mm.access import user_access
    from specfault.mm.fault import ACCESS_READ
    child_mm = await dup_mmap(p.mm)
    seen = await user_access(child_mm, w.addr["R"], ACCESS_READ, 8)
    await exit_mmap(child_mm)
    return hash(seen) & 0xFFFF


def forked(touch: tuple[int, ...] = (0,), threads: int = 2):  # type: ignore[no-untyped-def]
    """Setup: as :func:`region`, then fork a child C that stays alive, so
    the written pages are COW-shared (read-only in both)."""
    base = region(touch=touch, threads=threads)

    def setup(m: sf.Machine) -> tuple[dict[str, Any], dict[str, int], list[tuple[int, int]]]:
        procs, addr, reg = base(m)
        procs["C"] = procs["P"].fork()
        return procs, addr, reg

    return setup


def zero_mapped(threads: int = 2):  # type: ignore[no-untyped-def]
    """Setup: page0 written (tables, anon_vma), page1 read: the zero page."""
    base = region(threads=threads)

    def setup(m: sf.Machine) -> tuple[dict[str, Any], dict[str, int], list[tuple[int, int]]]:
        procs, addr, reg = base(m)
        procs["P"].read(addr["R1"], 1)
        return procs, addr, reg

    return setup


SPECS: list[MmSpec] = [
    MmSpec(
        "fault-vs-munmap",
        "T0 write-faults page1 while T1 unmaps the region: the fault either "
        "lands before the unmap or gets SIGSEGV; it never maps a page after it.",
        region(), [("P", [access("R1", "write")]), ("P", [syscall("munmap R", _munmap("R", 2))])]),
    MmSpec(
        "fault-vs-mprotect",
        "T0 write-faults page1 while T1 makes the region read-only: no writable "
        "PTE may survive in a read-only VMA.",
        region(), [("P", [access("R1", "write")]),
                   ("P", [syscall("mprotect R ro", _mprotect("R", 2, sf.PROT_READ))])]),
    MmSpec(
        "read-then-write-vs-mprotect",
        "T0 reads then writes page1 (zero page, then COW) while T1 makes it "
        "read-only.",
        region(), [("P", [access("R1", "read"), access("R1", "write")]),
                   ("P", [syscall("mprotect R ro", _mprotect("R", 2, sf.PROT_READ))])]),
    MmSpec(
        "fault-vs-mremap",
        "T0 write-faults page1 while T1 moves the region elsewhere "
        "(MREMAP_MAYMOVE|MREMAP_FIXED): the page is written at the old place "
        "before the move (and moves with it) or faults after.",
        region(pages=2, also=(-16,)), [
            ("P", [access("R1", "write")]),
            ("P", [syscall("mremap R -> R-64K", lambda w, p: sys_mremap(
                p.mm, w.addr["R"], 2 * PAGE, 2 * PAGE, sf.MREMAP_MAYMOVE | sf.MREMAP_FIXED,
                w.addr["R"] - 16 * PAGE))])]),
    MmSpec(
        "fault-vs-mmap-fixed",
        "T0 write-faults page1 while T1 maps a read-only mapping over the region "
        "with MAP_FIXED: the fault never installs its page into the new mapping.",
        region(), [
            ("P", [access("R1", "write")]),
            ("P", [syscall("mmap FIXED ro over R", lambda w, p: _mmap(
                p.mm, w.addr["R"], 2 * PAGE, sf.PROT_READ, ANON | sf.MAP_FIXED))])]),
    MmSpec(
        "two-faults-same-page",
        "T0 and T1 write-fault the same page at once: one installs the page, "
        "the other finds it installed; nothing leaks, no write is lost.",
        region(), [("P", [access("R1", "write")]), ("P", [access("R1", "write")])]),
    MmSpec(
        "two-reads-then-write",
        "T0 read-faults page1 (zero page) while T1 write-faults it: the COW "
        "of the zero page and the zero-page install race.",
        region(), [("P", [access("R1", "read")]), ("P", [access("R1", "write")])]),
    MmSpec(
        "cow-vs-fork",
        "T0 writes page0 (present, writable) while T1 forks, has the child "
        "read page0, and exits it: the child sees the page as it was at the "
        "fork, and the parent's write never reaches the child's copy.",
        region(), [("P", [access("R", "write"), access("R", "write", data=b"again")]),
                   ("P", [syscall("fork; child reads R; child exits", _fork_and_exit)])]),
    MmSpec(
        "fault-vs-dontneed",
        "T0 write-faults page1 while T1 zaps the region with MADV_DONTNEED "
        "(mmap_lock for read only: speculation is not aborted by it).",
        region(touch=(0, 1)), [
            ("P", [access("R", "write"), access("R1", "read")]),
            ("P", [syscall("madvise DONTNEED R", lambda w, p: sys_madvise(
                p.mm, w.addr["R"], 2 * PAGE, sf.MADV_DONTNEED))])]),
    MmSpec(
        "fault-vs-exit",
        "T0 write-faults page1 and exits while T1 exits: mm_users drops to one "
        "mid-fault (speculation stops) and the last thread out tears the mm "
        "down; every frame must come back.",
        region(), [("P", [access("R1", "write"), syscall("exit", lambda w, p: _exit_thread(p))]),
                   ("P", [syscall("exit", lambda w, p: _exit_thread(p))])],
        linearizable=False),
    MmSpec(
        "cow-aba",
        "T0 write-faults page0, COW-shared with a forked child, while T1 also "
        "breaks the COW, then makes the region read-only and read-write again: "
        "the VMA looks the same before and after — only mm_lock_seq tells.",
        forked(), [
            ("P", [access("R", "write")]),
            ("P", [access("R", "write"),
                   syscall("mprotect R ro", _mprotect("R", 2, sf.PROT_READ)),
                   syscall("mprotect R rw", _mprotect("R", 2, RW))])]),
    MmSpec(
        "fault-vs-munmap-mmap",
        "T0 write-faults page1 while T1 unmaps the region and maps a new "
        "read-only one in its place: two writer cycles (the seqcount "
        "wraparound case with a narrow mm_lock_seq).",
        region(), [
            ("P", [access("R1", "write")]),
            ("P", [syscall("munmap R", _munmap("R", 2)),
                   syscall("mmap FIXED ro R", lambda w, p: _mmap(
                       p.mm, w.addr["R"], 2 * PAGE, sf.PROT_READ, ANON | sf.MAP_FIXED))])]),
]


SPECS += [
    MmSpec(
        "two-cow-faults",
        "T0 and T1 write page1, which maps the zero page: both copy it; one "
        "installs its copy, the other must see the PTE changed and back off.",
        zero_mapped(), [("P", [access("R1", "write")]), ("P", [access("R1", "write")])]),
    MmSpec(
        "cow-vs-munmap",
        "T0 write-faults page0, COW-shared with a forked child, while T1 "
        "unmaps the region: the copy must hold a reference on the page it "
        "copies from.",
        forked(), [("P", [access("R", "write")]), ("P", [syscall("munmap R", _munmap("R", 2))])]),
    MmSpec(
        "fork-vs-fault-and-tlb",
        "T1 forks while T0 write-faults page1 and T2 keeps writing page0 "
        "through its TLB: the parent must not lose T2's writes to a COW copy "
        "made before fork flushed the TLBs.",
        region(touch=(0, 1), threads=3), [
            ("P", [access("R1", "write")]),
            ("P", [syscall("fork; child reads R; child exits", _fork_and_exit)]),
            ("P", [access("R", "read"), access("R", "write", data=b"T2-a"),
                   access("R", "write", data=b"T2-b")])]),
]


async def _exit_mm(p: Any) -> int:
    await exit_mmap(p.mm)
    return 0


async def _exit_thread(p: Any) -> int:
    """A thread exits: drop its mm_users; the last user tears the mm down
    (exit_mmap never races with a fault of its own mm: all threads are gone)."""
    from specfault.runtime import AtomicAdd
    if await AtomicAdd(p.mm, "mm_users", -1) == 0:
        await exit_mmap(p.mm)
    return 0


def straddle(threads: int = 2):  # type: ignore[no-untyped-def]
    """Setup: four pages across a PMD boundary, two in each PTE table,
    the first of each written (so both tables and the anon_vma exist).

        lower table | upper table
        [ L0 | L1 ] | [ U0 | U1 ]
    """

    def setup(m: sf.Machine) -> tuple[dict[str, Any], dict[str, int], list[tuple[int, int]]]:
        p = m.spawn("P")
        for _ in range(threads - 1):
            p.thread()
        base = 0x7ffff7e00000 - 2 * PAGE
        p.mmap(base, 4 * PAGE, RW, ANON | sf.MAP_FIXED)
        p.write(base, b"init")
        p.write(base + 2 * PAGE, b"init")
        addr = {"L0": base, "L1": base + PAGE, "U0": base + 2 * PAGE, "U1": base + 3 * PAGE}
        return {"P": p}, addr, [(base, base + 4 * PAGE)]

    return setup


async def _fork_child_reads(w: Any, p: Any) -> tuple[bytes, ...]:
    """fork; the child reads L1 and U1 (its snapshot of them is the
    result), then exits."""
    from specfault.mm.access import user_access
    from specfault.mm.fault import ACCESS_READ
    child_mm = await dup_mmap(p.mm)
    seen = (await user_access(child_mm, w.addr["L1"], ACCESS_READ, 4),
            await user_access(child_mm, w.addr["U1"], ACCESS_READ, 4))
    await exit_mmap(child_mm)
    return seen


SPECS += [
    MmSpec(
        "cow-vs-unmap-everywhere",
        "T0 write-faults page0, COW-shared with a forked child C, while T1 "
        "unmaps it from P and C exits: every other reference goes away while "
        "T0 copies — only the reference T0 took keeps the page alive.",
        forked(), [("P", [access("R", "write")]), ("P", [syscall("munmap R", _munmap("R", 2))]),
                   ("C", [syscall("exit", lambda w, p: _exit_thread(p))])],
        linearizable=False),
    MmSpec(
        "fork-vs-two-faults",
        "T1 forks while T0 write-faults L1 and then U1, in two PTE tables that "
        "fork copies one after the other: the child's copy must be a snapshot "
        "— seeing U1 written but not L1 would put T0's writes out of order.",
        straddle(), [("P", [access("L1", "write"), access("U1", "write")]),
                     ("P", [syscall("fork; child reads L1, U1; child exits",
                                    _fork_child_reads)])]),
    MmSpec(
        "fault-vs-remap-elsewhere",
        "T0 write-faults page1 while T1 unmaps the region and maps a new one "
        "elsewhere: with VMAs recycled type-safe-by-RCU, the VMA T0 found may "
        "now describe the new mapping by the time it is locked.",
        region(also=(-16,)), [
            ("P", [access("R1", "write")]),
            ("P", [syscall("munmap R", _munmap("R", 2)),
                   syscall("mmap FIXED R-64K", lambda w, p: _mmap(
                       p.mm, w.addr["R"] - 16 * PAGE, 2 * PAGE, RW, ANON | sf.MAP_FIXED)),
                   access("R", "write", offset=-16 * PAGE)])],
        knobs={"vma_typesafe_rcu": True}),
    MmSpec(
        "two-first-faults",
        "T0 and T1 write-fault the two pages of a region nobody touched yet: "
        "both find no anon_vma (under the VMA lock, vmf_anon_prepare() has to "
        "try mmap_lock too); the VMA ends with exactly one, both pages in it.",
        region(touch=()), [("P", [access("R", "write")]), ("P", [access("R1", "write")])]),
    MmSpec(
        "first-fault-vs-mprotect",
        "T0 write-faults page1 of an untouched region (no anon_vma, no page "
        "tables) while T1 makes the region read-only: no writable PTE may "
        "survive in a read-only VMA.",
        region(touch=()), [("P", [access("R1", "write")]),
                           ("P", [syscall("mprotect R ro", _mprotect("R", 2, sf.PROT_READ))])]),
]


SPEC_BY_NAME = {s.name: s for s in SPECS}
