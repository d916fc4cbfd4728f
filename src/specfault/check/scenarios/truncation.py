"""Races against truncation and hole punching: the writers that change
page tables without any mmap_lock (truncate.py), against the file fault
path (filemap.filemap_fault, memory.do_read_fault / do_cow_fault /
do_shared_fault).

Layout (P = the process, its threads T0 and T1; F = the file /f, two
pages, cached unless said otherwise):

    M:   [ F0 | F1 ]   a mapping of F (shared or private, as the spec says)
    M2:  [ F0 | F1 ]   a second shared mapping of F (punch-vs-shared-fault)

Every protocol takes a file fault down the same handlers (the speculative
ones abort to the classic path first: SPF_ABORT_NO_SPECULATE; per-VMA locks
take it under the VMA lock), so every spec runs under all four.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import specfault as sf
from specfault.check.scenarios.base import MmSpec, Step, access, syscall
from specfault.mm.mmap import sys_munmap
from specfault.mm.mprotect import sys_mprotect
from specfault.mm.truncate import do_truncate, shmem_punch_hole

PAGE = 4096
PATH = "/f"
RW = sf.PROT_READ | sf.PROT_WRITE


def file_setup(shared: bool = True, second: bool = False, evict: tuple[int, ...] = (),
               touch: tuple[int, ...] = ()):  # type: ignore[no-untyped-def]
    """Setup: F of two pages (bytes "F0..." and "F1..."); P maps it at M
    (shared or private, read-write) and, with ``second``, again at M2
    (shared).  ``evict``: pages written back and dropped from the page
    cache (a fault must read them in); ``touch``: pages of M read first
    (mapped)."""

    def setup(m: sf.Machine) -> tuple[dict[str, Any], dict[str, int], list[tuple[int, int]]]:
        m.create_file(PATH, b"F0".ljust(PAGE, b"a") + b"F1".ljust(PAGE, b"b"))
        p = m.spawn("P")
        p.thread()
        fd = p.open(PATH, sf.O_RDWR)
        flags = sf.MAP_SHARED if shared else sf.MAP_PRIVATE
        addr = {"M": p.mmap(0, 2 * PAGE, RW, flags, fd)}
        addr["M1"] = addr["M"] + PAGE
        if second:
            addr["M2"] = p.mmap(0, 2 * PAGE, RW, sf.MAP_SHARED, fd)
        for i in touch:
            p.read(addr["M"] + i * PAGE, 1)
        fs = m.kernel.fs
        inode = fs.inodes[PATH]
        for i in evict:
            page = inode.pages[i]
            page.dirty = False                   # written back
            fs.remove_mapping(inode, page)       # and reclaimed
        region = [(a, a + 2 * PAGE) for k, a in addr.items() if k in ("M", "M2")]
        return {"P": p}, addr, region

    return setup


def ftruncate(size: int) -> Step:
    def run(w: Any, p: Any) -> Any:
        kernel = w.machine.kernel
        return do_truncate(kernel, kernel.fs.inodes[PATH], size)

    return syscall(f"ftruncate F {size}", run)


def punch(offset: int, length: int) -> Step:
    def run(w: Any, p: Any) -> Any:
        kernel = w.machine.kernel
        return shmem_punch_hole(kernel, kernel.fs.inodes[PATH], offset, length)

    return syscall(f"fallocate PUNCH_HOLE F {offset}+{length}", run)


def munmap(key: str, pages: int) -> Step:
    return syscall(f"munmap {key} {pages}p", lambda w, p: sys_munmap(p.mm, w.addr[key], pages * PAGE))


def mprotect_ro(key: str) -> Step:
    return syscall(f"mprotect {key} 1p ro",
                   lambda w, p: sys_mprotect(p.mm, w.addr[key], PAGE, sf.PROT_READ))


def _pread(offset: int, n: int) -> Callable[[Any, Any], Any]:
    async def run(w: Any, p: Any) -> bytes:
        fs = w.machine.kernel.fs
        return fs.read(fs.inodes[PATH], offset, n)      # filemap_read: no folio lock

    return run


SPECS = [
    MmSpec(
        "truncate-vs-read-fault",
        "T0 read-faults page 1 of a shared mapping of F, not cached (it is read "
        "in), while T1 truncates F to one page: the fault must re-check i_size "
        "under the folio lock — a page it inserted after truncation swept the "
        "cache would be mapped beyond EOF.",
        file_setup(evict=(1,)), [("P", [access("M1", "read")]), ("P", [ftruncate(PAGE)])]),
    MmSpec(
        "truncate-vs-cow-fault",
        "T0 write-faults page 1 of a private mapping of F (a COW copy of the "
        "file page) while T1 truncates F to one page: the copy is mapped under "
        "the file page's folio lock, so truncation's second unmap_mapping_range "
        "(even_cows) removes it — no private page survives beyond EOF.",
        file_setup(shared=False), [("P", [access("M1", "write")]), ("P", [ftruncate(PAGE)])]),
    MmSpec(
        "truncate-vs-shared-write",
        "T0 writes page 1 of a shared mapping of F, already mapped, and reads it "
        "back while T1 truncates F to one page and grows it back to two: the "
        "write lands in the file before the truncation or faults (SIGBUS) after "
        "it; after the truncation page 1 reads zeroes.",
        file_setup(touch=(1,)), [("P", [access("M1", "write"), access("M1", "read")]),
                                 ("P", [ftruncate(PAGE), ftruncate(2 * PAGE)])]),
    MmSpec(
        "punch-vs-shared-fault",
        "T0 write-faults page 0 through a second shared mapping M2 of F, then "
        "reads page 0 through M (mapped) while T1 punches a hole over page 0: "
        "the two mappings are views of one file page — the punch must unmap a "
        "page before it leaves the cache, and the fault must re-check "
        "folio->mapping under the folio lock, or one view keeps a page the "
        "file no longer has.",
        file_setup(second=True, touch=(0,)), [
            ("P", [access("M2", "write"), access("M", "read")]),
            ("P", [punch(0, PAGE)])]),
    MmSpec(
        "punch-vs-pread",
        "T0 writes page 0 of a shared mapping of F (mapped) and preads it "
        "twice through the file while T1 punches a hole over it: a page left "
        "mapped after it left the cache would take writes the file never sees.",
        file_setup(touch=(0,)), [
            ("P", [access("M", "write"), syscall("pread F 0", _pread(0, 2)),
                   access("M", "write", data=b"T0-b"), syscall("pread F 0", _pread(0, 4))]),
            ("P", [punch(0, PAGE)])]),
    MmSpec(
        "truncate-vs-munmap",
        "T0 unmaps all of a shared mapping of F, both pages mapped, while T1 "
        "truncates F to one page: truncation finds the VMA in F's i_mmap under "
        "i_mmap_rwsem (read), munmap unlinks it under the same lock (write) "
        "before it frees the page tables — so the truncation never walks a "
        "freed table, and no page or mapping leaks.",
        file_setup(touch=(0, 1)), [("P", [munmap("M", 2)]), ("P", [ftruncate(PAGE)])]),
    MmSpec(
        "truncate-vs-split",
        "T0 makes page 1 of a shared mapping of F read-only (mprotect splits "
        "the VMA) and reads it back while T1 truncates F to one page: the "
        "split changes the VMA's range and links the new half under "
        "i_mmap_rwsem, so the truncation sees one VMA or two, never a gap — "
        "page 1 is unmapped (the read faults: SIGBUS) whichever half holds it.",
        file_setup(touch=(0, 1)), [("P", [mprotect_ro("M1"), access("M1", "read")]),
                                   ("P", [ftruncate(PAGE)])]),
]
