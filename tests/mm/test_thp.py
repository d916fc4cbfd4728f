"""Anonymous transparent huge pages (mm/huge_memory.py): each rule run on
the model and, as root on Linux with THP in ``madvise`` mode, on the host
kernel (the expectations were read from Linux 6.18 on the reference
host).  Host and model PFNs differ, so pagemap is compared relative to the
first page of the 2 MiB range: a THP's pages are 512 consecutive frames."""

from __future__ import annotations

import pathlib
import sys
from typing import Any

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).parent))

from hostkit import HOST_OK, host_errno, in_child  # noqa: E402
from mmkit import assert_linux, on_model  # noqa: E402

import specfault as sf  # noqa: E402
from specfault.check.invariants import InvariantViolation  # noqa: E402
from specfault.mm.pgtable import PMD_LEVEL  # noqa: E402

M = 2 << 20
PAGE = 4096
RW = sf.PROT_READ | sf.PROT_WRITE
ANON = sf.MAP_PRIVATE | sf.MAP_ANONYMOUS


def _host_thp_mode() -> str:
    try:
        text = pathlib.Path("/sys/kernel/mm/transparent_hugepage/enabled").read_text()
    except OSError:
        return ""
    return text[text.index("[") + 1:text.index("]")]


# the host side needs the reference host's THP mode; else model only
if HOST_OK and _host_thp_mode() != "madvise":
    pytestmark = pytest.mark.skip(reason="the host's THP mode is not madvise")


