"""fork (COW, MADV_DONTFORK, shared stays shared), mremap (shrink, grow in
place, MAYMOVE, FIXED, DONTUNMAP, multi-VMA move) with data preserved, brk,
and the /proc formats (maps lines, pagemap bits)."""

from __future__ import annotations

import errno
import re

from hostkit import HOST_OK, Host, host_errno, layout, run_host
from mmkit import assert_linux, on_model

import specfault as sf
from specfault import (
    MADV_DOFORK,
    MADV_DONTFORK,
    MAP_ANONYMOUS,
    MAP_FIXED,
    MAP_PRIVATE,
    MAP_SHARED,
    MREMAP_DONTUNMAP,
    MREMAP_FIXED,
    MREMAP_MAYMOVE,
    O_RDONLY,
    PROT_EXEC,
    PROT_NONE,
    PROT_READ,
    PROT_WRITE,
)

P = 4096
RW = PROT_READ | PROT_WRITE
PA = MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED
B = 0x3F0000000000


def L(h, b, n=64):
    return layout(h.maps(), b, n * P)


def pm(h, a):
    e = h.pagemap(a)
    return (e.present, e.exclusive, e.file_shared)


# ---------------------------------------------------------------- fork
def test_fork_dontfork_shared_and_zero_page():
    """Parent (host-verified result in the comments):

        0..4 rw anon, page 0 written, page 1 zero page
        8..10 rw anon, MADV_DONTFORK        -> absent in the child
        16..18 shared anon, written         -> shared with the child, but the
                                               child's PTEs start empty
        32..34 rw anon, read only (no anon_vma) -> child's PTE not copied
    """
    m = sf.Machine()
    h = m.spawn()
    h.mmap(B, 4 * P, RW, PA)
    h.write(B, b"p0")
    h.read(B + P, 1)
    h.mmap(B + 8 * P, 2 * P, RW, PA)
    h.write(B + 8 * P, b"df")
    h.madvise(B + 8 * P, 2 * P, MADV_DONTFORK)
    s = h.mmap(B + 16 * P, 2 * P, RW, MAP_SHARED | MAP_ANONYMOUS | MAP_FIXED)
    h.write(s, b"sh")
    z = h.mmap(B + 32 * P, 2 * P, RW, PA)
    h.read(z, 1)
    c = h.fork()
    m.check()
    assert L(c, B) == [(0, 4, "rw-p", 0), (16, 18, "rw-s", 0), (32, 34, "rw-p", 0)]
    assert pm(c, B) == (True, False, False) and c.read(B, 2) == b"p0"
    assert pm(c, z) == (False, False, False) and c.read(z, 1) == b"\0"
    assert pm(c, s) == (False, False, False)
    c.write(s, b"CH")
    assert h.read(s, 2) == b"CH", "MAP_SHARED must stay shared across fork"
    assert pm(h, s)[2], "shared anon pages are reported as file/shared (bit 61)"
    m.check()
    h.madvise(B + 8 * P, 2 * P, MADV_DOFORK)
    c2 = h.fork()
    assert c2.read(B + 8 * P, 2) == b"df"
    m.check()


def test_threads_share_the_mm():
    m = sf.Machine()
    p = m.spawn()
    t = p.thread()
    a = t.mmap(0, 2 * P, RW, MAP_PRIVATE | MAP_ANONYMOUS)
    t.write(a, b"thr")
    assert p.read(a, 3) == b"thr"
    p.munmap(a, P)
    try:
        t.read(a, 1)
        raise AssertionError("the thread still sees an unmapped page")
    except sf.SegmentationFault:
        pass
    m.check()


# -------------------------------------------------------------- mremap
def test_mremap_shrink_grow_move_keep_data():
    """
    aaaa........  shrink to 2      -> aa..
    aa..          grow in place 4  -> aaaa   (data kept, new pages zero)
    aaaa bb       grow to 6 blocked by b -> MAYMOVE moves it elsewhere
    """
    def s(h, b):
        h.mmap(b, 4 * P, RW, PA)
        for i in range(4):
            h.write(b + i * P, bytes([65 + i]))
        h.mremap(b, 4 * P, 2 * P)
        shrunk = L(h, b)
        h.mremap(b, 2 * P, 4 * P)
        grown = (L(h, b), h.read(b + P, 1), h.read(b + 2 * P, 1))
        h.mmap(b + 4 * P, 2 * P, PROT_READ, PA)
        e = host_errno(lambda: h.mremap(b, 4 * P, 6 * P))
        new = h.mremap(b, 4 * P, 6 * P, MREMAP_MAYMOVE)
        moved = (new != b, h.read(new, 1), h.read(new + P, 1), h.read(new + 5 * P, 1))
        return shrunk, grown, e, moved
    assert_linux(s, ([(0, 2, "rw-p", 0)], ([(0, 4, "rw-p", 0)], b"B", b"\0"), errno.ENOMEM,
                     (True, b"A", b"B", b"\0")))


