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
from hostkit import host_errno, layout, vmflags
from mmkit import assert_linux, on_model

from specfault import (
    MADV_DONTFORK,
    MADV_DONTNEED,
    MAP_32BIT,
    MAP_ABOVE4G,
    MAP_ANONYMOUS,
    MAP_DROPPABLE,
    MAP_FIXED,
    MAP_FIXED_NOREPLACE,
    MAP_GROWSDOWN,
    MAP_HUGETLB,
    MAP_LOCKED,
    MAP_PRIVATE,
    MAP_SHARED,
    MAP_SHARED_VALIDATE,
    MAP_STACK,
    MAP_SYNC,
    MAP_UNINITIALIZED,
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


# ------------------------------------------ lengths that wrap past 2**64
M64 = 1 << 64
TASK = 1 << 47
SA = MAP_SHARED | MAP_ANONYMOUS | MAP_FIXED

WRAPS = {
    # name: (call(h, b), errno) — each must leave the layout as it was
    "mprotect len 2**64-4096 (end wraps below start)": (
        lambda h, b: h.mprotect(b, M64 - P, PROT_READ), errno.ENOMEM),
    "mprotect len 2**64-1 (PAGE_ALIGN wraps to 0)": (
        lambda h, b: h.mprotect(b, M64 - 1, PROT_READ), errno.ENOMEM),
    "mprotect end exactly 2**64": (lambda h, b: h.mprotect(b, M64 - b, PROT_READ), errno.ENOMEM),
    "munmap len 2**64-4096": (lambda h, b: h.munmap(b, M64 - P), errno.EINVAL),
    "munmap len 2**64-1": (lambda h, b: h.munmap(b, M64 - 1), errno.EINVAL),
    "munmap past TASK_SIZE": (lambda h, b: h.munmap(b, TASK), errno.EINVAL),
    "madvise len 2**64-4096": (lambda h, b: h.madvise(b, M64 - P, MADV_DONTFORK), errno.EINVAL),
    "madvise len 2**64-1": (lambda h, b: h.madvise(b, M64 - 1, MADV_DONTFORK), errno.EINVAL),
    "madvise end exactly 2**64": (lambda h, b: h.madvise(b, M64 - b, MADV_DONTFORK),
                                  errno.EINVAL),
    "mremap new_len 2**64-1 (wraps to 0)": (lambda h, b: h.mremap(b, P, M64 - 1, MREMAP_MAYMOVE),
                                            errno.EINVAL),
    "mremap new_len 2**64-4096": (lambda h, b: h.mremap(b, P, M64 - P, MREMAP_MAYMOVE),
                                  errno.EINVAL),
    "mremap new_len past TASK_SIZE": (lambda h, b: h.mremap(b, P, TASK, MREMAP_MAYMOVE),
                                      errno.EINVAL),
    "mremap new_len past TASK_SIZE in place": (lambda h, b: h.mremap(b, P, TASK), errno.EINVAL),
    "mremap old_len 2**64-1 of private (wraps to 0)": (
        lambda h, b: h.mremap(b, M64 - 1, P, MREMAP_MAYMOVE), errno.EINVAL),
    "mremap old_len 2**64-4096": (lambda h, b: h.mremap(b, M64 - P, P), errno.EINVAL),
    "mremap FIXED new_addr 2**64-4096": (
        lambda h, b: h.mremap(b, P, P, MREMAP_MAYMOVE | MREMAP_FIXED, M64 - P), errno.EINVAL),
    "mremap FIXED old end wraps (overlap)": (
        lambda h, b: h.mremap(b, M64 - P, P, MREMAP_MAYMOVE | MREMAP_FIXED, b + 40 * P),
        errno.EINVAL),
    "mremap DONTUNMAP new_addr unaligned": (
        lambda h, b: h.mremap(b, P, P, MREMAP_MAYMOVE | MREMAP_DONTUNMAP, b + 40 * P + 1),
        errno.EINVAL),
    "mremap DONTUNMAP new_addr overlapping": (
        lambda h, b: h.mremap(b, 2 * P, 2 * P, MREMAP_MAYMOVE | MREMAP_DONTUNMAP, b + P),
        errno.EINVAL),
    "mmap FIXED len 2**64-4096": (lambda h, b: h.mmap(b, M64 - P, RW, PA), errno.ENOMEM),
    "mmap FIXED len 2**64-1": (lambda h, b: h.mmap(b, M64 - 1, RW, PA), errno.ENOMEM),
    "mmap FIXED end past TASK_SIZE": (lambda h, b: h.mmap(TASK - P, 2 * P, RW, PA), errno.ENOMEM),
    "mmap FIXED at 2**64-4096": (lambda h, b: h.mmap(M64 - P, P, RW, PA), errno.ENOMEM),
}


@pytest.mark.parametrize("name", sorted(WRAPS))
def test_wrapping_length_changes_nothing(name):
    """Lengths are unsigned long: a length whose end wraps past 2**64 (or
    that PAGE_ALIGN rounds to 0) is refused before anything changes.

    page:  0 1 2 3 4 5 6 7
           a a a a . . a a      (and after)
    """
    call, want = WRAPS[name]

    def s(h, b):
        h.mmap(b, 4 * P, RW, PA)
        h.mmap(b + 6 * P, 2 * P, RW, PA)
        return host_errno(lambda: call(h, b)), layout(h.maps(), b, 64 * P)
    assert_linux(s, (want, [(0, 4, "rw-p", 0), (6, 8, "rw-p", 0)]), forked=True)


def test_mprotect_to_past_task_size_applies_before_the_hole():
    """An end past TASK_SIZE that does not wrap is a range with a hole:
    what precedes the hole changes, then ENOMEM."""
    def s(h, b):
        h.mmap(b, 4 * P, RW, PA)
        h.mmap(b + 6 * P, 2 * P, RW, PA)
        return host_errno(lambda: h.mprotect(b, TASK, PROT_READ)), layout(h.maps(), b, 64 * P)
    assert_linux(s, (errno.ENOMEM, [(0, 4, "r--p", 0), (6, 8, "rw-p", 0)]), forked=True)


def test_mremap_dontunmap_takes_new_addr_as_a_hint():
    """With MREMAP_DONTUNMAP (no MREMAP_FIXED) a free new_addr is used."""
    def s(h, b):
        h.mmap(b, 4 * P, RW, PA)
        got = h.mremap(b, P, P, MREMAP_MAYMOVE | MREMAP_DONTUNMAP, b + 40 * P)
        return (got - b) // P, layout(h.maps(), b, 64 * P)
    assert_linux(s, (40, [(0, 4, "rw-p", 0), (40, 41, "rw-p", 0)]))


def test_mremap_old_len_wrapping_to_zero_duplicates_a_shared_mapping():
    """old_len 2**64-1 is PAGE_ALIGNed to 0: on a shared mapping, the
    "duplicate" special case (a second mapping of the same pages)."""
    def s(h, b):
        h.mmap(b, 2 * P, RW, SA)
        h.write(b, b"s")
        got = h.mremap(b, M64 - 1, P, MREMAP_MAYMOVE)
        return h.read(got, 1), layout(h.maps(), b, 64 * P)
    assert_linux(s, (b"s", [(0, 2, "rw-s", 0)]), forked=True)


# ------------------------------------------------ MAP_SHARED_VALIDATE & co
SV = MAP_SHARED_VALIDATE
SHV = {
    # name: (flags, with a file?, errno)
    "SHARED_VALIDATE|ANONYMOUS": (SV | MAP_ANONYMOUS | MAP_FIXED, False, errno.EINVAL),
    "SHARED_VALIDATE|ANONYMOUS, unknown flag": (SV | MAP_ANONYMOUS | MAP_FIXED | 0x800000, False,
                                                errno.EINVAL),
    "SHARED_VALIDATE file": (SV | MAP_FIXED, True, 0),
    "SHARED_VALIDATE file, unknown flag": (SV | MAP_FIXED | 0x800000, True, errno.EOPNOTSUPP),
    "SHARED_VALIDATE file, MAP_SYNC (no DAX)": (SV | MAP_FIXED | MAP_SYNC, True, errno.EOPNOTSUPP),
    "SHARED_VALIDATE file, MAP_FIXED_NOREPLACE": (SV | MAP_FIXED_NOREPLACE, True, errno.EOPNOTSUPP),
    "SHARED_VALIDATE file, MAP_UNINITIALIZED (legacy)": (SV | MAP_FIXED | MAP_UNINITIALIZED, True,
                                                         0),
    "SHARED_VALIDATE file, MAP_ABOVE4G (legacy)": (SV | MAP_FIXED | MAP_ABOVE4G, True, 0),
    "SHARED file, unknown flag ignored": (MAP_SHARED | MAP_FIXED | 0x800000, True, 0),
    "PRIVATE file, unknown flag ignored": (MAP_PRIVATE | MAP_FIXED | 0x800000, True, 0),
    "SHARED|ANONYMOUS, unknown flag ignored": (MAP_SHARED | MAP_ANONYMOUS | MAP_FIXED | 0x800000,
                                               False, 0),
    "type 0x04": (0x04 | MAP_ANONYMOUS | MAP_FIXED, False, errno.EINVAL),
    "type 0x0f": (0x0F | MAP_ANONYMOUS | MAP_FIXED, False, errno.EINVAL),
    "DROPPABLE file": (MAP_DROPPABLE | MAP_FIXED, True, errno.EINVAL),
    "DROPPABLE|LOCKED": (MAP_DROPPABLE | MAP_ANONYMOUS | MAP_FIXED | MAP_LOCKED, False,
                         errno.EINVAL),
    "HUGETLB file": (MAP_PRIVATE | MAP_FIXED | MAP_HUGETLB, True, errno.EINVAL),
    "GROWSDOWN file": (MAP_PRIVATE | MAP_FIXED | MAP_GROWSDOWN, True, errno.EINVAL),
    "SHARED|ANONYMOUS|GROWSDOWN": (SA | MAP_GROWSDOWN, False, errno.EINVAL),
}


@pytest.mark.parametrize("name", sorted(SHV))
def test_map_type_and_validated_flags(name):
    """MAP_SHARED_VALIDATE (= MAP_SHARED|MAP_PRIVATE) needs a file and
    refuses any flag outside LEGACY_MAP_MASK (EOPNOTSUPP); MAP_SHARED and
    MAP_PRIVATE ignore unknown flags; other types are EINVAL."""
    flags, with_file, want = SHV[name]

    def s(h, b):
        h.mmap(b, 4 * P, RW, PA)
        fd = -1
        if with_file:
            h.machine.create_file("/f", b"A" * 4 * P)
            fd = h.open("/f", os.O_RDWR)
        e = host_errno(lambda: h.mmap(b + 20 * P, P, RW, flags, fd, 0))
        return e, layout(h.maps(), b, 64 * P)
    made = [(20, 21, ("rw-s" if flags & 3 != MAP_PRIVATE else "rw-p"), 0)] if not want else []
    assert_linux(s, (want, [(0, 4, "rw-p", 0)] + made), tmpfs=True)


def test_map_sync_and_map_stack_flags():
    """MAP_SYNC gives VM_SYNC ("sf") where it is not validated (MAP_SHARED,
    MAP_PRIVATE, anonymous); MAP_STACK gives VM_NOHUGEPAGE ("nh"): neither
    merges with a plain neighbour."""
    def s(h, b):
        h.machine.create_file("/f", b"A" * P)
        fd = h.open("/f", os.O_RDWR)
        h.mmap(b, P, RW, MAP_SHARED | MAP_FIXED | MAP_SYNC, fd, 0)
        h.mmap(b + 2 * P, P, RW, MAP_PRIVATE | MAP_FIXED | MAP_SYNC, fd, 0)
        h.mmap(b + 4 * P, P, RW, PA | MAP_SYNC)
        h.mmap(b + 5 * P, P, RW, PA)
        h.mmap(b + 6 * P, P, RW, PA | MAP_STACK)
        return layout(h.maps(), b, 64 * P), vmflags(h.smaps(), b, 64 * P)
    assert_linux(s, ([(0, 1, "rw-s", 0), (2, 3, "rw-p", 0), (4, 5, "rw-p", 0),
                      (5, 6, "rw-p", 0), (6, 7, "rw-p", 0)],
                     [(0, 1, "rd wr sh mr mw me ms sf"), (2, 3, "rd wr mr mw me ac sf"),
                      (4, 5, "rd wr mr mw me ac sf"), (5, 6, "rd wr mr mw me ac"),
                      (6, 7, "rd wr mr mw me ac nh")]), tmpfs=True)


def test_file_offset_limit():
    """A file mapping must end within MAX_LFS_FILESIZE (2**63 - 1):
    file_mmap_ok() is EOVERFLOW past it; anonymous mappings ignore the
    offset, however large."""
    def s(h, b):
        h.machine.create_file("/f", b"A" * P)
        fd = h.open("/f", os.O_RDWR)
        last_ok = host_errno(lambda: h.mmap(b, P, RW, MAP_PRIVATE | MAP_FIXED, fd,
                                            (1 << 63) - 2 * P))
        too_far = host_errno(lambda: h.mmap(b + 2 * P, P, RW, MAP_PRIVATE | MAP_FIXED, fd,
                                            (1 << 63) - P))
        anon = host_errno(lambda: h.mmap(b + 4 * P, P, RW, PA, -1, M64 - P))
        return last_ok, too_far, anon, [v[:3] for v in layout(h.maps(), b, 64 * P)]
    assert_linux(s, (0, errno.EOVERFLOW, 0, [(0, 1, "rw-p"), (4, 5, "rw-p")]), tmpfs=True)


def test_map_32bit_lands_below_2gib():
    """MAP_32BIT: the legacy bottom-up layout in [1 GiB, 2 GiB) (the host
    randomises where in it; the model starts at 1 GiB); a free hint in it
    is taken, one above it is not."""
    def s(h, b):
        a = h.mmap(0, P, RW, MAP_PRIVATE | MAP_ANONYMOUS | MAP_32BIT)
        hint = h.mmap(0x50000000, P, RW, MAP_PRIVATE | MAP_ANONYMOUS | MAP_32BIT)
        high = h.mmap(0x90000000, P, RW, MAP_PRIVATE | MAP_ANONYMOUS | MAP_32BIT)
        for x in (a, hint, high):
            h.munmap(x, P)
        return 1 << 30 <= a < 1 << 31, hex(hint), 1 << 30 <= high < 1 << 31
    assert_linux(s, (True, "0x50000000", True), forked=True)
    assert on_model(lambda p, b: p.mmap(0, P, RW, MAP_PRIVATE | MAP_ANONYMOUS | MAP_32BIT)) \
        == 1 << 30


def test_brk_past_the_address_space_is_refused():
    """brk() to a break past TASK_SIZE, or within a page of 2**64 (which
    PAGE_ALIGN wraps to 0), fails check_brk_limits(): the old break is
    returned and nothing changes."""
    import ctypes

    from hostkit import HOST_OK, run_host_forked
    values = (M64 - 1, M64 - 3 * P, TASK)

    def model(p, b):
        old = p.brk(0)
        p.brk(old + 2 * P)
        before = p.maps()
        return [p.brk(v) == old + 2 * P for v in values], p.maps() == before
    assert on_model(model) == ([True] * 3, True)
    if HOST_OK:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.syscall.restype = ctypes.c_ulong
        libc.syscall.argtypes = [ctypes.c_long, ctypes.c_ulong]

        def host(h, b):
            old = libc.syscall(12, 0)                      # SYS_brk
            return [libc.syscall(12, v) == old for v in values]
        assert run_host_forked(host) == [True] * 3
