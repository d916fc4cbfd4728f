"""The public API refuses bad input before anything changes: one class of
bad input per parametrised test, so each stays refused.

* a wrong type (bool, float, str, None where an int is wanted; an int or
  a str where bytes are wanted) is a TypeError naming the argument;
* an int the syscall's C type cannot carry (a negative length, 2**64, an
  fd beyond int), an unknown or unmodelled flag, a typo in ``kind``, is a
  ValueError naming the argument;
* an int the C type carries goes to the model, which answers as Linux
  does (OSError with Linux's errno) — checked on the host where the host
  can run it.
"""

from __future__ import annotations

import errno
import os
import sys
import tempfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "mm"))

from hostkit import HOST_OK, run_host_forked  # noqa: E402

import specfault as sf  # noqa: E402

P = 4096
RW = sf.PROT_READ | sf.PROT_WRITE
PA = sf.MAP_PRIVATE | sf.MAP_ANONYMOUS
A = 0x10000000


def setup():
    m = sf.Machine(nr_frames=256)
    m.create_file("/f", b"f" * 2 * P)
    p = m.spawn()
    p.mmap(A, 4 * P, RW, PA | sf.MAP_FIXED)
    p.write(A, b"data")
    fd = p.open("/f", sf.O_RDWR)
    return m, p, fd


def state(m, p):
    """What a refused call must leave as it was."""
    return (p.maps(), [p.pagemap(A + i * P).raw for i in range(4)], dict(m.kernel.vmstat),
            sorted(p.files), m.kernel.fs.read(m.kernel.fs.inodes["/f"], 0, 2 * P),
            sorted(m.kernel.fs.inodes))


# (description, call(m, p, fd), argument named in the message)
TYPE_ERRORS = [
    ("write an int", lambda m, p, fd: p.write(A, 5), "data"),
    ("write a str", lambda m, p, fd: p.write(A, "hello"), "data"),
    ("write a list", lambda m, p, fd: p.write(A, [1, 2]), "data"),
    ("write None", lambda m, p, fd: p.write(A, None), "data"),
    ("write at a float", lambda m, p, fd: p.write(float(A), b"x"), "addr"),
    ("read n a bool", lambda m, p, fd: p.read(A, True), "n"),
    ("read n a float", lambda m, p, fd: p.read(A, 4.0), "n"),
    ("read at a str", lambda m, p, fd: p.read(str(A), 1), "addr"),
    ("access at a bool", lambda m, p, fd: p.access(True), "addr"),
    ("access kind an int", lambda m, p, fd: p.access(A, 1), "kind"),
    ("mmap length a float", lambda m, p, fd: p.mmap(0, 4096.0, RW, PA), "length"),
    ("mmap prot a str", lambda m, p, fd: p.mmap(0, P, "rw", PA), "prot"),
    ("mmap flags a bool", lambda m, p, fd: p.mmap(0, P, RW, True), "flags"),
    ("mmap fd a str", lambda m, p, fd: p.mmap(0, P, RW, sf.MAP_PRIVATE, "/f"), "fd"),
    ("mmap offset None", lambda m, p, fd: p.mmap(0, P, RW, PA, -1, None), "offset"),
    ("munmap addr None", lambda m, p, fd: p.munmap(None, P), "addr"),
    ("mprotect prot a float", lambda m, p, fd: p.mprotect(A, P, 1.0), "prot"),
    ("mremap new_len a str", lambda m, p, fd: p.mremap(A, P, "2"), "new_len"),
    ("mremap flags a bool", lambda m, p, fd: p.mremap(A, P, P, False), "flags"),
    ("madvise advice a str", lambda m, p, fd: p.madvise(A, P, "MADV_DONTNEED"), "advice"),
    ("madvise length a bool", lambda m, p, fd: p.madvise(A, True, sf.MADV_DONTNEED), "length"),
    ("brk a float", lambda m, p, fd: p.brk(1.5), "addr"),
    ("pagemap a str", lambda m, p, fd: p.pagemap("0x10000000"), "addr"),
    ("open path bytes", lambda m, p, fd: p.open(b"/f"), "path"),
    ("open flags a str", lambda m, p, fd: p.open("/f", "r"), "flags"),
    ("close a str", lambda m, p, fd: p.close(str(fd)), "fd"),
    ("close a bool", lambda m, p, fd: p.close(True), "fd"),
    ("pread n a float", lambda m, p, fd: p.pread(fd, 1.0, 0), "n"),
    ("pread offset a str", lambda m, p, fd: p.pread(fd, 1, "0"), "offset"),
    ("pwrite an int", lambda m, p, fd: p.pwrite(fd, 3, 0), "data"),
    ("pwrite a str", lambda m, p, fd: p.pwrite(fd, "xyz", 0), "data"),
    ("create_file data an int", lambda m, p, fd: m.create_file("/g", 7), "data"),
    ("create_file path a Path", lambda m, p, fd: m.create_file(Path("/g")), "path"),
    ("spawn name an int", lambda m, p, fd: m.spawn(3), "name"),
    ("Machine nr_frames a bool", lambda m, p, fd: sf.Machine(nr_frames=True), "nr_frames"),
    ("Machine nr_frames a float", lambda m, p, fd: sf.Machine(nr_frames=100.0), "nr_frames"),
    ("Machine config a dict", lambda m, p, fd: sf.Machine(config={"nr_frames": 4}), "config"),
]