def test_mremap_fixed_and_dontunmap():
    """FIXED: the data moves, the target's old mapping is replaced.
    DONTUNMAP: the data moves, the old range stays mapped and reads zero."""
    def s(h, b):
        h.mmap(b, 2 * P, RW, PA)
        h.write(b, b"fx")
        h.mmap(b + 10 * P, 4 * P, PROT_READ, PA)
        h.mremap(b, 2 * P, 2 * P, MREMAP_MAYMOVE | MREMAP_FIXED, b + 10 * P)
        fixed = (L(h, b), h.read(b + 10 * P, 2))
        n = h.mremap(b + 10 * P, 2 * P, 2 * P, MREMAP_MAYMOVE | MREMAP_DONTUNMAP)
        empty = pm(h, b + 10 * P)[0]
        return fixed, h.read(n, 2), empty, h.read(b + 10 * P, 2)
    assert_linux(s, (([(10, 12, "rw-p", 0), (12, 14, "r--p", 0)], b"fx"), b"fx", False,
                     b"\0\0"))


def test_mremap_fixed_failure_changes_nothing():
    """a.b  mremap(0, 3 pages -> 2, FIXED to 10): EFAULT (the range leaves
    the VMA) and the target at 10 is still mapped (Linux 6.18)."""
    def s(h, b):
        h.mmap(b, P, RW, PA)
        h.mmap(b + 2 * P, P, RW, PA)
        h.mmap(b + 10 * P, P, RW, PA)
        e = host_errno(lambda: h.mremap(b, 3 * P, 2 * P, MREMAP_MAYMOVE | MREMAP_FIXED,
                                        b + 10 * P))
        return e, L(h, b)
    assert_linux(s, (errno.EFAULT, [(0, 1, "rw-p", 0), (2, 3, "rw-p", 0), (10, 11, "rw-p", 0)]))


def test_mremap_moves_several_vmas_and_gaps():
    """Linux 6.17+: MAYMOVE|FIXED with old_len == new_len moves every VMA in
    the range, gaps staying gaps:   a.rr  ->  (at 40) a.rr"""
    def s(h, b):
        h.mmap(b, P, RW, PA)
        h.write(b, b"A")
        h.mmap(b + 2 * P, 2 * P, PROT_READ, PA)
        h.mremap(b, 4 * P, 4 * P, MREMAP_MAYMOVE | MREMAP_FIXED, b + 40 * P)
        return L(h, b), h.read(b + 40 * P, 1)
    assert_linux(s, ([(40, 41, "rw-p", 0), (42, 44, "r--p", 0)], b"A"))


def test_mremap_several_vmas_leaves_a_gaps_destination_alone():
    """Each VMA moved unmaps only its own destination: what was mapped where
    a gap of the source lands stays (and merges with the moved VMA).
        source  a.   (a at 1, gap at 2)   destination  .b  (b at 9)
        after   a at 8, b at 9: one VMA [8, 10)"""
    def s(h, b):
        for page in (9, 0, 1):
            h.mmap(b + page * P, P, PROT_NONE, PA)
        got = h.mremap(b + P, 2 * P, 2 * P, MREMAP_MAYMOVE | MREMAP_FIXED, b + 8 * P)
        return (got - b) // P, L(h, b)
    assert_linux(s, (8, [(0, 1, "---p", 0), (8, 10, "---p", 0)]))


def test_mremap_shared_zero_old_len_duplicates():
    def s(h, b):
        h.mmap(b, P, RW, MAP_SHARED | MAP_ANONYMOUS | MAP_FIXED)
        h.write(b, b"dup")
        h.mremap(b, 0, P, MREMAP_MAYMOVE | MREMAP_FIXED, b + 10 * P)
        h.write(b + 10 * P, b"DUP")
        return L(h, b), h.read(b, 3)
    assert_linux(s, ([(0, 1, "rw-s", 0), (10, 11, "rw-s", 0)], b"DUP"))


