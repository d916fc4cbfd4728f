"""Pinned pages on the host kernel: the rules the model's GUP (mm/gup.py)
and COW reuse (memory.py wp_can_reuse_anon_folio) follow, each run on this
machine's Linux and on the model with the same steps.  Skipped, with the
reason, without Linux and root (pagemap PFNs), or where the filesystem of
the temporary directory has no O_DIRECT that pins.

1. CVE-2020-29374's shape: a child vmsplices a page it shares with its
   parent (a FOLL_GET reference held by the pipe), drops it with
   MADV_DONTNEED and exits; the parent's write then copies the page
   rather than reuse it (its PFN changes) and the pipe still reads the
   old contents — while without the pipe's reference the parent reuses
   the page (same PFN).
2. The /proc/vmstat counters nr_foll_pin_acquired / nr_foll_pin_released
   count one per page pinned and unpinned (O_DIRECT pins the user buffer
   with FOLL_PIN on Linux 6.3+).
"""

from __future__ import annotations

import ctypes
import errno
import mmap as pymmap
import os
import struct
import sys
import time

import pytest

import specfault as sf

HOST_OK = sys.platform == "linux" and os.geteuid() == 0
pytestmark = pytest.mark.skipif(not HOST_OK, reason="needs Linux and root (pagemap PFNs)")

PAGE = 4096
RW = sf.PROT_READ | sf.PROT_WRITE
ANON = sf.MAP_PRIVATE | sf.MAP_ANONYMOUS


class _Iovec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.vmsplice.argtypes = [ctypes.c_int, ctypes.POINTER(_Iovec), ctypes.c_ulong, ctypes.c_uint]
    libc.vmsplice.restype = ctypes.c_ssize_t
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    return libc


def _pfn(addr: int) -> int:
    with open("/proc/self/pagemap", "rb") as f:
        f.seek((addr // PAGE) * 8)
        (entry,) = struct.unpack("<Q", f.read(8))
    assert entry >> 63, "page not present"
    return entry & ((1 << 55) - 1)


def _host_parent_write_after_child(vmsplice: bool) -> tuple[bool, bytes | None]:
    """(the parent's write reused its page, what the pipe read)."""
    libc = _libc()
    buf = pymmap.mmap(-1, PAGE, pymmap.MAP_PRIVATE | pymmap.MAP_ANONYMOUS)
    addr = ctypes.addressof(ctypes.c_char.from_buffer(buf))
    buf[:8] = b"secret-A"
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:                                      # the child
        code = 0
        try:
            if vmsplice:
                iov = _Iovec(addr, PAGE)
                if libc.vmsplice(wfd, ctypes.byref(iov), 1, 0) != PAGE:
                    code = 2
            if libc.madvise(addr, PAGE, 4) != 0:     # MADV_DONTNEED
                code = 3
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    before = _pfn(addr)
    buf[:8] = b"secret-B"
    reused = _pfn(addr) == before
    got = os.read(rfd, 8) if vmsplice else None
    os.close(rfd)
    os.close(wfd)
    buf.close()
    return reused, got


def _model_parent_write_after_child(vmsplice: bool) -> tuple[bool, bytes | None]:
    m = sf.Machine(nr_frames=64)
    p = m.spawn()
    a = p.mmap(0, PAGE, RW, ANON)
    p.write(a, b"secret-A")
    c = p.fork()
    pipe = c.get_user_pages(a, PAGE) if vmsplice else None
    c.madvise(a, PAGE, sf.MADV_DONTNEED)
    c.exit()
    before = p.pagemap(a).pfn
    p.write(a, b"secret-B")
    reused = p.pagemap(a).pfn == before
    got = None
    if pipe is not None:
        got = pipe.read(0, 8)
        pipe.release()
    m.check()
    return reused, got


@pytest.mark.parametrize("vmsplice", [False, True])
def test_a_reference_held_elsewhere_makes_the_write_copy(vmsplice: bool) -> None:
    want = (False, b"secret-A") if vmsplice else (True, None)
    assert _host_parent_write_after_child(vmsplice) == want
    assert _model_parent_write_after_child(vmsplice) == want


def _foll_pin() -> tuple[int, int]:
    got = {}
    with open("/proc/vmstat") as f:
        for line in f:
            k, v = line.split()
            got[k] = int(v)
    return got["nr_foll_pin_acquired"], got["nr_foll_pin_released"]


def test_foll_pin_counters_count_pages(tmp_path) -> None:  # type: ignore[no-untyped-def]
    pages, reps = 8, 64
    path = tmp_path / "odirect"
    path.write_bytes(b"x" * pages * PAGE)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
    except OSError as exc:
        if exc.errno == errno.EINVAL:
            pytest.skip(f"{tmp_path}: no O_DIRECT on this filesystem")
        raise
    buf = pymmap.mmap(-1, pages * PAGE)
    a0, r0 = _foll_pin()
    try:
        for _ in range(reps):
            assert os.preadv(fd, [buf], 0) == pages * PAGE
    finally:
        os.close(fd)
    want = pages * reps
    deadline = time.monotonic() + 10          # per-CPU deltas fold into /proc/vmstat
    while True:
        a1, r1 = _foll_pin()
        if (a1 - a0 >= want and r1 - r0 >= want) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    if a1 == a0:
        pytest.skip(f"{tmp_path}: O_DIRECT pinned nothing (buffered fallback)")
    assert a1 - a0 >= want and r1 - r0 >= want
    # the model: one count per page pinned, one per page unpinned
    m = sf.Machine(nr_frames=64)
    p = m.spawn()
    a = p.mmap(0, pages * PAGE, RW, ANON)
    for _ in range(reps):
        pin = p.pin_user_pages(a, pages * PAGE, write=True)
        pin.release()
    v = m.vmstat()
    assert v["nr_foll_pin_acquired"] == v["nr_foll_pin_released"] == want
