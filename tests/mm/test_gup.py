"""Pinned pages (mm/gup.py): pin_user_pages / get_user_pages, and the rules
they force on COW reuse, fork and reclaim — under Linux 6.18's rule
(``cow_reuse=anon_exclusive``) and the two it replaced, each shown losing
data in the shape that made Linux change it."""

from __future__ import annotations

import errno

import pytest

import specfault as sf
from specfault.check.invariants import InvariantViolation

RW = sf.PROT_READ | sf.PROT_WRITE
ANON = sf.MAP_PRIVATE | sf.MAP_ANONYMOUS
RULES = ("anon_exclusive", "page_count", "mapcount")


def _page(m: sf.Machine, data: bytes = b"A") -> tuple[sf.Process, int]:
    p = m.spawn()
    a = p.mmap(0, 4096, RW, ANON)
    p.write(a, data)
    return p, a


@pytest.mark.parametrize("rule", RULES)
def test_vmsplice_shape_cve_2020_29374(rule: str) -> None:
    """The child takes a FOLL_GET reference on a COW-shared page (vmsplice
    into a pipe), unmaps it, and the parent writes: by mapcount alone the
    parent reuses the page and the pipe reads the parent's new data."""
    m = sf.Machine(nr_frames=64, cow_reuse=rule)
    p, a = _page(m, b"secret-A")
    c = p.fork()
    pipe = c.get_user_pages(a, 4096)
    c.madvise(a, 4096, sf.MADV_DONTNEED)
    before = p.pagemap(a).pfn
    p.write(a, b"secret-B")
    leaked = pipe.read(0, 8) == b"secret-B"
    reused = p.pagemap(a).pfn == before
    assert (leaked, reused) == ((True, True) if rule == "mapcount" else (False, False))
    pipe.release()
    m.check()


@pytest.mark.parametrize("rule", RULES)
def test_read_only_longterm_pin_of_a_shared_page(rule: str) -> None:
    """A long-term read-only pin of a page still COW-shared with a child,
    then a write by the pinner: 6.18 unshares at pin time (the pin is on
    the page the process keeps); 5.9-5.18 and earlier pin the shared page
    and the write copies the process's page away from the pin."""
    m = sf.Machine(nr_frames=64, cow_reuse=rule)
    p, a = _page(m, b"old")
    p.fork()
    pin = p.pin_user_pages(a, 4096, longterm=True)
    assert p.pagemap(a).pfn == pin.pfns()[0] or rule != "anon_exclusive"
    p.write(a, b"new")
    assert pin.read(0, 3) == (b"new" if rule == "anon_exclusive" else b"old")
    pin.release()
    m.check()


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("dontfork", [False, True])
def test_write_pin_then_fork_rdma_shape(rule: str, dontfork: bool) -> None:
    """A long-term write pin (an RDMA registration), then fork, then the
    parent writes and the device writes.  Since 5.9 fork copies the pinned
    page for the child; before, only MADV_DONTFORK on the buffer kept the
    parent's page under the pin."""
    m = sf.Machine(nr_frames=64, cow_reuse=rule)
    p, a = _page(m, b"x")
    if dontfork:
        p.madvise(a, 4096, sf.MADV_DONTFORK)
    pin = p.pin_user_pages(a, 4096, write=True, longterm=True)
    c = p.fork()
    p.write(a, b"parent")
    pin.write(0, b"device")
    coherent = p.read(a, 6) == b"device"
    assert coherent == (rule != "mapcount" or dontfork)
    if not dontfork:
        assert c.read(a, 6) == (b"x\0\0\0\0\0" if coherent else b"device")
    pin.release()
    m.check()


def test_fork_copies_a_pinned_page_for_the_child_and_leaves_the_parents() -> None:
    m = sf.Machine(nr_frames=64)
    p, a = _page(m, b"pinned")
    pin = p.pin_user_pages(a, 4096, write=True)
    pfn = p.pagemap(a).pfn
    c = p.fork()
    assert p.pagemap(a).pfn == pfn == pin.pfns()[0] and p.pagemap(a).exclusive
    assert c.pagemap(a).pfn != pfn and c.read(a, 6) == b"pinned"
    c.write(a, b"child!")                       # the child's own page: no fault on it
    assert p.read(a, 6) == b"pinned" and pin.read(0, 6) == b"pinned"
    pin.release()
    m.check()


def test_read_only_pin_unshares_a_shared_page_and_the_zero_page() -> None:
    m = sf.Machine(nr_frames=64)
    p, a = _page(m)
    c = p.fork()
    shared = p.pagemap(a).pfn
    assert c.pagemap(a).pfn == shared
    pin = p.pin_user_pages(a, 4096)             # short-term, read-only: an anon page unshares
    assert p.pagemap(a).pfn != shared and pin.pfns() == [p.pagemap(a).pfn]
    assert c.pagemap(a).pfn == shared
    pin.release()
    z = p.mmap(0, 4096, RW, ANON)
    p.read(z, 1)                                 # the zero page
    zero = p.pagemap(z).pfn
    short = p.pin_user_pages(z, 4096)            # short-term: the zero page itself
    assert short.pfns() == [zero]
    long = p.pin_user_pages(z, 4096, longterm=True)   # a COW mapping: unshared
    assert long.pfns() == [p.pagemap(z).pfn] != [zero] and p.pagemap(z).exclusive
    assert long.read(0, 4) == bytes(4)
    short.release()
    long.release()
    m.check()


