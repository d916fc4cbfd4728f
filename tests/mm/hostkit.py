"""The host kernel as a reference: the same scenario run on this machine's
Linux through ctypes, so unit tests can pin a rule to what the kernel does.

Everything happens inside a fixed, otherwise unused window of the test
process's address space (``BASE``), reserved and released by each run; maps,
pagemap and smaps VmFlags are read back from /proc/self.  Scenarios that fork
run in a forked child, which reports through a pipe.  Files go to a private
temporary directory, on tmpfs (/dev/shm) when ``tmpfs=True``: the model's
files are single-page folios, like tmpfs's, where ext4 uses large folios.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import struct
import sys
import tempfile
from collections.abc import Callable
from typing import Any

from specfault.mm.proc import PagemapEntry

PAGE = 4096
BASE = 0x3F0000000000            # far from anything the test process maps
WINDOW = 1 << 30

HOST_OK = sys.platform == "linux" and os.geteuid() == 0

_libc = ctypes.CDLL(None, use_errno=True)
for _name, _args in {
    "mmap": [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int,
             ctypes.c_long],
    "munmap": [ctypes.c_void_p, ctypes.c_size_t],
    "mprotect": [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int],
    "madvise": [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int],
}.items():
    getattr(_libc, _name).argtypes = _args
_libc.mmap.restype = ctypes.c_void_p
_libc.mremap.restype = ctypes.c_void_p
_libc.mremap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t, ctypes.c_int,
                         ctypes.c_void_p]
MAP_FAILED = ctypes.c_void_p(-1).value


def _check(ret: int | None, fail: Any) -> int:
    if ret == fail:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
    return ret or 0


class _HostMachine:
    """Stands in for specfault.Machine where scenarios create files."""

    def __init__(self, root: str) -> None:
        self.root = root

    def create_file(self, path: str, data: bytes = b"") -> None:
        with open(self.root + path, "wb") as f:
            f.write(data)


class Host:
    """The subset of specfault.Process's API used by the tests, on the host.
    Paths given to ``open`` / ``machine.create_file`` live under a private
    temporary directory."""

    def __init__(self, tmpfs: bool = False) -> None:
        where = "/dev/shm" if tmpfs else None
        self.machine = _HostMachine(tempfile.mkdtemp(prefix="specfault-host-", dir=where))
        self.fds: list[int] = []

    def open(self, path: str, flags: int = os.O_RDONLY) -> int:
        fd = os.open(self.machine.root + path, flags)
        self.fds.append(fd)
        return fd

    def close(self, fd: int) -> None:
        os.close(fd)
        self.fds.remove(fd)

    def pread(self, fd: int, n: int, off: int) -> bytes:
        return os.pread(fd, n, off)

    def pwrite(self, fd: int, data: bytes, off: int) -> int:
        return os.pwrite(fd, data, off)

    def cleanup(self) -> None:
        for fd in self.fds:
            os.close(fd)
        shutil.rmtree(self.machine.root, ignore_errors=True)

    def mmap(self, addr: int, length: int, prot: int, flags: int, fd: int = -1,
             offset: int = 0) -> int:
        return _check(_libc.mmap(addr, length, prot, flags, fd, offset), MAP_FAILED)

    def munmap(self, addr: int, length: int) -> None:
        _check(_libc.munmap(addr, length), -1)

    def mprotect(self, addr: int, length: int, prot: int) -> None:
        _check(_libc.mprotect(addr, length, prot), -1)

    def madvise(self, addr: int, length: int, advice: int) -> None:
        _check(_libc.madvise(addr, length, advice), -1)

    def mremap(self, old: int, old_len: int, new_len: int, flags: int = 0,
               new_addr: int = 0) -> int:
        return _check(_libc.mremap(old, old_len, new_len, flags, new_addr), MAP_FAILED)

    def write(self, addr: int, data: bytes) -> None:
        ctypes.memmove(addr, data, len(data))

    def read(self, addr: int, n: int) -> bytes:
        return ctypes.string_at(addr, n)

    def access(self, addr: int, kind: str = "read") -> None:
        b = ctypes.string_at(addr, 1)
        if kind == "write":
            ctypes.memmove(addr, b, 1)

    def maps(self) -> str:
        with open("/proc/self/maps") as f:
            return f.read()

    def pagemap(self, addr: int) -> PagemapEntry:
        with open("/proc/self/pagemap", "rb") as f:
            f.seek((addr // PAGE) * 8)
            return PagemapEntry(int(struct.unpack("<Q", f.read(8))[0]))

    def smaps(self) -> list[dict[str, Any]]:
        """The fields of /proc/self/smaps the model's ``smaps()`` has."""
        out: list[dict[str, Any]] = []
        with open("/proc/self/smaps") as f:
            for line in f:
                head = line.split()
                if "-" in head[0] and not head[0].endswith(":"):
                    lo, hi = (int(x, 16) for x in head[0].split("-"))
                    out.append({"start": lo, "end": hi})
                elif head[0] in ("Size:", "Rss:", "Anonymous:", "AnonHugePages:"):
                    out[-1][head[0][:-1]] = int(head[1])
                elif head[0] == "VmFlags:":
                    out[-1]["VmFlags"] = head[1:]
        return out


