"""Bad input to the memory-pressure and truncation syscalls (MADV_PAGEOUT,
ftruncate, fallocate), each case run on the model and, as root on Linux, on
the host kernel (mmkit.assert_linux): the errno Linux gives, in Linux's
order of checks.  The cases that depend on the host's swap state (no swap,
swap full) and the SIGBUS after a truncation are pinned through the
oracle's runner in tests/oracle/test_pressure_badinput_host.py.

Layout for every case: /f, 4 pages, open O_RDWR (``fd``) and O_RDONLY
(``ro``); anonymous rw pages 0-3 and 6-7 of the window (4-5 a hole), never
written: host swap is system-wide, so a case that pages memory out would
disturb a concurrent swap run (the oracle's --swap mode counts pswpout) —
these pin the checks made before any page is touched.
"""

from __future__ import annotations

import errno

import pytest
from hostkit import PAGE as P
from hostkit import host_errno
from mmkit import assert_linux, on_model

import specfault as sf
from specfault import (
    FALLOC_FL_KEEP_SIZE,
    FALLOC_FL_PUNCH_HOLE,
    MADV_PAGEOUT,
    MAP_ANONYMOUS,
    MAP_FIXED,
    MAP_PRIVATE,
    O_RDONLY,
    O_RDWR,
    PROT_READ,
    PROT_WRITE,
)

RW = PROT_READ | PROT_WRITE
PA = MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED
PUNCH = FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE
M64 = 1 << 64
BADFD = 999

CASES = {
    # name: (call(h, b, fd, ro), errno)
    # do_sys_ftruncate: length < 0 first, then the fd, then FMODE_WRITE
    "ftruncate O_RDONLY fd": (lambda h, b, fd, ro: h.ftruncate(ro, 0), errno.EINVAL),
    "ftruncate negative size": (lambda h, b, fd, ro: h.ftruncate(fd, -1), errno.EINVAL),
    "ftruncate negative size, bad fd": (lambda h, b, fd, ro: h.ftruncate(BADFD, -1), errno.EINVAL),
    "ftruncate bad fd": (lambda h, b, fd, ro: h.ftruncate(BADFD, 0), errno.EBADF),
    "ftruncate O_RDONLY fd, negative size": (lambda h, b, fd, ro: h.ftruncate(ro, -4096),
                                             errno.EINVAL),
    # vfs_fallocate: offset/len, then the mode, then FMODE_WRITE, then EFBIG
    "fallocate PUNCH_HOLE without KEEP_SIZE": (
        lambda h, b, fd, ro: h.fallocate(fd, FALLOC_FL_PUNCH_HOLE, 0, P), errno.EOPNOTSUPP),
    "fallocate PUNCH_HOLE without KEEP_SIZE, O_RDONLY fd": (
        lambda h, b, fd, ro: h.fallocate(ro, FALLOC_FL_PUNCH_HOLE, 0, P), errno.EOPNOTSUPP),
    "fallocate PUNCH_HOLE|KEEP_SIZE, O_RDONLY fd": (
        lambda h, b, fd, ro: h.fallocate(ro, PUNCH, 0, P), errno.EBADF),
    "fallocate PUNCH_HOLE|KEEP_SIZE, O_RDONLY fd, len 0": (
        lambda h, b, fd, ro: h.fallocate(ro, PUNCH, 0, 0), errno.EINVAL),
    "fallocate PUNCH_HOLE|KEEP_SIZE, negative offset": (
        lambda h, b, fd, ro: h.fallocate(fd, PUNCH, -P, P), errno.EINVAL),
    "fallocate PUNCH_HOLE|KEEP_SIZE, bad fd": (
        lambda h, b, fd, ro: h.fallocate(BADFD, PUNCH, 0, P), errno.EBADF),
    "fallocate PUNCH_HOLE|KEEP_SIZE, end past 2**63-1": (
        lambda h, b, fd, ro: h.fallocate(fd, PUNCH, (1 << 63) - P, 2 * P), errno.EFBIG),
    # madvise: is_valid_madvise (EINVAL) before the walk (ENOMEM over a hole)
    "MADV_PAGEOUT unaligned start": (lambda h, b, fd, ro: h.madvise(b + 1, P, MADV_PAGEOUT),
                                     errno.EINVAL),
    "MADV_PAGEOUT unaligned start, length 0": (
        lambda h, b, fd, ro: h.madvise(b + 1, 0, MADV_PAGEOUT), errno.EINVAL),
    "MADV_PAGEOUT length 2**64-4096 (end wraps)": (
        lambda h, b, fd, ro: h.madvise(b, M64 - P, MADV_PAGEOUT), errno.EINVAL),
    "MADV_PAGEOUT length 2**64-1 (PAGE_ALIGN wraps to 0)": (
        lambda h, b, fd, ro: h.madvise(b, M64 - 1, MADV_PAGEOUT), errno.EINVAL),
    "MADV_PAGEOUT unaligned length (rounded up)": (
        lambda h, b, fd, ro: h.madvise(b, 1, MADV_PAGEOUT), 0),
    "MADV_PAGEOUT length 0": (lambda h, b, fd, ro: h.madvise(b, 0, MADV_PAGEOUT), 0),
    "MADV_PAGEOUT of an unmapped range": (
        lambda h, b, fd, ro: h.madvise(b + 4 * P, 2 * P, MADV_PAGEOUT), errno.ENOMEM),
    "MADV_PAGEOUT over a hole": (lambda h, b, fd, ro: h.madvise(b, 8 * P, MADV_PAGEOUT),
                                 errno.ENOMEM),
    "madvise unknown advice": (lambda h, b, fd, ro: h.madvise(b, P, 12345), errno.EINVAL),
}