VALUE_ERRORS = [
    ("mmap negative length", lambda m, p, fd: p.mmap(0, -P, RW, PA), "length"),
    ("mmap addr 2**64", lambda m, p, fd: p.mmap(1 << 64, P, RW, PA), "addr"),
    ("mmap negative offset", lambda m, p, fd: p.mmap(0, P, RW, sf.MAP_PRIVATE, fd, -P), "offset"),
    ("mmap fd beyond int", lambda m, p, fd: p.mmap(0, P, RW, sf.MAP_PRIVATE, 1 << 31), "fd"),
    ("mmap anonymous MAP_HUGETLB", lambda m, p, fd: p.mmap(0, P, RW, PA | sf.MAP_HUGETLB),
     "MAP_HUGETLB"),
    ("munmap negative length", lambda m, p, fd: p.munmap(A, -1), "length"),
    ("mprotect negative length", lambda m, p, fd: p.mprotect(A, -P, sf.PROT_READ), "length"),
    ("mprotect negative prot", lambda m, p, fd: p.mprotect(A, P, -1), "prot"),
    ("mremap negative new_len", lambda m, p, fd: p.mremap(A, P, -P), "new_len"),
    ("mremap new_addr 2**64", lambda m, p, fd: p.mremap(A, P, P, 3, 1 << 64), "new_addr"),
    ("madvise negative length", lambda m, p, fd: p.madvise(A, -P, sf.MADV_DONTNEED), "length"),
    ("madvise advice beyond int", lambda m, p, fd: p.madvise(A, P, 1 << 31), "advice"),
    ("brk negative", lambda m, p, fd: p.brk(-1), "addr"),
    ("read negative n", lambda m, p, fd: p.read(A, -1), "n"),
    ("read negative addr", lambda m, p, fd: p.read(-A, 1), "addr"),
    ("write at 2**64", lambda m, p, fd: p.write(1 << 64, b"x"), "addr"),
    ("access kind typo", lambda m, p, fd: p.access(A, "wirte"), "kind"),
    ("pagemap negative", lambda m, p, fd: p.pagemap(-1), "addr"),
    ("open O_APPEND", lambda m, p, fd: p.open("/f", sf.O_RDWR | sf.O_APPEND), "O_APPEND"),
    ("open O_DIRECT", lambda m, p, fd: p.open("/f", sf.O_RDWR | sf.O_DIRECT), "O_DIRECT"),
    ("open O_TMPFILE", lambda m, p, fd: p.open("/", sf.O_RDWR | sf.O_TMPFILE), "O_TMPFILE"),
    ("open O_DIRECTORY", lambda m, p, fd: p.open("/f", sf.O_DIRECTORY), "O_DIRECTORY"),
    ("open O_PATH", lambda m, p, fd: p.open("/f", sf.O_PATH), "O_PATH"),
    ("open an unknown bit", lambda m, p, fd: p.open("/f", sf.O_RDWR | 0o100000000), "flags"),
    ("open flags beyond int", lambda m, p, fd: p.open("/f", 1 << 40), "flags"),
    ("open a relative path", lambda m, p, fd: p.open("f"), "path"),
    ("close fd beyond int", lambda m, p, fd: p.close(1 << 32), "fd"),
    ("pread negative n", lambda m, p, fd: p.pread(fd, -1, 0), "n"),
    ("pread offset beyond loff_t", lambda m, p, fd: p.pread(fd, 1, 1 << 63), "offset"),
    ("pwrite offset beyond loff_t", lambda m, p, fd: p.pwrite(fd, b"x", -(1 << 63) - 1), "offset"),
    ("create_file a relative path", lambda m, p, fd: m.create_file("g"), "path"),
    ("Machine nr_frames 0", lambda m, p, fd: sf.Machine(nr_frames=0), "nr_frames"),
    ("Machine nr_frames negative", lambda m, p, fd: sf.Machine(nr_frames=-5), "nr_frames"),
]


