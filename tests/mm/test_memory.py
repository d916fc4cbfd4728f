"""Faults (mm/memory.c): zero page, COW reuse vs copy, fault-around, file
pages, MAP_POPULATE, MADV_DONTNEED, OOM, and the signals a bad access gets.
Scenarios return what pagemap / maps / reads show; both the model and the
host kernel must give the expected value."""

from __future__ import annotations

import pytest
from hostkit import PAGE as P
from hostkit import layout
from mmkit import assert_linux, on_model

import specfault as sf
from specfault import (
    MADV_DONTNEED,
    MAP_ANONYMOUS,
    MAP_FIXED,
    MAP_POPULATE,
    MAP_PRIVATE,
    MAP_SHARED,
    O_RDWR,
    PROT_EXEC,
    PROT_NONE,
    PROT_READ,
    PROT_WRITE,
    SEGV_ACCERR,
    SEGV_MAPERR,
)

RW = PROT_READ | PROT_WRITE
PA = MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED


def pm(h, a):
    e = h.pagemap(a)
    return (e.present, e.exclusive, e.file_shared)


def test_zero_page_on_read_fault():
    """Reads of untouched anon pages map the one zero page: same pfn
    everywhere, not exclusive, not file; a write then maps a fresh page."""
    def s(h, b):
        h.mmap(b, 4 * P, RW, PA)
        for i in (0, 1, 3):
            assert h.read(b + i * P, 8) == bytes(8)
        e = [h.pagemap(b + i * P) for i in range(4)]
        before = [pm(h, b + i * P) for i in range(4)]
        same = e[0].pfn == e[1].pfn == e[3].pfn != 0
        h.write(b + P, b"x")
        return before, same, pm(h, b + P), h.pagemap(b + P).pfn != e[0].pfn
    assert_linux(s, ([(True, False, False), (True, False, False), (False, False, False),
                      (True, False, False)], True, (True, True, False), True))


def test_zero_page_not_counted_in_rss():
    def s(p, b):
        p.mmap(b, 4 * P, RW, PA)
        p.read(b, 1)
        p.read(b + P, 1)
        return [v["Rss"] for v in p.smaps() if v["start"] == b]
    assert on_model(s) == [0]


def test_cow_after_fork_copy_then_reuse():
    """After fork the page is shared (both not exclusive, same pfn).  The
    parent's write copies (wp_page_copy: new pfn); the child, now the only
    mapper, reuses the old page in place (same pfn, exclusive)."""
    m = sf.Machine()
    p = m.spawn()
    b = 0x3F0000000000
    p.mmap(b, 2 * P, RW, PA)
    p.write(b, b"p0")
    pfn0 = p.pagemap(b).pfn
    assert pm(p, b) == (True, True, False)
    c = p.fork()
    m.check()
    assert pm(p, b) == pm(c, b) == (True, False, False)
    assert p.pagemap(b).pfn == c.pagemap(b).pfn == pfn0
    p.write(b, b"P0")
    m.check()
    assert p.pagemap(b).pfn != pfn0 and pm(p, b) == (True, True, False)
    assert pm(c, b) == (True, True, False) and c.pagemap(b).pfn == pfn0
    c.write(b, b"c0")
    m.check()
    assert c.pagemap(b).pfn == pfn0, "the child's write must reuse the now-exclusive page"
    assert (p.read(b, 2), c.read(b, 2)) == (b"P0", b"c0")
    cow = m.vmstat()["cow_fault"]
    assert cow >= 1


def test_exclusive_anon_write_reuses_without_copy():
    """mprotect R then RW of a written page: the next write reuses it."""
    def s(h, b):
        h.mmap(b, P, RW, PA)
        h.write(b, b"a")
        pfn = h.pagemap(b).pfn
        h.mprotect(b, P, PROT_READ)
        h.mprotect(b, P, RW)
        h.write(b, b"b")
        return h.pagemap(b).pfn == pfn, pm(h, b), h.read(b, 1)
    assert_linux(s, (True, (True, True, False), b"b"))