def _setup(h, b):  # type: ignore[no-untyped-def]
    h.machine.create_file("/f", b"F" * 4 * P)
    fd = h.open("/f", O_RDWR)
    ro = h.open("/f", O_RDONLY)
    h.mmap(b, 4 * P, RW, PA)
    h.mmap(b + 6 * P, 2 * P, RW, PA)
    return fd, ro


@pytest.mark.parametrize("name", sorted(CASES))
def test_errno(name: str) -> None:
    call, want = CASES[name]

    def s(h, b):  # type: ignore[no-untyped-def]
        fd, ro = _setup(h, b)
        e = host_errno(lambda: call(h, b, fd, ro))
        # a refused call changed nothing: the file keeps its size and data
        return e, h.pread(fd, 8, 4 * P - 4)
    assert_linux(s, (want, b"FFFF"), tmpfs=True)


def test_the_python_api_refuses_what_no_syscall_can_carry() -> None:
    """A length that does not fit the syscall's argument type is the
    caller's error (ValueError/TypeError naming the argument), never an
    errno and never a traceback from inside the model."""
    def s(p, b):  # type: ignore[no-untyped-def]
        fd, _ro = _setup(p, b)
        out = []
        for call in (lambda: p.ftruncate(fd, 1 << 63), lambda: p.madvise(b, -1, MADV_PAGEOUT),
                     lambda: p.madvise(b, M64, MADV_PAGEOUT), lambda: p.ftruncate(fd, "0"),
                     lambda: p.fallocate(fd, PUNCH, 0, 1 << 63)):
            with pytest.raises((ValueError, TypeError)) as exc:
                call()
            out.append(str(exc.value).split(":")[0])
        return out
    assert on_model(s) == ["ftruncate", "madvise", "madvise", "ftruncate", "fallocate"]


def test_model_pageout_without_swap_keeps_the_pages() -> None:
    """No swap device: MADV_PAGEOUT returns 0 and the anonymous pages stay
    (add_to_swap fails, the folio is put back); the host rule is pinned in
    tests/oracle/test_pressure_badinput_host.py (it needs the host's swap
    off)."""
    m = sf.Machine()
    p = m.spawn()
    a = p.mmap(0, 4 * P, RW, MAP_PRIVATE | MAP_ANONYMOUS)
    for i in range(4):
        p.write(a + i * P, b"pg%d" % i)
    p.madvise(a, 4 * P, MADV_PAGEOUT)
    assert all(p.pagemap(a + i * P).present for i in range(4))
    assert [p.read(a + i * P, 3) for i in range(4)] == [b"pg%d" % i for i in range(4)]
    assert m.vmstat()["pswpout"] == 0
    m.check()


def test_model_pageout_when_swap_is_full_keeps_what_finds_no_slot() -> None:
    """Swap full: MADV_PAGEOUT returns 0; pages that found a slot are
    swapped, the others stay resident with their contents; a second
    MADV_PAGEOUT changes nothing and a read brings a swapped page back."""
    m = sf.Machine(swap_pages=3)                   # the header and two slots
    p = m.spawn()
    a = p.mmap(0, 4 * P, RW, MAP_PRIVATE | MAP_ANONYMOUS)
    for i in range(4):
        p.write(a + i * P, b"pg%d" % i)
    p.madvise(a, 4 * P, MADV_PAGEOUT)
    state = [(p.pagemap(a + i * P).present, p.pagemap(a + i * P).swapped) for i in range(4)]
    assert state == [(False, True)] * 2 + [(True, False)] * 2
    assert m.meminfo()["SwapFree"] == 0
    p.madvise(a, 4 * P, MADV_PAGEOUT)
    assert [(p.pagemap(a + i * P).present, p.pagemap(a + i * P).swapped)
            for i in range(4)] == state
    assert [p.read(a + i * P, 3) for i in range(4)] == [b"pg%d" % i for i in range(4)]
    m.check()