# ---------------------------------------------------------------- brk
def test_brk_grow_shrink_and_heap_name():
    m = sf.Machine()
    p = m.spawn()
    start = p.brk(0)
    assert "[heap]" not in p.maps()
    assert p.brk(start + 3 * P + 100) == start + 3 * P + 100
    line = p.maps().splitlines()[0]
    assert line.endswith("[heap]") and line.startswith(f"{start:x}-{start + 4 * P:x} rw-p")
    p.write(start + 3 * P, b"heap")
    assert p.brk(start + P) == start + P
    assert p.maps().splitlines()[0].startswith(f"{start:x}-{start + P:x} rw-p")
    assert p.brk(start - P) == start + P, "brk below start_brk fails: old break returned"
    assert p.brk(start + 4 * P) == start + 4 * P
    assert p.read(start + 3 * P, 4) == bytes(4), "shrunk heap pages come back zeroed"
    m.check()


# -------------------------------------------------------------- /proc
_LINE = re.compile(r"^([0-9a-f]{8,})-([0-9a-f]{8,}) ([r-][w-][x-][ps]) ([0-9a-f]{8}) "
                   r"([0-9a-f]{2}):([0-9a-f]{2}) (\d+) ?(\s*)(.*)$")


def _shape(line: str) -> tuple[str, int, bool]:
    """perms, the column the name starts at (0 if none), trailing space."""
    mt = _LINE.match(line)
    assert mt, f"not a /proc/pid/maps line: {line!r}"
    name_col = mt.start(9) if mt.group(9) else 0
    return mt.group(3), name_col, line.endswith(" ")


def test_maps_format_matches_host():
    def s(h, b):
        h.mmap(b, 2 * P, RW, PA)
        h.mmap(b + 4 * P, 2 * P, RW, MAP_SHARED | MAP_ANONYMOUS | MAP_FIXED)
        h.machine.create_file("/f", b"x" * 3 * P)
        fd = h.open("/f", O_RDONLY)
        h.mmap(b + 8 * P, 2 * P, PROT_READ | PROT_EXEC, MAP_PRIVATE | MAP_FIXED, fd, P)
        h.mmap(b + 12 * P, P, PROT_NONE, PA)
        lines = [ln for ln in h.maps().splitlines() if ln.startswith(f"{b:x}"[:7])]
        return lines
    model = on_model(s)
    assert model[0] == f"{B:x}-{B + 2 * P:x} rw-p 00000000 00:00 0 "
    assert model[1].endswith(" /dev/zero (deleted)") and " rw-s 00000000 00:01 " in model[1]
    assert " r-xp 00001000 " in model[2] and model[2].endswith(" /f")
    assert [_shape(x) for x in model] == [("rw-p", 0, True), ("rw-s", 73, False),
                                          ("r-xp", 73, False), ("---p", 0, True)]
    if HOST_OK:
        host = run_host(s)
        assert [_shape(x) for x in host] == [_shape(x) for x in model]


def test_pagemap_bits():
    """present (63), file/shared-anon (61), exclusive (56), pfn (0-54)."""
    def s(h, b):
        h.mmap(b, 2 * P, RW, PA)
        h.write(b, b"x")
        h.mmap(b + 4 * P, P, RW, MAP_SHARED | MAP_ANONYMOUS | MAP_FIXED)
        h.write(b + 4 * P, b"s")
        e = h.pagemap(b)
        return (pm(h, b), pm(h, b + P), pm(h, b + 4 * P), e.pfn != 0,
                e.raw >> 63, (e.raw >> 56) & 1, e.raw & ((1 << 55) - 1) == e.pfn)
    assert_linux(s, ((True, True, False), (False, False, False), (True, True, True), True, 1, 1,
                     True))


def test_host_helper_sees_the_host():
    """The host side of these tests is real: its pagemap has PFNs."""
    if not HOST_OK:
        return
    def s(h: Host, b: int) -> int:
        h.mmap(b, P, RW, PA)
        h.write(b, b"x")
        return h.pagemap(b).pfn
    assert run_host(s) > 0
    assert PROT_EXEC == 4
