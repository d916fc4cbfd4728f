"""VMA split and merge (mm/vma.c), pinned to the host kernel.

Layouts are drawn one character per page from the base of the test window:
``a`` anon rw, ``r`` anon read-only, ``.`` hole.  Each scenario returns the
layout as (first page, end page, perms, file offset in pages) tuples."""

from __future__ import annotations

from hostkit import PAGE as P
from hostkit import layout
from mmkit import assert_linux

from specfault import MAP_ANONYMOUS, MAP_FIXED, MAP_PRIVATE, MREMAP_FIXED, MREMAP_MAYMOVE, O_RDONLY
from specfault import PROT_READ as R
from specfault import PROT_WRITE as W

RW = R | W
PA = MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED


def L(h, b, n=64):
    return layout(h.maps(), b, n * P)


def test_adjacent_anon_mmaps_merge():
    """
    before:  aa..      mmap [0,2) rw, then [2,4) rw
    after:   aaaa      one VMA
    """
    def s(h, b):
        h.mmap(b, 2 * P, RW, PA)
        h.mmap(b + 2 * P, 2 * P, RW, PA)
        return L(h, b)
    assert_linux(s, [(0, 4, "rw-p", 0)])


def test_different_prot_does_not_merge():
    """
    aa rr   -> two VMAs
    """
    def s(h, b):
        h.mmap(b, 2 * P, RW, PA)
        h.mmap(b + 2 * P, 2 * P, R, PA)
        return L(h, b)
    assert_linux(s, [(0, 2, "rw-p", 0), (2, 4, "r--p", 0)])


def test_mprotect_splits_in_three_and_merges_back():
    """
    aaaaaa  --mprotect [2,4) R-->  aa rr aa  --mprotect [2,4) RW-->  aaaaaa
    """
    def s(h, b):
        h.mmap(b, 6 * P, RW, PA)
        h.write(b, b"x")                       # faulted: has an anon_vma
        h.mprotect(b + 2 * P, 2 * P, R)
        split = L(h, b)
        h.mprotect(b + 2 * P, 2 * P, RW)
        return split, L(h, b)
    assert_linux(s, ([(0, 2, "rw-p", 0), (2, 4, "r--p", 0), (4, 6, "rw-p", 0)],
                     [(0, 6, "rw-p", 0)]))


def test_vm_account_quirk():
    """mmap R private, mprotect RW, back to R: once the VMA has an anon_vma
    it keeps VM_ACCOUNT and no longer merges with a never-writable R
    neighbour; without an anon_vma VM_ACCOUNT is dropped and it merges.

    unfaulted:  rr rr -> rr aa -> rrrr          (merged)
    faulted:    rr rr -> rr aA -> rr|rr         (VM_ACCOUNT differs)
    """
    def s(h, b):
        for o, faulted in ((0, False), (16, True)):
            h.mmap(b + o * P, 2 * P, R, PA)
            h.mmap(b + (o + 2) * P, 2 * P, R, PA)
            h.mprotect(b + (o + 2) * P, 2 * P, RW)
            if faulted:
                h.write(b + (o + 2) * P, b"x")
            h.mprotect(b + (o + 2) * P, 2 * P, R)
        return L(h, b)
    assert_linux(s, [(0, 4, "r--p", 0), (16, 18, "r--p", 0), (18, 20, "r--p", 0)])


def test_anon_vma_compatibility():
    """Filling the hole between two VMAs:

    A.B  both faulted (different anon_vmas)  -> AA|B   merges left only
    ...  neither faulted                     -> aaa    one VMA
    A..  left faulted, right not             -> AAA    one VMA
    """
    def s(h, b):
        h.mmap(b, P, RW, PA)
        h.write(b, b"a")
        h.mmap(b + 2 * P, P, RW, PA)
        h.write(b + 2 * P, b"b")
        h.mmap(b + P, P, RW, PA)
        h.mmap(b + 10 * P, P, RW, PA)
        h.mmap(b + 12 * P, P, RW, PA)
        h.mmap(b + 11 * P, P, RW, PA)
        h.mmap(b + 20 * P, P, RW, PA)
        h.write(b + 20 * P, b"x")
        h.mmap(b + 22 * P, P, RW, PA)
        h.mmap(b + 21 * P, P, RW, PA)
        return L(h, b)
    assert_linux(s, [(0, 2, "rw-p", 0), (2, 3, "rw-p", 0), (10, 13, "rw-p", 0),
                     (20, 23, "rw-p", 0)])


