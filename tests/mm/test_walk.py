"""The one page-table walk (mm/pgtable.walk): every level it reads is
checked for use-after-free, for every caller — the faults, the syscalls'
range walks — and the range walk covers every PTE table of a range.

A table is freed here by poisoning it the way the mmu_gather's free does
(``PageTable.poison``), while it is still linked: exactly what a walker
that outlives the free (no RCU, no mmap_lock) would then read."""

from __future__ import annotations

import pytest

import specfault as sf
from specfault.mm.pgtable import PMD_LEVEL, PTE_LEVEL, walk, walk_range
from specfault.runtime import UseAfterFree

P = 4096
RW = sf.PROT_READ | sf.PROT_WRITE
ANON = sf.MAP_PRIVATE | sf.MAP_ANONYMOUS


def _tables(p: sf.Process, addr: int) -> list:
    """[pud table, pmd table, pte table] mapping ``addr`` (all present)."""
    pud = p.mm.pgd.entries[(addr >> 39) & 511]
    pmd = pud.entries[(addr >> 30) & 511]
    return [pud, pmd, pmd.entries[(addr >> 21) & 511]]


@pytest.mark.parametrize("level", [0, 1])       # the PUD table, the PMD table
@pytest.mark.parametrize("protocol", ["classic", "pervma", "speculative"])
def test_fault_walk_checks_every_level(protocol: str, level: int) -> None:
    m = sf.Machine(nr_frames=256, fault_protocol=protocol)
    p = m.spawn()
    p.thread()                                   # so the speculative path speculates
    a = p.mmap(0, 4 * P, RW, ANON)
    p.write(a, b"x")                             # tables exist now
    _tables(p, a)[level].poison("test: freed under the walker")
    with pytest.raises(UseAfterFree, match="test: freed under the walker"):
        p.write(a + P, b"y")                     # a fault: the handler's walk


@pytest.mark.parametrize("level", [0, 1])
def test_syscall_walks_check_every_level(level: int) -> None:
    """munmap's zap and mprotect walk through the same checked walk (they
    used to read the upper levels without looking)."""
    for syscall in ("munmap", "mprotect"):
        m = sf.Machine(nr_frames=256)
        p = m.spawn()
        a = p.mmap(0, 4 * P, RW, ANON)
        p.write(a, b"x")
        _tables(p, a)[level].poison("test: freed under the walker")
        with pytest.raises(UseAfterFree):
            if syscall == "munmap":
                p.munmap(a, 4 * P)
            else:
                p.mprotect(a, 4 * P, sf.PROT_READ)


def test_walk_stops_at_a_missing_level_or_allocates() -> None:
    m = sf.Machine(nr_frames=256)
    p = m.spawn()
    a = 0x7f0000000000
    got = p._run(walk(p.mm, a, PMD_LEVEL))
    assert got is p.mm.pgd                        # nothing below the PGD yet
    pmd = p._run(walk(p.mm, a, PMD_LEVEL, alloc=True))
    assert pmd.level == PMD_LEVEL and pmd.base == a & ~((1 << 30) - 1)
    assert p._run(walk(p.mm, a, PTE_LEVEL)) is pmd   # no PTE table: stops at the PMD
    pt = p._run(walk(p.mm, a, PTE_LEVEL, alloc=True))
    assert pt.level == PTE_LEVEL and p._run(walk(p.mm, a, PTE_LEVEL)) is pt


def test_walk_range_and_smaps_span_pte_tables() -> None:
    """A VMA over three PTE tables (4 MiB from 1 MiB past a 2 MiB
    boundary), touched in each and not everywhere: every table found once,
    each with the part of the range it covers; smaps and pagemap agree.

        0x10000000      0x10200000      0x10400000      0x10600000
        |    [a .........|...............|.........a+4M) |
               x      x    x                 x    x
    """
    m = sf.Machine(nr_frames=256)
    p = m.spawn()
    a = p.mmap(0x10100000, 1024 * P, RW, ANON | sf.MAP_FIXED)
    assert a == 0x10100000
    touched = [a, 0x101ff000, 0x10200000, 0x10400000, a + 1023 * P]
    for t in touched:
        p.write(t, b"z")
    tables = p._run(walk_range(p.mm, a, a + 1024 * P))
    assert [(t.base, lo, hi) for t, lo, hi in tables] == [
        (0x10000000, a, 0x10200000), (0x10200000, 0x10200000, 0x10400000),
        (0x10400000, 0x10400000, a + 1024 * P)]
    (vma,) = [v for v in p.smaps() if v["start"] == a]
    assert vma["Rss"] == vma["Anonymous"] == 4 * len(touched)
    assert all(p.pagemap(t).present for t in touched)
    assert not p.pagemap(a + 100 * P).present