@pytest.mark.parametrize("what,call,arg", TYPE_ERRORS, ids=[c[0] for c in TYPE_ERRORS])
def test_wrong_type_is_a_type_error_and_changes_nothing(what, call, arg):
    m, p, fd = setup()
    before = state(m, p)
    with pytest.raises(TypeError, match=arg):
        call(m, p, fd)
    assert state(m, p) == before


@pytest.mark.parametrize("what,call,arg", VALUE_ERRORS, ids=[c[0] for c in VALUE_ERRORS])
def test_value_outside_the_c_type_or_unmodelled_is_a_value_error(what, call, arg):
    m, p, fd = setup()
    before = state(m, p)
    with pytest.raises(ValueError, match=arg):
        call(m, p, fd)
    assert state(m, p) == before


def test_write_of_bytes_likes():
    """bytes, bytearray and memoryview (of any format: its raw bytes) all
    store the same; an int never turns into zero bytes."""
    m, p, fd = setup()
    p.write(A, bytearray(b"ab"))
    p.write(A + 2, memoryview(b"cd"))
    p.write(A + 4, memoryview(bytes([1, 0, 0, 0])).cast("I"))
    assert p.read(A, 8) == b"abcd\x01\x00\x00\x00"
    with pytest.raises(TypeError):
        p.write(A, 5)
    assert p.read(A, 5) == b"abcd\x01"


def test_empty_write_touches_nothing():
    """Storing zero bytes faults nothing in (memcpy of 0 bytes)."""
    m, p, fd = setup()
    before = m.vmstat()["pgfault"]
    p.write(A + 2 * P, b"")
    p.write(A + 100 * P, b"")             # not even a SIGSEGV where nothing is mapped
    assert m.vmstat()["pgfault"] == before
    assert not p.pagemap(A + 2 * P).present