def test_anon_vma_reused_from_compatible_neighbour():
    """A read-only VMA faulted next to a faulted rw one shares its anon_vma
    (find_mergeable_anon_vma), so making it rw merges them; two VMAs faulted
    apart have different anon_vmas and never merge.

    Ar -> AA          A r B (each faulted alone) -> AA|B
    """
    def s(h, b):
        h.mmap(b, 2 * P, RW, PA)
        h.write(b, b"a")
        h.mprotect(b + P, P, R)
        h.read(b + P, 1)
        h.mprotect(b + P, P, RW)
        h.mmap(b + 10 * P, P, RW, PA)
        h.write(b + 10 * P, b"x")
        h.mmap(b + 12 * P, P, RW, PA)
        h.write(b + 12 * P, b"y")
        h.mmap(b + 11 * P, P, R, PA)
        h.mprotect(b + 11 * P, P, RW)
        return L(h, b)
    assert_linux(s, [(0, 2, "rw-p", 0), (10, 12, "rw-p", 0), (12, 13, "rw-p", 0)])


def test_fork_child_vmas_do_not_merge():
    """In a forked child, a VMA with an inherited anon_vma does not absorb a
    new neighbour (vma_had_uncowed_parents); an unfaulted one does.

    parent: AA..aa     child: AA|a.aaa
    """
    import os

    def child_layout(h, b):
        h.mmap(b + 2 * P, P, RW, PA)            # next to the faulted VMA
        h.mmap(b + 6 * P, P, RW, PA)            # next to the unfaulted one
        h.mprotect(b, P, R)
        h.mprotect(b, P, RW)
        return L(h, b)

    from hostkit import HOST_OK, run_host_forked
    from mmkit import on_model

    def model(p, b):
        p.mmap(b, 2 * P, RW, PA)
        p.write(b, b"a")
        p.mmap(b + 4 * P, 2 * P, RW, PA)
        return child_layout(p.fork(), b)

    want = [(0, 2, "rw-p", 0), (2, 3, "rw-p", 0), (4, 7, "rw-p", 0)]
    assert on_model(model) == want
    if HOST_OK:
        def host(h, b):
            h.mmap(b, 2 * P, RW, PA)
            h.write(b, b"a")
            h.mmap(b + 4 * P, 2 * P, RW, PA)
            r, w = os.pipe()
            pid = os.fork()
            if pid == 0:
                os.write(w, repr(child_layout(h, b)).encode())
                os._exit(0)
            os.waitpid(pid, 0)
            os.close(w)
            return eval(os.read(r, 65536))  # noqa: S307
        assert run_host_forked(host) == want


def test_file_pgoff_continuity():
    """Adjacent private mappings of one file merge only when the file
    offsets continue: [0,2)@0 + [2,4)@2 -> one VMA; [4,6)@5 stays apart."""
    def s(h, b):
        h.machine.create_file("/f", b"z" * 16 * P)
        fd = h.open("/f", O_RDONLY)
        h.mmap(b, 2 * P, R, MAP_PRIVATE | MAP_FIXED, fd, 0)
        h.mmap(b + 2 * P, 2 * P, R, MAP_PRIVATE | MAP_FIXED, fd, 2 * P)
        h.mmap(b + 4 * P, 2 * P, R, MAP_PRIVATE | MAP_FIXED, fd, 5 * P)
        return L(h, b)
    assert_linux(s, [(0, 4, "r--p", 0), (4, 6, "r--p", 5)])


def test_pgoff_after_mremap_move():
    """A faulted anon VMA moved by mremap keeps its pgoff: moved back next
    to where it came from it merges again; an unfaulted one is given the
    pgoff of its new home, so it merges where it lands.

    AAAA -> AA..  ..AA@20 -> AAAA (moved back)
    """
    def s(h, b):
        h.mmap(b, 4 * P, RW, PA)
        h.write(b, b"A")
        h.write(b + 3 * P, b"D")
        h.mremap(b + 2 * P, 2 * P, 2 * P, MREMAP_MAYMOVE | MREMAP_FIXED, b + 20 * P)
        moved = L(h, b)
        h.mremap(b + 20 * P, 2 * P, 2 * P, MREMAP_MAYMOVE | MREMAP_FIXED, b + 2 * P)
        back = L(h, b)
        h.mmap(b + 30 * P, 2 * P, RW, PA)           # unfaulted
        h.mremap(b + 30 * P, 2 * P, 2 * P, MREMAP_MAYMOVE | MREMAP_FIXED, b + 4 * P)
        return moved, back, L(h, b), h.read(b + 3 * P, 1)
    assert_linux(s, ([(0, 2, "rw-p", 0), (20, 22, "rw-p", 0)], [(0, 4, "rw-p", 0)],
                     [(0, 6, "rw-p", 0)], b"D"))
