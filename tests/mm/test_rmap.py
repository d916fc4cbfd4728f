"""The reverse map (mm/rmap.py): i_mmap and the anon_vma rb_roots follow
every VMA change, and rmap_vmas() finds each PTE that maps a page."""

from __future__ import annotations

import specfault as sf
from specfault.mm.pgtable import pte_pfn, pte_present
from specfault.mm.rmap import check_rmap, rmap_vmas

RW = sf.PROT_READ | sf.PROT_WRITE
ANON = sf.MAP_PRIVATE | sf.MAP_ANONYMOUS
PAGE = 4096


def _page(p: sf.Process, addr: int):  # type: ignore[no-untyped-def]
    return p.mm.kernel.mem.pages[p.pagemap(addr).pfn]


def _mappers(page) -> set[tuple[int, int]]:  # type: ignore[no-untyped-def]
    """(mm id, address) of every PTE the rmap walk finds mapping ``page``."""
    out = set()
    for vma, addr in rmap_vmas(page):
        pt = vma.vm_mm.pgd
        for shift in (39, 30, 21):
            pt = pt.entries[(addr >> shift) & 511] if pt is not None else None
        pte = pt.entries[(addr >> 12) & 511] if pt is not None else 0
        if pte_present(pte) and pte_pfn(pte) == page.pfn:
            out.add((vma.vm_mm.id, addr))
    return out


def test_anon_page_found_in_parent_and_child_after_fork() -> None:
    m = sf.Machine(nr_frames=256)
    p = m.spawn()
    a = p.mmap(0, 4 * PAGE, RW, ANON)
    p.write(a + PAGE, b"x")
    c = p.fork()
    page = _page(p, a + PAGE)
    assert _mappers(page) == {(p.mm.id, a + PAGE), (c.mm.id, a + PAGE)}
    c.write(a + PAGE, b"y")                     # the child's copy is its own page
    assert _mappers(page) == {(p.mm.id, a + PAGE)}
    assert _mappers(_page(c, a + PAGE)) == {(c.mm.id, a + PAGE)}
    c.exit()
    m.check()


def test_anon_page_found_after_split_and_mremap() -> None:
    m = sf.Machine(nr_frames=256)
    p = m.spawn()
    a = p.mmap(0, 4 * PAGE, RW, ANON)
    for i in range(4):
        p.write(a + i * PAGE, b"x")
    p.mprotect(a + PAGE, PAGE, sf.PROT_READ)    # three VMAs, one anon_vma
    page = _page(p, a + 3 * PAGE)
    b = p.mremap(a + 2 * PAGE, 2 * PAGE, 2 * PAGE, sf.MREMAP_MAYMOVE | sf.MREMAP_FIXED,
                 a + 64 * PAGE)
    assert _mappers(page) == {(p.mm.id, b + PAGE)}
    assert check_rmap(m.kernel) == []
    p.munmap(b, 2 * PAGE)
    assert len(page.mapping.rb_root) == 2       # the two VMAs left at a
    m.check()


def test_file_i_mmap_follows_mmap_munmap_split_merge() -> None:
    m = sf.Machine(nr_frames=256)
    m.create_file("/f", bytes(8 * PAGE))
    p = m.spawn()
    fd = p.open("/f", sf.O_RDWR)
    a = p.mmap(0, 8 * PAGE, sf.PROT_READ, sf.MAP_SHARED, fd)
    b = p.mmap(0, 2 * PAGE, sf.PROT_READ, sf.MAP_PRIVATE, fd, 6 * PAGE)
    inode = m.kernel.fs.inodes["/f"]
    assert len(inode.i_mmap) == 2
    p.read(a + 6 * PAGE, 1)
    p.read(b, 1)
    page = inode.pages[6]
    assert _mappers(page) == {(p.mm.id, a + 6 * PAGE), (p.mm.id, b)}
    p.mprotect(a + 2 * PAGE, PAGE, sf.PROT_NONE)   # split in three
    assert len(inode.i_mmap) == 4
    p.mprotect(a + 2 * PAGE, PAGE, sf.PROT_READ)   # merged back
    assert len(inode.i_mmap) == 2
    c = p.fork()
    assert len(inode.i_mmap) == 4
    c.exit()
    p.munmap(a, 8 * PAGE)
    assert [v.vm_start for v in inode.i_mmap.all()] == [b]
    m.check()