def layout(maps_text: str, base: int, size: int = WINDOW) -> list[tuple[int, int, str, int]]:
    """The VMAs of a maps text inside [base, base+size), as (first page,
    end page, perms, file offset in pages) relative to ``base``."""
    out = []
    for line in maps_text.splitlines():
        rng, perms, off = line.split()[:3]
        lo, hi = (int(x, 16) for x in rng.split("-"))
        if lo >= base and hi <= base + size:
            out.append(((lo - base) // PAGE, (hi - base) // PAGE, perms, int(off, 16) // PAGE))
    return out


def vmflags(smaps: list[dict[str, Any]], base: int, size: int = WINDOW) -> list[tuple[int, int, str]]:
    """VmFlags of the VMAs inside [base, base+size), as (first page, end
    page, flags) relative to ``base``; "sd" (soft-dirty, which this host's
    kernel is built without and the model keeps) is left out."""
    return [((v["start"] - base) // PAGE, (v["end"] - base) // PAGE,
             " ".join(f for f in v["VmFlags"] if f != "sd"))
            for v in smaps if v["start"] >= base and v["end"] <= base + size]


def in_child(h: Any, fn: Callable[[Any], Any]) -> Any:
    """``fn(child)`` in a child forked from ``h`` — a model Process or the
    host — and its result; the child exits after.  On the host the child
    is a real fork() of this process (run the scenario with
    run_host_forked) and the result travels back as repr()."""
    if not isinstance(h, Host):
        child = h.fork()
        try:
            return fn(child)
        finally:
            child.exit()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:                                   # the child
        try:
            os.close(r)
            try:
                res = repr(("ok", fn(h)))
            except OSError as e:
                res = repr(("oserror", e.errno))
            os.write(w, res.encode())
        finally:
            os._exit(0)
    os.close(w)
    chunks = []
    while b := os.read(r, 65536):
        chunks.append(b)
    os.close(r)
    os.waitpid(pid, 0)
    kind, val = eval(b"".join(chunks).decode())  # noqa: S307 - our own repr
    if kind == "oserror":
        raise OSError(val, os.strerror(val))
    return val


def run_host(scenario: Callable[[Host, int], Any], tmpfs: bool = False) -> Any:
    """Run ``scenario(host, base)`` on the host kernel inside the window and
    return its result; the window is unmapped afterwards."""
    h = Host(tmpfs)
    try:
        return scenario(h, BASE)
    finally:
        _libc.munmap(BASE, WINDOW)
        h.cleanup()


def run_host_forked(scenario: Callable[[Host, int], Any], tmpfs: bool = False) -> Any:
    """Like run_host, in a forked child (for scenarios that fork or die);
    the result travels back as repr() and is eval()ed."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:                                   # child
        try:
            os.close(r)
            h = Host(tmpfs)
            try:
                res = repr(("ok", scenario(h, BASE)))
            except OSError as e:
                res = repr(("oserror", e.errno))
            h.cleanup()
            os.write(w, res.encode())
        finally:
            os._exit(0)
    os.close(w)
    chunks = []
    while True:
        b = os.read(r, 65536)
        if not b:
            break
        chunks.append(b)
    os.close(r)
    os.waitpid(pid, 0)
    kind, val = eval(b"".join(chunks).decode())  # noqa: S307 - our own repr
    if kind == "oserror":
        raise OSError(val, os.strerror(val))
    return val


def host_errno(fn: Callable[[], Any]) -> int:
    try:
        fn()
    except OSError as e:
        return e.errno or 0
    return 0


__all__ = ["BASE", "HOST_OK", "Host", "PAGE", "WINDOW", "host_errno", "in_child", "layout",
           "run_host", "run_host_forked", "vmflags"]
