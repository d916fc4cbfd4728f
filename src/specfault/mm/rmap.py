"""The reverse map (mm/rmap.c, mm/interval_tree.c): from a page to the
PTEs that map it, without any mm's ``mmap_lock``.

Two indexes, as in Linux:

* a file's ``i_mmap`` (``struct address_space``): every VMA mapping the
  inode, queried by file page offset (``vma_interval_tree_foreach``);
* an ``anon_vma``'s ``rb_root``: every VMA whose ``anon_vma_chain`` holds
  that anon_vma (its own pages, and those its fork children inherited),
  queried by the anonymous page's linear index
  (``anon_vma_interval_tree_foreach``).

Both are :class:`VmaIntervalTree`: the VMAs of one root, asked for those
whose ``[vm_pgoff, vm_pgoff + pages)`` meets ``[first, last]``.  The key is
read from the VMA at query time, so a VMA whose range or pgoff changes
(split, merge, mremap, stack growth) stays correctly indexed without being
re-inserted; what changes membership is linking and unlinking, below.  A
query costs O(VMAs in the root), where Linux's augmented rbtree costs
O(log n + hits): fine for the model's address spaces (docs/fidelity.md).

Who maintains them (the only writers; every site holds the mm's
``mmap_lock`` for write, except anon_vma_prepare: read + page_table_lock):

* ``vma_link`` links a VMA it inserts into the tree (``vma_link_file`` +
  the anon_vma_chain links of ``anon_vma_clone``/``anon_vma_fork``);
* ``vm_area_free`` unlinks one (``unlink_file_vma`` + ``unlink_anon_vmas``,
  which Linux runs from free_pgtables/remove_vma: after the zap);
* ``anon_vma_chain_link`` gives an already linked VMA an anon_vma chain
  (anon_vma_prepare, dup_anon_vma at a merge, mremap's DONTUNMAP unlink).

Locks.  Linux's walkers hold ``i_mmap_rwsem`` / ``anon_vma->root->rwsem``
for read and the writers above hold them for write.  The model's index
updates are atomic with respect to every op (plain stores between two
ops, as the writers' critical sections are), and its walkers
(``rmap_walk``) take no lock on the index: they walk under
``rcu_read_lock`` (page tables and VMAs are freed after a grace period —
Linux 6.5+'s ``pte_offset_map`` relies on the same for its tables) and
validate everything they act on under the PTE table's PTL (the PTE must
still map the folio).  A walk torn by a concurrent VMA change can only
miss a mapping; reclaim then finds the folio still mapped and keeps it,
as Linux does when try_to_unmap() fails.

Fields
------
VmaIntervalTree
# changed by the writers above (mmap_lock write); read by rmap walkers
# under rcu_read_lock with no lock on the index (see Locks)
    vmas      id(vma) -> vma, in insertion order (walks are deterministic)
VmArea.vm_rmap_linked (vma.py)
# same rule: True while the VMA is in its file's i_mmap and its anon_vmas'
# rb_roots
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any


class VmaIntervalTree:
    """``struct rb_root_cached`` of VMAs keyed by their file-page interval
    (``vma_interval_tree_*`` / ``anon_vma_interval_tree_*``)."""

    __slots__ = ("vmas",)

    def __init__(self) -> None:
        self.vmas: dict[int, Any] = {}

    def insert(self, vma: Any) -> None:
        self.vmas[id(vma)] = vma

    def remove(self, vma: Any) -> None:
        self.vmas.pop(id(vma), None)

    def __contains__(self, vma: Any) -> bool:
        return id(vma) in self.vmas

    def __len__(self) -> int:
        return len(self.vmas)

    def foreach(self, first: int, last: int) -> Iterator[Any]:
        """The VMAs whose pages [vm_pgoff, vm_pgoff + pages - 1] meet
        [first, last] (a snapshot: the caller may sleep between them)."""
        for vma in list(self.vmas.values()):
            start = vma.vm_pgoff
            if start <= last and start + ((vma.vm_end - vma.vm_start) >> 12) - 1 >= first:
                yield vma

    def all(self) -> list[Any]:
        return list(self.vmas.values())


def vma_interval_tree_foreach(mapping: Any, first: int, last: int) -> Iterator[Any]:
    """The VMAs of inode ``mapping``'s i_mmap that map a page in
    [first, last] of the file."""
    return mapping.i_mmap.foreach(first, last)  # type: ignore[no-any-return]


def anon_vma_interval_tree_foreach(anon_vma: Any, first: int, last: int) -> Iterator[Any]:
    """The VMAs linked to ``anon_vma`` that cover linear page index
    [first, last]."""
    return anon_vma.rb_root.foreach(first, last)  # type: ignore[no-any-return]


# ------------------------------------------------------------ maintenance
def _link_anon(vma: Any) -> None:
    for av in vma.anon_vma_chain:        # anon_vma_chain_link(): one avc each
        av.rb_root.insert(vma)


def _unlink_anon(vma: Any) -> None:
    for av in vma.anon_vma_chain:
        av.rb_root.remove(vma)


def vma_link_rmap(vma: Any) -> None:
    """A VMA entering the mm's tree enters the reverse map: its file's
    i_mmap (vma_link_file / __vma_link_file) and the rb_root of every
    anon_vma of its chain.  Caller holds mmap_lock for write."""
    if vma.vm_rmap_linked:
        return
    if vma.vm_file is not None:
        vma.vm_file.inode.i_mmap.insert(vma)
    _link_anon(vma)
    vma.vm_rmap_linked = True


def vma_unlink_rmap(vma: Any) -> None:
    """unlink_file_vma() + unlink_anon_vmas(): the VMA leaves the reverse
    map (after its PTEs were zapped, before it is freed).  Caller holds
    mmap_lock for write."""
    if not vma.vm_rmap_linked:
        return
    if vma.vm_file is not None:
        vma.vm_file.inode.i_mmap.remove(vma)
    _unlink_anon(vma)
    vma.vm_rmap_linked = False


def anon_vma_chain_link(vma: Any, anon_vma: Any, chain: list[Any]) -> None:
    """Give ``vma`` the anon_vma ``anon_vma`` and chain ``chain`` (None and
    [] drop them: unlink_anon_vmas), keeping the rb_roots in step when the
    VMA is in the reverse map.  Caller holds mmap_lock for write, or for
    read with mm.page_table_lock (anon_vma_prepare)."""
    if vma.vm_rmap_linked:
        _unlink_anon(vma)
    vma.anon_vma = anon_vma
    vma.anon_vma_chain = chain
    if vma.vm_rmap_linked:
        _link_anon(vma)


def vma_address(vma: Any, pgoff: int) -> int:
    """vma_address(): the address at which ``vma`` maps page ``pgoff`` (of
    its file, or the anonymous linear index), or -1 when outside it."""
    addr = vma.vm_start + ((pgoff - vma.vm_pgoff) << 12)
    if addr < vma.vm_start or addr >= vma.vm_end:
        return -1
    return addr  # type: ignore[no-any-return]


def rmap_vmas(page: Any) -> Iterator[tuple[Any, int]]:
    """rmap_walk()'s choice of index and its VMA loop: (vma, address) for
    every VMA that may map ``page`` — rmap_walk_anon() through the page's
    anon_vma, rmap_walk_file() through its inode's i_mmap.  A snapshot of
    the index; the caller validates each PTE under its PTL."""
    mapping = page.mapping
    if mapping is None:
        return
    pgoff = page.index
    if page.anon:
        it = anon_vma_interval_tree_foreach(mapping, pgoff, pgoff)
    else:
        it = vma_interval_tree_foreach(mapping, pgoff, pgoff)
    for vma in it:
        addr = vma_address(vma, pgoff)
        if addr >= 0:
            yield vma, addr


def check_rmap(kernel: Any) -> list[str]:
    """The reverse map agrees with the VMA trees: every VMA in a live mm's
    tree is linked in its file's i_mmap and in the rb_root of each
    anon_vma of its chain; every VMA an index holds is such a VMA, or one
    out of the tree whose free is still to come (munmap zaps before it
    unlinks).  A list of problems (empty: consistent)."""
    problems: list[str] = []
    live: dict[int, Any] = {}
    for mm in kernel.mms:
        if mm.dead:
            continue
        for vma in mm.vmas():
            live[id(vma)] = vma
            if not vma.vm_rmap_linked:
                problems.append(f"{vma.label()} of {mm.label()} is not in the reverse map")
                continue
            if vma.vm_file is not None and vma not in vma.vm_file.inode.i_mmap:
                problems.append(f"{vma.label()} missing from {vma.vm_file.inode.label()}'s i_mmap")
            for av in vma.anon_vma_chain:
                if vma not in av.rb_root:
                    problems.append(f"{vma.label()} missing from {av!r}'s rb_root")
            if vma.anon_vma is not None and vma.anon_vma not in vma.anon_vma_chain:
                problems.append(f"{vma.label()}: its anon_vma is not in its chain")
    seen_roots: dict[int, Any] = {}
    for vma in live.values():
        if vma.vm_file is not None:
            seen_roots[id(vma.vm_file.inode.i_mmap)] = ("i_mmap", vma.vm_file.inode.i_mmap)
        for av in vma.anon_vma_chain:
            seen_roots[id(av.rb_root)] = (repr(av), av.rb_root)
    for name, root in seen_roots.values():
        for vma in root.all():
            if id(vma) not in live and vma.freed_at is not None:
                problems.append(f"{name} holds freed {vma.label()}")
            elif id(vma) in live:
                if vma.vm_file is not None and root is vma.vm_file.inode.i_mmap:
                    continue
                if not any(av.rb_root is root for av in vma.anon_vma_chain):
                    problems.append(f"{name} holds {vma.label()}, whose chain does not name it")
    return problems