def test_fault_around_window():
    """A read fault on a file maps the 64 KiB window around it (aligned on
    the virtual address: 16 PTEs) clamped to the VMA and to EOF.

    file: 40 pages + 2048 bytes
    VMA A at page 3, file [0,30): read page 8  -> pages 3..18
    VMA B at page 100, file [20,50): read 118  -> 112..120 (EOF at 41)
    """
    def s(h, b):
        h.machine.create_file("/f", bytes(range(256)) * (16 * 40 + 8))
        fd = h.open("/f", O_RDWR)
        h.mmap(b + 3 * P, 30 * P, PROT_READ, MAP_PRIVATE | MAP_FIXED, fd, 0)
        h.read(b + 8 * P, 1)
        a = [i for i in range(64) if h.pagemap(b + i * P).present]
        h.mmap(b + 100 * P, 30 * P, PROT_READ, MAP_PRIVATE | MAP_FIXED, fd, 20 * P)
        h.read(b + 118 * P, 1)
        c = [i for i in range(100, 140) if h.pagemap(b + i * P).present]
        return a, c
    assert_linux(s, (list(range(3, 19)), list(range(112, 121))))


def test_sigbus_beyond_eof():
    m = sf.Machine()
    p = m.spawn()
    m.create_file("/f", b"x" * (P + 10))
    fd = p.open("/f", O_RDWR)
    a = p.mmap(0, 4 * P, PROT_READ, MAP_PRIVATE, fd, 0)
    assert p.read(a + P + 9, 1) == b"x"
    assert p.read(a + P + 10, 1) == b"\0"            # the tail of the last page
    with pytest.raises(sf.BusError) as e:
        p.read(a + 2 * P, 1)
    assert e.value.addr == a + 2 * P
    m.check()


def test_private_and_shared_file_writes():
    """Private write: COW from the page cache, file unchanged.  Shared
    write: into the page cache, seen by pread and by other mappings.
    MADV_DONTNEED on the private page: back to the file's contents.
    pwrite: seen through both (the private page was dropped)."""
    def s(h, b):
        h.machine.create_file("/g", b"A" * P * 4)
        fd = h.open("/g", O_RDWR)
        a = h.mmap(b, 4 * P, RW, MAP_PRIVATE | MAP_FIXED, fd, 0)
        h.read(a, 1)
        r0 = pm(h, a)
        h.write(a, b"priv")
        r1 = (pm(h, a), h.pread(fd, 4, 0), h.read(a, 4))
        s_ = h.mmap(b + 10 * P, 4 * P, RW, MAP_SHARED | MAP_FIXED, fd, 0)
        h.write(s_ + P, b"shr")
        r2 = (pm(h, s_ + P)[2], h.pread(fd, 4, P), h.read(a + P, 4))
        h.madvise(a, P, MADV_DONTNEED)
        r3 = h.read(a, 4)
        h.pwrite(fd, b"ZZ", 2 * P)
        return r0, r1, r2, r3, h.read(a + 2 * P, 2), h.read(s_ + 2 * P, 2)
    assert_linux(s, ((True, True, True), ((True, True, False), b"AAAA", b"priv"),
                     (True, b"shrA", b"shrA"), b"AAAA", b"ZZ", b"ZZ"))


def test_dontneed_anon_reads_zero():
    def s(h, b):
        h.mmap(b, 3 * P, RW, PA)
        for i in range(3):
            h.write(b + i * P, b"data")
        h.madvise(b, 2 * P, MADV_DONTNEED)
        return [pm(h, b + i * P)[0] for i in range(3)], [h.read(b + i * P, 4) for i in range(3)]
    assert_linux(s, ([False, False, True], [bytes(4), bytes(4), b"data"]))