def test_counters_and_references() -> None:
    m = sf.Machine(nr_frames=64)
    p = m.spawn()
    a = p.mmap(0, 3 * 4096, RW, ANON)
    p.write(a, b"x")
    pin = p.pin_user_pages(a, 3 * 4096, write=True)
    assert pin.pinned and len(set(pin.pfns())) == 3
    assert m.vmstat()["nr_foll_pin_acquired"] == 3
    p.munmap(a, 3 * 4096)                        # the pages outlive the mapping
    frees = m.vmstat()["pgfree"]
    pin.write(4096, b"late")
    assert pin.read(4096, 4) == b"late"
    m.check()                                    # the pins are counted
    pin.release()
    assert m.vmstat()["nr_foll_pin_released"] == 3 and m.vmstat()["pgfree"] == frees + 3
    m.check()
    z = p.mmap(0, 4096, sf.PROT_READ, ANON)
    zpin = p.pin_user_pages(z, 4096)             # the zero page: no pin counted
    assert m.vmstat()["nr_foll_pin_acquired"] == 3
    zpin.release()
    assert m.vmstat()["nr_foll_pin_released"] == 3
    get = p.get_user_pages(z, 4096)
    assert not get.pinned
    get.release()
    m.check()


def test_a_leaked_pin_is_a_leak_at_exit() -> None:
    m = sf.Machine(nr_frames=64)
    p, a = _page(m)
    pin = p.pin_user_pages(a, 4096)
    p.exit()
    m.check()                                    # held by the pin: accounted
    pin._handle.mm.kernel.gup_pins.clear()       # forget it, as a driver bug would
    with pytest.raises(InvariantViolation, match="leaked"):
        m.check()


def test_reclaim_does_not_unmap_a_pinned_page() -> None:
    m = sf.Machine(nr_frames=64, swap_pages=17)
    p, a = _page(m)
    pin = p.pin_user_pages(a, 4096, longterm=True)
    p.madvise(a, 4096, sf.MADV_PAGEOUT)
    assert p.pagemap(a).present and m.vmstat()["pswpout"] == 0
    pin.release()
    p.madvise(a, 4096, sf.MADV_PAGEOUT)
    assert p.pagemap(a).swapped and m.vmstat()["pswpout"] == 1
    m.check()


def test_errors() -> None:
    m = sf.Machine(nr_frames=64)
    p, a = _page(m)
    with pytest.raises(OSError) as e:
        p.pin_user_pages(a + 4096, 4096)
    assert e.value.errno == errno.EFAULT
    with pytest.raises(OSError) as e:
        p.pin_user_pages(a, 2 * 4096)            # the second page is a hole: nothing kept
    assert e.value.errno == errno.EFAULT
    r = p.mmap(0, 4096, sf.PROT_READ, ANON)
    with pytest.raises(OSError) as e:
        p.pin_user_pages(r, 4096, write=True)
    assert e.value.errno == errno.EFAULT
    assert m.vmstat()["nr_foll_pin_acquired"] == m.vmstat()["nr_foll_pin_released"]
    with pytest.raises(ValueError, match="length"):
        p.pin_user_pages(a, 0)
    with pytest.raises(TypeError, match="longterm"):
        p.pin_user_pages(a, 4096, longterm=1)  # type: ignore[arg-type]
    pin = p.pin_user_pages(a, 4096)
    with pytest.raises(ValueError, match="write=False"):
        pin.write(0, b"x")
    with pytest.raises(ValueError, match="past"):
        pin.read(4000, 100)
    pin.release()
    with pytest.raises(ValueError, match="released"):
        pin.release()
    m.check()


def test_fork_that_cannot_copy_a_pinned_page_fails_and_leaves_nothing() -> None:
    m = sf.Machine(nr_frames=4)
    p = m.spawn()
    a = p.mmap(0, 4 * 4096, RW, ANON)
    for i in range(4):
        p.write(a + i * 4096, b"x")              # every frame in use
    pin = p.pin_user_pages(a, 4096, write=True)
    before = len(m.kernel.mms)
    with pytest.raises(sf.OutOfMemory):
        p.fork()
    assert len(m.kernel.mms) == before and m.vmstat()["nr_free_pages"] == 0
    assert p.read(a, 1) == b"x" and p.pagemap(a).exclusive
    pin.release()
    m.check()
    p.munmap(a + 4096, 4096)                      # one frame free: now fork can copy
    pin = p.pin_user_pages(a, 4096, write=True)
    c = p.fork()
    assert c.read(a, 1) == b"x" and c.pagemap(a).pfn != p.pagemap(a).pfn
    pin.release()
    m.check()


def test_pin_in_a_thp_splits_it_and_fork_copies_the_pinned_page() -> None:
    """A pin through a huge PMD (the model splits it first: the known
    difference in docs/fidelity.md), then fork and writes: the pin keeps
    the parent's page, the THP's other pages stay COW-shared."""
    m = sf.Machine(nr_frames=2048)
    p = m.spawn()
    base = 0x40000000
    a = p.mmap(base, 2 << 20, sf.PROT_READ | sf.PROT_WRITE,
               sf.MAP_PRIVATE | sf.MAP_ANONYMOUS | sf.MAP_FIXED)
    p.madvise(a, 2 << 20, sf.MADV_HUGEPAGE)
    p.write(a, b"huge")
    assert [v["AnonHugePages"] for v in p.smaps() if v["start"] == a] == [2048]
    pin = p.pin_user_pages(a + 4096, 4096, write=True, longterm=True)
    assert m.vmstat()["thp_split_pmd"] == 1
    c = p.fork()
    p.write(a + 4096, b"parent")
    pin.write(0, b"device")
    assert p.read(a + 4096, 6) == b"device" and c.read(a + 4096, 6) == b"\0" * 6
    assert c.read(a, 4) == b"huge"
    pin.release()
    m.check()