# --------------------------- values the C type carries: Linux's errno
ERRNOS = [
    ("madvise advice -1", lambda m, p, fd: p.madvise(A, P, -1), errno.EINVAL),
    ("mmap length 0", lambda m, p, fd: p.mmap(0, 0, RW, PA), errno.EINVAL),
    ("mmap unaligned offset", lambda m, p, fd: p.mmap(0, P, RW, sf.MAP_PRIVATE, fd, 1),
     errno.EINVAL),
    ("mmap bad fd", lambda m, p, fd: p.mmap(0, P, RW, sf.MAP_PRIVATE, 99), errno.EBADF),
    ("mmap negative fd", lambda m, p, fd: p.mmap(0, P, RW, sf.MAP_PRIVATE, -1), errno.EBADF),
    ("close -1", lambda m, p, fd: p.close(-1), errno.EBADF),
    ("pread bad fd", lambda m, p, fd: p.pread(99, 1, 0), errno.EBADF),
    ("pread negative offset (before the fd)", lambda m, p, fd: p.pread(99, 1, -1), errno.EINVAL),
    ("pread end past loff_t", lambda m, p, fd: p.pread(fd, 1, (1 << 63) - 1), errno.EINVAL),
    ("pread count past ssize_t", lambda m, p, fd: p.pread(fd, 1 << 63, 0), errno.EINVAL),
    ("pwrite negative offset", lambda m, p, fd: p.pwrite(fd, b"x", -1), errno.EINVAL),
    ("pwrite end past loff_t", lambda m, p, fd: p.pwrite(fd, b"ab", (1 << 63) - 1), errno.EINVAL),
    ("open missing file", lambda m, p, fd: p.open("/nope"), errno.ENOENT),
    ("open O_CREAT|O_EXCL of a file", lambda m, p, fd: p.open("/f", sf.O_CREAT | sf.O_EXCL),
     errno.EEXIST),
]


@pytest.mark.parametrize("what,call,err", ERRNOS, ids=[c[0] for c in ERRNOS])
def test_values_in_range_get_linux_errno(what, call, err):
    m, p, fd = setup()
    before = state(m, p)
    with pytest.raises(OSError) as e:
        call(m, p, fd)
    assert e.value.errno == err
    assert state(m, p) == before


def _host_files(fn):
    """Run ``fn(dir)`` with a scratch directory on tmpfs."""
    d = tempfile.mkdtemp(dir="/dev/shm")
    try:
        return fn(d)
    finally:
        for f in os.listdir(d):
            os.unlink(os.path.join(d, f))
        os.rmdir(d)


def _errno(call):
    try:
        call()
    except OSError as e:
        return e.errno
    return 0


def test_file_syscalls_as_linux():
    """pread/pwrite offset checks in Linux's order, O_ACCMODE 3 (an fd that
    can neither read nor write: mmap EACCES, pread/pwrite EBADF),
    O_RDONLY|O_TRUNC truncates, an empty pwrite does not extend the file."""
    def model():
        m = sf.Machine()
        m.create_file("/f", b"x" * 10000)
        p = m.spawn()
        fd3 = p.open("/f", 3)
        out = [_errno(lambda: p.mmap(0, P, sf.PROT_READ, sf.MAP_PRIVATE, fd3)),
               _errno(lambda: p.pread(fd3, 1, 0)), _errno(lambda: p.pwrite(fd3, b"a", 0))]
        p.close(fd3)
        fd = p.open("/f", sf.O_RDONLY | sf.O_TRUNC)
        out.append(len(p.pread(fd, 100, 0)))
        p.close(fd)
        fd = p.open("/f", sf.O_RDWR)
        out += [p.pwrite(fd, b"", 100000), len(p.pread(fd, 1 << 20, 0)),
                _errno(lambda: p.pread(fd, 1, -1)), _errno(lambda: p.pread(-1, 1, -1)),
                _errno(lambda: p.pread(fd, 1, (1 << 63) - 1))]
        return out

    want = [errno.EACCES, errno.EBADF, errno.EBADF, 0, 0, 0, errno.EINVAL, errno.EINVAL,
            errno.EINVAL]
    assert model() == want
    if not HOST_OK:
        return
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                          ctypes.c_int, ctypes.c_long]

    def host(d):
        f = os.path.join(d, "f")
        with open(f, "wb") as fh:
            fh.write(b"x" * 10000)
        fd3 = os.open(f, 3)
        r = libc.mmap(None, P, sf.PROT_READ, sf.MAP_PRIVATE, fd3, 0)
        out = [ctypes.get_errno() if r == ctypes.c_void_p(-1).value else 0,
               _errno(lambda: os.pread(fd3, 1, 0)), _errno(lambda: os.pwrite(fd3, b"a", 0))]
        os.close(fd3)
        fd = os.open(f, os.O_RDONLY | os.O_TRUNC)
        out.append(len(os.pread(fd, 100, 0)))
        os.close(fd)
        fd = os.open(f, os.O_RDWR)
        out += [os.pwrite(fd, b"", 100000), len(os.pread(fd, 1 << 20, 0)),
                _errno(lambda: os.pread(fd, 1, -1)), _errno(lambda: os.pread(-1, 1, -1)),
                _errno(lambda: os.pread(fd, 1, (1 << 63) - 1))]
        os.close(fd)
        return out
    assert _host_files(host) == want


