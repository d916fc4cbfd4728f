"""errno of mmap/munmap/mprotect/mremap/madvise, each case run on the model
and on the host kernel.  Layout for every case:

    page:  0 1 2 3 4 5 6 7
           a a a a . . a a      a = anon rw, . = hole
"""

from __future__ import annotations

import errno
import os

import pytest
from hostkit import PAGE as P
from hostkit import host_errno, layout
from mmkit import assert_linux

from specfault import (
    MADV_DONTFORK,
    MADV_DONTNEED,
    MAP_ANONYMOUS,
    MAP_FIXED,
    MAP_FIXED_NOREPLACE,
    MAP_PRIVATE,
    MAP_SHARED,
    MREMAP_DONTUNMAP,
    MREMAP_FIXED,
    MREMAP_MAYMOVE,
    O_RDONLY,
    O_WRONLY,
    PROT_READ,
    PROT_WRITE,
)

RW = PROT_READ | PROT_WRITE
PA = MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED
NR = MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE

CASES = {
    # name: (call(h, b), errno)
    "mmap len 0": (lambda h, b: h.mmap(b + 20 * P, 0, RW, PA), errno.EINVAL),
    "mmap no MAP_TYPE": (lambda h, b: h.mmap(b + 20 * P, P, RW, MAP_ANONYMOUS | MAP_FIXED),
                         errno.EINVAL),
    "mmap MAP_FIXED unaligned": (lambda h, b: h.mmap(b + 20 * P + 1, P, RW, PA), errno.EINVAL),
    "mmap NOREPLACE over a VMA": (lambda h, b: h.mmap(b + P, P, RW, NR), errno.EEXIST),
    "mmap NOREPLACE partly over": (lambda h, b: h.mmap(b + 5 * P, 2 * P, RW, NR), errno.EEXIST),
    "mmap bad fd": (lambda h, b: h.mmap(b + 20 * P, P, PROT_READ, MAP_PRIVATE | MAP_FIXED, 999),
                    errno.EBADF),
    "mmap too long": (lambda h, b: h.mmap(0, 1 << 48, RW, MAP_PRIVATE | MAP_ANONYMOUS),
                      errno.ENOMEM),
    "munmap len 0": (lambda h, b: h.munmap(b, 0), errno.EINVAL),
    "munmap unaligned": (lambda h, b: h.munmap(b + 1, P), errno.EINVAL),
    "munmap of a hole is fine": (lambda h, b: h.munmap(b + 30 * P, P), 0),
    "mprotect unaligned": (lambda h, b: h.mprotect(b + 1, P, PROT_READ), errno.EINVAL),
    "mprotect unmapped": (lambda h, b: h.mprotect(b + 30 * P, P, PROT_READ), errno.ENOMEM),
    "mprotect bad prot": (lambda h, b: h.mprotect(b, P, 0x10), errno.EINVAL),
    "mprotect len 0": (lambda h, b: h.mprotect(b + 30 * P, 0, PROT_READ), 0),
    "mprotect starts in a hole": (lambda h, b: h.mprotect(b + 5 * P, 2 * P, PROT_READ),
                                  errno.ENOMEM),
    "mprotect GROWSDOWN|GROWSUP": (lambda h, b: h.mprotect(b, P, PROT_READ | 0x03000000),
                                   errno.EINVAL),
    "mremap unmapped": (lambda h, b: h.mremap(b + 30 * P, P, 2 * P), errno.EFAULT),
    "mremap unaligned": (lambda h, b: h.mremap(b + 1, P, 2 * P), errno.EINVAL),
    "mremap new_len 0": (lambda h, b: h.mremap(b, P, 0), errno.EINVAL),
    "mremap bad flags": (lambda h, b: h.mremap(b, P, P, 8), errno.EINVAL),
    "mremap FIXED without MAYMOVE": (lambda h, b: h.mremap(b, P, P, MREMAP_FIXED, b + 40 * P),
                                     errno.EINVAL),
    "mremap grow without room": (lambda h, b: h.mremap(b, 4 * P, 7 * P), errno.ENOMEM),
    "mremap across VMAs": (lambda h, b: h.mremap(b, 8 * P, 9 * P, MREMAP_MAYMOVE), errno.EFAULT),
    "mremap FIXED overlapping": (lambda h, b: h.mremap(b, 2 * P, 2 * P,
                                                       MREMAP_MAYMOVE | MREMAP_FIXED, b + P),
                                 errno.EINVAL),
    "mremap overlap beats EFAULT": (lambda h, b: h.mremap(b + 20 * P, 3 * P, P,
                                                          MREMAP_MAYMOVE | MREMAP_FIXED,
                                                          b + 22 * P), errno.EINVAL),
    "mremap DONTUNMAP resizing": (lambda h, b: h.mremap(b, P, 2 * P,
                                                        MREMAP_MAYMOVE | MREMAP_DONTUNMAP),
                                  errno.EINVAL),
    "mremap DONTUNMAP without MAYMOVE": (lambda h, b: h.mremap(b, P, P, MREMAP_DONTUNMAP),
                                         errno.EINVAL),
    "mremap old_len 0 of private": (lambda h, b: h.mremap(b, 0, P, MREMAP_MAYMOVE),
                                    errno.EINVAL),
    "madvise bad advice": (lambda h, b: h.madvise(b, P, 999), errno.EINVAL),
    "madvise unaligned": (lambda h, b: h.madvise(b + 1, P, MADV_DONTNEED), errno.EINVAL),
    "madvise over a hole": (lambda h, b: h.madvise(b + 2 * P, 6 * P, MADV_DONTNEED),
                            errno.ENOMEM),
    "madvise unmapped": (lambda h, b: h.madvise(b + 30 * P, P, MADV_DONTNEED), errno.ENOMEM),
    "madvise len 0": (lambda h, b: h.madvise(b + 30 * P, 0, MADV_DONTNEED), 0),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_errno(name):
    call, want = CASES[name]

    def s(h, b):
        h.mmap(b, 4 * P, RW, PA)
        h.mmap(b + 6 * P, 2 * P, RW, PA)
        return host_errno(lambda: call(h, b))
    assert_linux(s, want)


def test_mprotect_partial_before_hole():
    """mprotect over  aaaa..aa  from page 2 to 8: ENOMEM, but [2,4) changed.

    after:  aa rr .. aa
    """
    def s(h, b):
        h.mmap(b, 4 * P, RW, PA)
        h.mmap(b + 6 * P, 2 * P, RW, PA)
        e = host_errno(lambda: h.mprotect(b + 2 * P, 6 * P, PROT_READ))
        return e, layout(h.maps(), b, 64 * P)
    assert_linux(s, (errno.ENOMEM, [(0, 2, "rw-p", 0), (2, 4, "r--p", 0), (6, 8, "rw-p", 0)]))


def test_madvise_over_hole_still_advises_mapped_parts():
    """MADV_DONTFORK over  aaaa..aa  from page 2: ENOMEM, both parts advised
    (the VMAs split at 2: the flag is not visible in maps, but the split is)."""
    def s(h, b):
        h.mmap(b, 4 * P, RW, PA)
        h.mmap(b + 6 * P, 2 * P, RW, PA)
        e = host_errno(lambda: h.madvise(b + 2 * P, 6 * P, MADV_DONTFORK))
        return e, layout(h.maps(), b, 64 * P)
    assert_linux(s, (errno.ENOMEM, [(0, 2, "rw-p", 0), (2, 4, "rw-p", 0), (6, 8, "rw-p", 0)]))


def test_file_mapping_access_modes():
    """Shared writable mapping of an O_RDONLY fd: EACCES; mprotect(PROT_WRITE)
    of a shared read-only one: EACCES; private writable: fine; O_WRONLY fd:
    EACCES; unaligned offset: EINVAL; NOREPLACE with MAP_SHARED: EEXIST."""
    def s(h, b):
        h.machine.create_file("/r", b"A" * 4 * P)
        fd = h.open("/r", O_RDONLY)
        fw = h.open("/r", O_WRONLY)
        r = {"shared rw of O_RDONLY": host_errno(
            lambda: h.mmap(b, P, RW, MAP_SHARED | MAP_FIXED, fd, 0))}
        s_ = h.mmap(b, P, PROT_READ, MAP_SHARED | MAP_FIXED, fd, 0)
        r["mprotect W of shared O_RDONLY"] = host_errno(lambda: h.mprotect(s_, P, RW))
        r["private rw of O_RDONLY"] = host_errno(
            lambda: h.mmap(b + 2 * P, P, RW, MAP_PRIVATE | MAP_FIXED, fd, 0))
        r["O_WRONLY"] = host_errno(
            lambda: h.mmap(b + 4 * P, P, PROT_READ, MAP_SHARED | MAP_FIXED, fw, 0))
        r["unaligned offset"] = host_errno(
            lambda: h.mmap(b + 4 * P, P, PROT_READ, MAP_PRIVATE | MAP_FIXED, fd, 1))
        r["NOREPLACE shared"] = host_errno(
            lambda: h.mmap(b, P, PROT_READ, MAP_SHARED | MAP_FIXED_NOREPLACE, fd, 0))
        r["maps"] = layout(h.maps(), b, 64 * P)
        return r
    assert_linux(s, {"shared rw of O_RDONLY": errno.EACCES,
                     "mprotect W of shared O_RDONLY": errno.EACCES,
                     "private rw of O_RDONLY": 0, "O_WRONLY": errno.EACCES,
                     "unaligned offset": errno.EINVAL, "NOREPLACE shared": errno.EEXIST,
                     "maps": [(0, 1, "r--s", 0), (2, 3, "rw-p", 0)]})
    assert os.O_RDONLY == O_RDONLY