def huge(p: Any, base: int) -> list[tuple[int, int, int]]:
    """(first page, end page, AnonHugePages kB) of the VMAs at ``base``."""
    return [((v["start"] - base) // PAGE, (v["end"] - base) // PAGE, v["AnonHugePages"])
            for v in p.smaps() if base <= v["start"] < base + 8 * M]


def pm(p: Any, base: int, pages: list[int], ref: int | None = None) -> list[tuple[Any, ...]]:
    """(present, exclusive, file, PFN - the PFN of page ``ref``) of pages."""
    first = p.pagemap(base + (pages[0] if ref is None else ref) * PAGE).pfn
    out = []
    for i in pages:
        e = p.pagemap(base + i * PAGE)
        out.append((e.present, e.exclusive, e.file_shared, e.pfn - first if e.present else None))
    return out


def region(p: Any, base: int, hugepage: bool = True) -> int:
    """Map 4 MiB at ``base`` (2 MiB-aligned); MADV_HUGEPAGE on the first 2."""
    a = p.mmap(base, 2 * M, RW, ANON | sf.MAP_FIXED)
    if hugepage:
        p.madvise(a, M, sf.MADV_HUGEPAGE)
    return a


def test_read_fault_maps_the_huge_zero_page() -> None:
    def sc(p: Any, base: int) -> Any:
        a = region(p, base)
        return p.read(a + 7 * PAGE, 2), huge(p, base), pm(p, base, [0, 1, 511])
    # the huge zero folio: present, PM_FILE (not anonymous), not exclusive
    assert_linux(sc, (b"\0\0", [(0, 512, 0), (512, 1024, 0)],
                      [(True, False, True, 0), (True, False, True, 1), (True, False, True, 511)]))


def test_write_fault_maps_a_thp() -> None:
    def sc(p: Any, base: int) -> Any:
        a = region(p, base)
        p.write(a + 5 * PAGE, b"five")
        return p.read(a + 5 * PAGE, 4), huge(p, base), pm(p, base, [0, 1, 511])
    assert_linux(sc, (b"five", [(0, 512, 2048), (512, 1024, 0)],
                      [(True, True, False, 0), (True, True, False, 1), (True, True, False, 511)]))


def test_write_to_the_huge_zero_page_maps_a_thp() -> None:
    def sc(p: Any, base: int) -> Any:
        a = region(p, base)
        p.read(a, 1)
        p.write(a + PAGE, b"w")
        return huge(p, base), pm(p, base, [0, 1])
    assert_linux(sc, ([(0, 512, 2048), (512, 1024, 0)], [(True, True, False, 0), (True, True, False, 1)]))


def test_no_thp_without_madvise_or_with_nohugepage_or_unaligned() -> None:
    def sc(p: Any, base: int) -> Any:
        a = region(p, base, hugepage=False)
        p.write(a, b"x")
        p.madvise(a + M, M, sf.MADV_NOHUGEPAGE)
        p.write(a + M, b"y")
        b = p.mmap(base + 4 * M + PAGE, M, RW, ANON | sf.MAP_FIXED)   # no aligned 2 MiB inside
        p.madvise(b, M, sf.MADV_HUGEPAGE)
        p.write(b, b"z")
        return huge(p, base), pm(p, base, [0, 1])
    assert_linux(sc, ([(0, 512, 0), (512, 1024, 0), (2049, 2561, 0)],
                      [(True, True, False, 0), (False, False, False, None)]))


def test_partial_munmap_splits_the_pmd_and_keeps_the_pages() -> None:
    def sc(p: Any, base: int) -> Any:
        a = region(p, base)
        p.write(a + 5 * PAGE, b"five")
        p.munmap(a + 256 * PAGE, PAGE)
        return p.read(a + 5 * PAGE, 4), huge(p, base), pm(p, base, [0, 255, 257, 511])
    # the pages keep their frames (the split maps the same 512 pages)
    assert_linux(sc, (b"five", [(0, 256, 0), (257, 512, 0), (512, 1024, 0)],
                      [(True, True, False, 0), (True, True, False, 255),
                       (True, True, False, 257), (True, True, False, 511)]))


def test_mprotect_whole_keeps_the_thp_partial_splits() -> None:
    def sc(p: Any, base: int) -> Any:
        a = region(p, base)
        p.write(a, b"x")
        p.mprotect(a, M, sf.PROT_READ)
        whole = huge(p, base)
        p.mprotect(a, PAGE, sf.PROT_NONE)
        return whole, huge(p, base), p.read(a + PAGE, 1)
    assert_linux(sc, ([(0, 512, 2048), (512, 1024, 0)],
                      [(0, 1, 0), (1, 512, 0), (512, 1024, 0)], b"\0"))


def test_dontneed_part_splits_whole_frees() -> None:
    def sc(p: Any, base: int) -> Any:
        a = region(p, base)
        p.write(a, b"x")
        p.write(a + 2 * PAGE, b"two")
        p.madvise(a + PAGE, PAGE, sf.MADV_DONTNEED)
        part = huge(p, base), pm(p, base, [0, 1, 2]), p.read(a + 2 * PAGE, 3)
        p.madvise(a, M, sf.MADV_DONTNEED)
        return part, huge(p, base), p.pagemap(a).present
    assert_linux(sc, (([(0, 512, 0), (512, 1024, 0)],
                       [(True, True, False, 0), (False, False, False, None),
                        (True, True, False, 2)], b"two"),
                      [(0, 512, 0), (512, 1024, 0)], False))


def test_madvise_nohugepage_on_part_splits_at_the_vma_boundary() -> None:
    def sc(p: Any, base: int) -> Any:
        a = region(p, base)
        p.write(a, b"x")
        p.madvise(a + M // 2, M // 2, sf.MADV_NOHUGEPAGE)
        return huge(p, base), p.read(a, 1)
    assert_linux(sc, ([(0, 256, 0), (256, 512, 0), (512, 1024, 0)], b"x"))


def test_mremap_moves_an_aligned_thp_whole_splits_an_unaligned_one() -> None:
    def sc(p: Any, base: int) -> Any:
        a = region(p, base)
        p.write(a + PAGE, b"one")
        n = p.mremap(a, M, M, sf.MREMAP_MAYMOVE | sf.MREMAP_FIXED, base + 4 * M)
        aligned = huge(p, base), p.read(n + PAGE, 3)
        n2 = p.mremap(n, M, M, sf.MREMAP_MAYMOVE | sf.MREMAP_FIXED, base + 6 * M + PAGE)
        return aligned, huge(p, base), p.read(n2 + PAGE, 3)
    assert_linux(sc, (([(512, 1024, 0), (2048, 2560, 2048)], b"one"),
                      [(512, 1024, 0), (3073, 3585, 0)], b"one"))


def test_fork_shares_the_thp_a_write_splits_the_writer() -> None:
    def sc(p: Any, base: int) -> Any:
        a = region(p, base)
        p.write(a + PAGE, b"one")

        def child(c: Any) -> Any:
            before = huge(c, base)
            c.write(a + PAGE, b"CHILD")
            return before, huge(c, base), c.read(a + PAGE, 5), pm(c, base, [1])[0][:3]
        got = in_child(p, child)
        return got, huge(p, base), p.read(a + PAGE, 3)
    # 6.18 never copies a THP on a write fault: the writer splits its PMD
    # and copies the one page (do_wp_page); the parent keeps its THP
    assert_linux(sc, (([(0, 512, 2048), (512, 1024, 0)], [(0, 512, 0), (512, 1024, 0)],
                       b"CHILD", (True, True, False)),
                      [(0, 512, 2048), (512, 1024, 0)], b"one"), forked=True)


# ------------------------------------------------------------- model only
def counters(m: Any) -> dict[str, int]:
    v = m.vmstat()
    return {k: v[k] for k in v if k.startswith("thp_") and v[k]}


def test_counters() -> None:
    m = sf.Machine(nr_frames=4096)
    p = m.spawn()
    a = p.mmap(0, 4 * M, RW, ANON)
    h = (a + M - 1) & ~(M - 1)
    p.madvise(h, M, sf.MADV_HUGEPAGE)
    p.read(h, 1)
    assert counters(m) == {"thp_zero_page_alloc": 1}
    p.write(h, b"x")                        # do_huge_zero_wp_pmd
    assert counters(m) == {"thp_zero_page_alloc": 1, "thp_fault_alloc": 1}
    p.munmap(h + PAGE, PAGE)
    assert counters(m) == {"thp_zero_page_alloc": 1, "thp_fault_alloc": 1, "thp_split_pmd": 1}
    m.check()


def test_no_aligned_free_block_falls_back_to_pages() -> None:
    m = sf.Machine(nr_frames=700)            # one 512-aligned block of frames
    p = m.spawn()
    a = p.mmap(0, 4 * M, RW, ANON)
    h = (a + M - 1) & ~(M - 1)
    p.write(a if a != h else a + 2 * M, b"first")    # takes frame 0x1000: no free block left
    p.madvise(h, M, sf.MADV_HUGEPAGE)
    p.write(h, b"x")
    assert counters(m) == {"thp_fault_fallback": 1}
    assert all(v["AnonHugePages"] == 0 for v in p.smaps())
    assert p.read(h, 1) == b"x"
    m.check()


def test_modes_always_and_never() -> None:
    for mode, want in (("always", 2048), ("never", 0), ("madvise", 0)):
        m = sf.Machine(nr_frames=4096, transparent_hugepage=mode)
        p = m.spawn()
        a = p.mmap(0, 4 * M, RW, ANON)
        p.write((a + M - 1) & ~(M - 1), b"x")
        assert sum(v["AnonHugePages"] for v in p.smaps()) == want, mode
        m.check()


def test_use_zero_page_off_maps_a_thp_on_read() -> None:
    m = sf.Machine(nr_frames=4096, transparent_hugepage="always", thp_use_zero_page=False)
    p = m.spawn()
    a = p.mmap(0, 4 * M, RW, ANON)
    p.read((a + M - 1) & ~(M - 1), 1)
    assert counters(m) == {"thp_fault_alloc": 1}
    m.check()


def test_a_thp_costs_no_bytes_until_written() -> None:
    """512 page structs, but the bytes are materialised lazily: a THP with
    one byte written holds one byte of contents."""
    m = sf.Machine(nr_frames=4096, transparent_hugepage="always")
    p = m.spawn()
    a = p.mmap(0, 4 * M, RW, ANON)
    h = (a + M - 1) & ~(M - 1)
    p.write(h + 3 * PAGE, b"x")
    held = sum(len(pg.data) for pg in m.kernel.mem.pages.values() if pg.data is not None)
    assert held == 1
    assert counters(m)["thp_fault_alloc"] == 1


def test_pervma_and_speculative_protocols_fault_thps() -> None:
    for proto in ("classic", "pervma", "speculative", "dufour"):
        m = sf.Machine(nr_frames=4096, transparent_hugepage="always", fault_protocol=proto)
        p = m.spawn()
        a = p.mmap(0, 4 * M, RW, ANON)
        h = (a + M - 1) & ~(M - 1)
        p.write(h, b"x")
        p.write(h + PAGE, b"y")
        assert p.read(h, 1) == b"x" and counters(m)["thp_fault_alloc"] == 1, proto
        m.check()


def test_check_mm_catches_a_writable_shared_thp() -> None:
    """A huge PMD left writable after fork (the COW rule at the PMD level)
    is a check_mm violation."""
    m = sf.Machine(nr_frames=4096, transparent_hugepage="always")
    p = m.spawn()
    a = p.mmap(0, 4 * M, RW, ANON)
    h = (a + M - 1) & ~(M - 1)
    p.write(h, b"x")
    c = p.fork()
    m.check()
    mm = c.mm
    t = mm.pgd
    for shift in (39, 30):
        t = t.entries[(h >> shift) & 511]
    assert t.level == PMD_LEVEL
    t.entries[(h >> 21) & 511] |= 2                    # make the child's PMD writable
    with pytest.raises(InvariantViolation, match="COW broken"):
        m.check()


def test_exit_frees_every_frame() -> None:
    def sc(p: Any, base: int) -> Any:
        a = region(p, base)
        p.write(a, b"x")
        c = p.fork()
        c.write(a + PAGE, b"y")
        c.exit()
        p.munmap(a, 2 * M)
        return p.machine.kernel.mem.nr_free()
    assert on_model(sc, nr_frames=4096) == 4096


# ------------------------------------------------------ MADV_COLLAPSE, khugepaged
def test_madv_collapse_copies_small_pages_into_a_thp() -> None:
    def sc(p: Any, base: int) -> Any:
        a = region(p, base, hugepage=False)          # no MADV_HUGEPAGE needed
        for i in range(0, 512, 7):
            p.write(a + i * PAGE, bytes([i % 255 + 1]))
        p.madvise(a, M, sf.MADV_COLLAPSE)
        p.write(a + M, b"one")                       # a single page: collapsed too
        p.madvise(a + M, M, sf.MADV_COLLAPSE)
        return (huge(p, base), pm(p, base, [0, 1, 511]), p.read(a + 7 * PAGE, 1),
                p.read(a + 8 * PAGE, 1), p.read(a + M, 3))
    assert_linux(sc, ([(0, 1024, 4096)],
                      [(True, True, False, 0), (True, True, False, 1), (True, True, False, 511)],
                      b"\x08", b"\0", b"one"))


def test_madv_collapse_refusals() -> None:
    def sc(p: Any, base: int) -> Any:
        a = region(p, base, hugepage=False)
        empty = host_errno(lambda: p.madvise(a, M, sf.MADV_COLLAPSE))    # no PTE table
        p.madvise(a + M, M, sf.MADV_NOHUGEPAGE)
        p.write(a + M, b"x")
        nohuge = host_errno(lambda: p.madvise(a + M, M, sf.MADV_COLLAPSE))
        p.write(a, b"y")
        p.mprotect(a, M, sf.PROT_READ)
        readonly = host_errno(lambda: p.madvise(a, M, sf.MADV_COLLAPSE))  # read-only: collapses
        return empty, nohuge, readonly, huge(p, base)
    assert_linux(sc, (22, 22, 0, [(0, 512, 2048), (512, 1024, 0)]))


def test_madv_collapse_after_fork_copies_the_shared_pages() -> None:
    def sc(p: Any, base: int) -> Any:
        a = region(p, base, hugepage=False)
        p.write(a + PAGE, b"one")

        def child(c: Any) -> Any:
            c.madvise(a, M, sf.MADV_COLLAPSE)
            c.write(a + PAGE, b"CHILD")
            return huge(c, base), c.read(a + PAGE, 5)
        return in_child(p, child), huge(p, base), p.read(a + PAGE, 3)
    assert_linux(sc, (([(0, 1024, 2048)], b"CHILD"), [(0, 1024, 0)], b"one"), forked=True)


def test_khugepaged_collapses_a_madvised_range() -> None:
    m = sf.Machine(nr_frames=8192)
    p = m.spawn()
    a = p.mmap(0, 3 * M, RW, ANON)
    h = (a + M - 1) & ~(M - 1)
    p.write(h, b"x")                                 # a small page: not yet MADV_HUGEPAGE
    p.madvise(h, M, sf.MADV_HUGEPAGE)                # registers the mm for khugepaged
    p.write(h + 3 * PAGE, b"y")                      # a fault into an existing PTE table
    assert sum(v["AnonHugePages"] for v in p.smaps()) == 0
    assert m.khugepaged() == 512
    assert sum(v["AnonHugePages"] for v in p.smaps()) == 2048
    assert (p.read(h, 1), p.read(h + 3 * PAGE, 1), p.read(h + PAGE, 1)) == (b"x", b"y", b"\0")
    assert counters(m) == {"thp_collapse_alloc": 1}
    assert m.khugepaged() == 512                     # scanned again: already a THP
    assert counters(m) == {"thp_collapse_alloc": 1}
    m.check()


def test_khugepaged_leaves_unreferenced_and_unmadvised_ranges() -> None:
    m = sf.Machine(nr_frames=8192)
    p = m.spawn()
    a = p.mmap(0, 6 * M, RW, ANON)
    h = (a + M - 1) & ~(M - 1)
    p.write(h, b"x")                                 # not MADV_HUGEPAGE: never scanned
    p.write(h + M, b"z")
    p.madvise(h + M, M, sf.MADV_HUGEPAGE)
    p.madvise(h + M, M, sf.MADV_COLD)                # the page is old: not referenced
    assert m.khugepaged() == 512
    assert sum(v["AnonHugePages"] for v in p.smaps()) == 0
    with pytest.raises(TypeError):
        m.khugepaged(pages="1")
    with pytest.raises(ValueError):
        m.khugepaged(pages=0)
    m.check()