def test_truncating_a_mapped_file_unmaps_it_everywhere():
    """open(O_TRUNC) of a mapped file (truncate_pagecache): every mapping —
    shared, and private with a COWed copy — loses its pages; an access is
    then beyond the end of the file: SIGBUS (BUS_ADRERR)."""
    def model():
        m = sf.Machine()
        m.create_file("/f", b"t" * 2 * P)
        p = m.spawn()
        fd = p.open("/f", sf.O_RDWR)
        s = p.mmap(0, 2 * P, RW, sf.MAP_SHARED, fd)
        q = p.mmap(0, 2 * P, RW, sf.MAP_PRIVATE, fd)
        p.write(q, b"C")
        p.read(s, 1)
        c = p.fork()
        p.close(p.open("/f", sf.O_RDWR | sf.O_TRUNC))
        out = [c.pagemap(s).present, p.pagemap(q).present]
        for who, addr in ((p, s), (p, q), (c, q)):
            try:
                who.read(addr, 1)
                out.append("read")
            except sf.BusError as e:
                out.append(("SIGBUS", e.si_code))
        m.check()
        return out
    assert model() == [False, False, ("SIGBUS", sf.BUS_ADRERR), ("SIGBUS", sf.BUS_ADRERR),
                       ("SIGBUS", sf.BUS_ADRERR)]
    if not HOST_OK:
        return
    import ctypes
    import faulthandler
    import signal

    def host(h, b):
        h.machine.create_file("/f", b"t" * 2 * P)
        fd = h.open("/f", os.O_RDWR)
        h.mmap(b, 2 * P, RW, sf.MAP_SHARED | sf.MAP_FIXED, fd, 0)
        h.mmap(b + 4 * P, 2 * P, RW, sf.MAP_PRIVATE | sf.MAP_FIXED, fd, 0)
        h.write(b + 4 * P, b"C")
        h.read(b, 1)
        os.close(os.open(h.machine.root + "/f", os.O_RDWR | os.O_TRUNC))
        out = [h.pagemap(b).present, h.pagemap(b + 4 * P).present]
        for addr in (b, b + 4 * P):
            pid = os.fork()
            if pid == 0:
                faulthandler.disable()          # die of the signal, quietly
                ctypes.string_at(addr, 1)
                os._exit(0)
            _, status = os.waitpid(pid, 0)
            out.append("SIGBUS" if os.WTERMSIG(status) == signal.SIGBUS else status)
        return out
    assert run_host_forked(host, tmpfs=True) == [False, False, "SIGBUS", "SIGBUS"]


def test_addresses_past_the_user_space_fault_without_walking():
    """The page tables cover 48 bits: an address past TASK_SIZE must not
    alias a mapping below it.  The guard page and the kernel half are
    SEGV_MAPERR; a non-canonical address is a general protection fault
    (SI_KERNEL, si_addr 0); pagemap has nothing there."""
    m, p, fd = setup()
    cases = ((A + (1 << 48), sf.SI_KERNEL, 0),             # aliases A in 48 bits
             (sf.TASK_SIZE, sf.SEGV_MAPERR, sf.TASK_SIZE),
             ((1 << 64) - P, sf.SEGV_MAPERR, (1 << 64) - P))
    for addr, code, at in cases:
        for call in (p.read, p.write, p.access):
            with pytest.raises(sf.SegmentationFault) as e:
                call(addr, b"x" if call == p.write else 1 if call == p.read else "exec")
            assert (e.value.si_code, e.value.addr) == (code, at)
        assert p.pagemap(addr).raw == 0
    assert p.read(A, 4) == b"data"
