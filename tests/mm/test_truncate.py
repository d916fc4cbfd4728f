"""Truncation and hole punching in the model alone (the host pins the same
rules in tests/oracle/test_truncation.py)."""

from __future__ import annotations

import pytest

import specfault as sf

P = 4096
RW = sf.PROT_READ | sf.PROT_WRITE


def setup(pages: int = 4) -> tuple[sf.Machine, sf.Process, int]:
    m = sf.Machine()
    m.create_file("/f", b"".join(bytes([0x50 + i]) * P for i in range(pages)))
    p = m.spawn()
    return m, p, p.open("/f", sf.O_RDWR)


def test_shrink_unmaps_beyond_eof_everywhere_and_zeroes_the_partial_page() -> None:
    m, p, fd = setup()
    shared = p.mmap(0, 4 * P, RW, sf.MAP_SHARED, fd)
    private = p.mmap(0, 4 * P, RW, sf.MAP_PRIVATE, fd)
    child = p.fork()
    for i in range(4):
        p.read(shared + i * P, 1)
        child.read(shared + i * P, 1)
    p.write(private + 3 * P, b"cow")
    p.ftruncate(fd, P + 10)
    assert p.read(shared + P, 12) == bytes([0x51]) * 10 + b"\0\0"
    for proc in (p, child):
        for addr in (shared + 2 * P, shared + 3 * P):
            with pytest.raises(sf.BusError):
                proc.read(addr, 1)
    with pytest.raises(sf.BusError):
        p.read(private + 3 * P, 1)              # the COWed copy went too (even_cows)
    assert not p.pagemap(private + 3 * P).present
    m.check()


def test_grow_after_shrink_reads_zeroes_and_keeps_what_was_written_past_eof() -> None:
    m, p, fd = setup(2)
    a = p.mmap(0, 2 * P, RW, sf.MAP_SHARED, fd)
    p.ftruncate(fd, P + 100)
    p.write(a + P + 200, b"past")                # within the last page, beyond EOF
    p.ftruncate(fd, 3 * P)
    assert p.read(a + P + 200, 4) == b"past"     # tmpfs: growing exposes it
    p.ftruncate(fd, 3 * P)                       # same size: nothing beyond EOF to zero
    assert p.pread(fd, 4, P + 200) == b"past"
    p.ftruncate(fd, P + 100)
    p.write(a + P + 200, b"more")
    p.ftruncate(fd, P + 100)                     # same size: the tail is zeroed
    p.ftruncate(fd, 2 * P)
    assert p.read(a + P + 200, 4) == b"\0" * 4
    m.check()


def test_punch_hole_keeps_cow_copies_and_zeroes_partial_edges() -> None:
    m, p, fd = setup()
    shared = p.mmap(0, 4 * P, RW, sf.MAP_SHARED, fd)
    private = p.mmap(0, 4 * P, RW, sf.MAP_PRIVATE, fd)
    p.write(private + P, b"mine")
    for i in range(4):
        p.read(shared + i * P, 1)
    p.fallocate(fd, sf.FALLOC_FL_PUNCH_HOLE | sf.FALLOC_FL_KEEP_SIZE, P - 2, P + 4)
    assert p.read(shared + P - 4, 4) == bytes([0x50]) * 2 + b"\0\0"
    assert not p.pagemap(shared + P).present
    assert p.read(shared + P, 4) == b"\0" * 4
    assert p.read(shared + 2 * P, 4) == b"\0\0" + bytes([0x52]) * 2
    assert p.read(private + P, 4) == b"mine"
    assert p.pread(fd, 4, 4 * P - 4) == bytes([0x53]) * 4     # the size is kept
    m.check()


def test_o_trunc_and_madvise_remove() -> None:
    m, p, fd = setup()
    a = p.mmap(0, 4 * P, RW, sf.MAP_SHARED, fd)
    p.read(a + 2 * P, 1)
    p.madvise(a + 2 * P, P, sf.MADV_REMOVE)
    assert p.read(a + 2 * P, 2) == b"\0\0"
    p.close(p.open("/f", sf.O_RDONLY | sf.O_TRUNC))
    with pytest.raises(sf.BusError):
        p.read(a, 1)
    m.check()


def test_bad_arguments_are_refused_before_anything_runs() -> None:
    _, p, fd = setup()
    with pytest.raises(TypeError):
        p.ftruncate(fd, 1.5)                     # type: ignore[arg-type]
    with pytest.raises(ValueError):
        p.ftruncate(fd, 1 << 63)                 # does not fit a loff_t
    with pytest.raises(ValueError):
        p.fallocate(fd, 1 << 31, 0, P)           # mode does not fit an int


def _swapped_cow() -> tuple[sf.Machine, sf.Process, int, int]:
    """/f (4 pages) on a machine with swap; a private mapping of it whose
    page 1 is a COWed copy, swapped out.  Returns (m, p, fd, mapping)."""
    m = sf.Machine(swap_pages=65)
    m.create_file("/f", b"".join(bytes([0x50 + i]) * P for i in range(4)))
    p = m.spawn()
    fd = p.open("/f", sf.O_RDWR)
    private = p.mmap(0, 4 * P, RW, sf.MAP_PRIVATE, fd)
    p.write(private + P, b"mine")
    p.madvise(private + P, P, sf.MADV_PAGEOUT)
    e = p.pagemap(private + P)
    assert e.swapped and not e.present
    assert m.meminfo()["SwapFree"] == m.meminfo()["SwapTotal"] - 4
    return m, p, fd, private


def test_truncate_drops_a_swapped_out_cow_copy_and_frees_its_slot() -> None:
    # zap_nonpresent_ptes(): a genuine swap entry is a private anon page;
    # with even_cows (truncate_pagecache) it goes and free_swap_and_cache
    # frees its slot
    m, p, fd, private = _swapped_cow()
    p.ftruncate(fd, P)
    e = p.pagemap(private + P)
    assert not e.swapped and not e.present
    info = m.meminfo()
    assert info["SwapFree"] == info["SwapTotal"]
    assert p.smaps()[0]["Swap"] == 0
    with pytest.raises(sf.BusError):
        p.read(private + P, 1)
    m.check()


def test_punch_hole_keeps_a_swapped_out_cow_copy() -> None:
    # no even_cows (shmem_fallocate): should_zap_cows() is false, the swap
    # entry and its slot stay, and the copy comes back on a read
    m, p, fd, private = _swapped_cow()
    p.fallocate(fd, sf.FALLOC_FL_PUNCH_HOLE | sf.FALLOC_FL_KEEP_SIZE, 0, 4 * P)
    assert p.pagemap(private + P).swapped
    assert p.read(private + P, 4) == b"mine"
    m.check()