def test_map_populate():
    """MAP_POPULATE on private rw anon: every page present and exclusive
    (write-faulted, not the zero page); on a private file: mapped (read)."""
    def s(h, b):
        a = h.mmap(b, 4 * P, RW, PA | MAP_POPULATE)
        anon = [pm(h, a + i * P) for i in range(4)]
        h.machine.create_file("/f", b"q" * 4 * P)
        fd = h.open("/f", O_RDWR)
        f = h.mmap(b + 8 * P, 4 * P, PROT_READ, MAP_PRIVATE | MAP_FIXED | MAP_POPULATE, fd, 0)
        return anon, [pm(h, f + i * P)[0] for i in range(4)]
    assert_linux(s, ([(True, True, False)] * 4, [True] * 4))


def test_segv_maperr_and_accerr():
    m = sf.Machine()
    p = m.spawn()
    a = p.mmap(0, 2 * P, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS)
    n = p.mmap(0, P, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS)
    with pytest.raises(sf.SegmentationFault) as e:
        p.read(0x10000, 1)
    assert (e.value.addr, e.value.si_code) == (0x10000, SEGV_MAPERR)
    with pytest.raises(sf.SegmentationFault) as e:
        p.write(a + 5, b"x")
    assert (e.value.addr, e.value.si_code) == (a + 5, SEGV_ACCERR)
    with pytest.raises(sf.SegmentationFault) as e:
        p.read(n, 1)
    assert e.value.si_code == SEGV_ACCERR
    p.munmap(a, 2 * P)
    with pytest.raises(sf.SegmentationFault) as e:
        p.read(a, 1)
    assert e.value.si_code == SEGV_MAPERR
    m.check()


def test_exec_only_mapping_is_readable_on_x86():
    """Without protection keys, x86 cannot make a page execute-only: a read
    of a PROT_EXEC mapping succeeds (host verified on a CPU without PKU)."""
    def s(h, b):
        h.mmap(b, P, PROT_EXEC, PA)
        return h.read(b, 1)
    assert on_model(s) == b"\0"


def test_exec_fetch_of_nonexec_page_maps_it_first():
    """x86 access_error() ignores PF_INSTR for a not-present page: the fetch
    is handled as a read fault (zero page mapped), then SEGV_ACCERR."""
    m = sf.Machine()
    p = m.spawn()
    a = p.mmap(0, P, RW, MAP_PRIVATE | MAP_ANONYMOUS)
    with pytest.raises(sf.SegmentationFault):
        p.access(a, "exec")
    assert p.pagemap(a).present, "host: the zero page is mapped before SIGSEGV"


def test_oom_write_fault_leaves_everything_consistent():
    m = sf.Machine(nr_frames=8)
    p = m.spawn()
    a = p.mmap(0, 64 * P, RW, MAP_PRIVATE | MAP_ANONYMOUS)
    written = []
    with pytest.raises(sf.OutOfMemory):
        for i in range(64):
            p.write(a + i * P, bytes([i + 1]))
            written.append(i)
    m.check()
    assert written and len(written) < 64
    assert all(p.read(a + i * P, 1) == bytes([i + 1]) for i in written)
    assert m.vmstat()["nr_free_pages"] == 0
    p.munmap(a, 64 * P)
    m.check()
    assert m.vmstat()["nr_free_pages"] > 0


def test_exit_frees_every_frame():
    m = sf.Machine(nr_frames=4096)
    start = m.vmstat()["nr_free_pages"]
    p = m.spawn()
    a = p.mmap(0, 16 * P, RW, MAP_PRIVATE | MAP_ANONYMOUS)
    s_ = p.mmap(0, 4 * P, RW, MAP_SHARED | MAP_ANONYMOUS)
    for i in range(16):
        p.write(a + i * P, b"x")
    p.write(s_, b"s")
    c = p.fork()
    c.write(a, b"y")
    c.exit()
    p.exit()
    m.check()
    assert m.vmstat()["nr_free_pages"] == start


def test_maps_rw_mapping_of_private_anon_after_populate_layout():
    """MAP_POPULATE leaves the layout alone."""
    def s(h, b):
        h.mmap(b, 2 * P, RW, PA | MAP_POPULATE)
        return layout(h.maps(), b, 16 * P)
    assert_linux(s, [(0, 2, "rw-p", 0)])
