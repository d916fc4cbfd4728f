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

from specfault.mm.interval_tree import VmaIntervalTree
from specfault.mm.page import lru_move, rss_kind
from specfault.mm.pgtable import (
    _PAGE_ACCESSED,
    PMD_LEVEL,
    pte_dirty,
    pte_offset_map,
    pte_pfn,
    pte_present,
    pte_soft_dirty,
    pte_swp_mkexclusive,
    pte_swp_mksoft_dirty,
    pte_write,
    ptep_get_and_clear,
    ptep_test_and_clear_young,
    swp_entry_to_pte,
    walk,
)
from specfault.mm.swapfile import swap_duplicate
from specfault.mm.tlb import flush_tlb_range
from specfault.mm.vma import VM_DROPPABLE
from specfault.runtime import load_item, store_item

__all__ = ["VmaIntervalTree"]


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


# ------------------------------------------------------------- the walkers
class TlbUbc:
    """struct tlbflush_unmap_batch: the TLB flushes try_to_unmap deferred
    (TTU_BATCH_FLUSH), by mm, as address ranges; flushed by
    try_to_unmap_flush() before a page they cover is written or freed."""

    __slots__ = ("ranges", "writable")

    def __init__(self) -> None:
        self.ranges: dict[int, list[Any]] = {}    # id(mm) -> [mm, start, end]
        self.writable = False                      # a cleared PTE was writable

    def add(self, mm: Any, addr: int, writable: bool) -> None:
        mm.tlb_flush_batched = True                # set_tlb_ubc_flush_pending()
        r = self.ranges.get(id(mm))
        if r is None:
            self.ranges[id(mm)] = [mm, addr, addr + 4096]
        else:
            r[1] = min(r[1], addr)
            r[2] = max(r[2], addr + 4096)
        self.writable |= writable


async def try_to_unmap_flush(ubc: TlbUbc) -> None:
    """try_to_unmap_flush(): every deferred flush, now."""
    ranges = list(ubc.ranges.values())
    ubc.ranges.clear()
    ubc.writable = False
    for mm, start, end in ranges:
        mm.kernel.count("tlb_flush")
        await flush_tlb_range(mm, start, end)
        mm.tlb_flush_batched = False


async def try_to_unmap_flush_dirty(ubc: TlbUbc) -> None:
    """try_to_unmap_flush_dirty(): flush if a cleared PTE was writable — a
    CPU could otherwise still store to the page while it is written out."""
    if ubc.writable:
        await try_to_unmap_flush(ubc)


async def page_vma_mapped(vma: Any, addr: int, page: Any) -> Any:
    """page_vma_mapped_walk() for one page: walk ``vma``'s mm to ``addr``
    (no allocation), lock the PTE table's PTL and re-check that the PMD
    still holds that table (pte_offset_map_lock()'s pmd_same: mremap may
    have moved the whole table); return ``(pt, idx, pte)`` with the PTL
    held if the PTE maps ``page``, else None with nothing held.  Caller
    holds rcu_read_lock (page tables are freed after a grace period)."""
    mm = vma.vm_mm
    pmd = await walk(mm, addr, PMD_LEVEL)
    if pmd.level != PMD_LEVEL:
        return None
    pt = await pte_offset_map(pmd, addr)
    if pt is None or type(pt) is int:
        return None         # none, or a huge PMD: its THP is never on the LRU
    idx = (addr >> 12) & 511
    # knob try_to_unmap_no_ptl: the walker reads and clears the PTE without
    # the PTL — a fault committing under the PTL meanwhile is overwritten
    no_ptl = mm.config.knob("try_to_unmap_no_ptl")
    if not no_ptl:
        await pt.ptl.lock()
    # pmd_same: a table mremap moved meanwhile (move_normal_pmd) maps
    # other addresses now
    if await load_item(pmd, pmd.entries, (addr >> 21) & 511) is not pt:
        if not no_ptl:
            await pt.ptl.unlock()
        return None
    pte = await load_item(pt, pt.entries, idx)
    if not pte_present(pte) or pte_pfn(pte) != page.pfn:
        if not no_ptl:
            await pt.ptl.unlock()
        return None
    return pt, idx, pte


async def folio_referenced(page: Any) -> int:
    """folio_referenced(): how many PTEs mapping ``page`` had their
    accessed bit set — cleared now (ptep_clear_flush_young_notify, which
    on x86 clears without a flush: a stale TLB entry only delays the next
    accessed bit).  Walks the reverse map under rcu_read_lock, each PTE
    under its PTL.  Caller holds a reference on the page."""
    referenced = 0
    rcu = None
    for vma, addr in rmap_vmas(page):
        if rcu is None:
            rcu = vma.vm_mm.kernel.rcu
            await rcu.read_lock()
        got = await page_vma_mapped(vma, addr, page)
        if got is None:
            continue
        pt, idx, pte = got
        if pte & _PAGE_ACCESSED:
            referenced += 1
            await ptep_test_and_clear_young(pt, idx)
        if not vma.vm_mm.config.knob("try_to_unmap_no_ptl"):
            await pt.ptl.unlock()
    if rcu is not None:
        await rcu.read_unlock()
    return referenced


async def try_to_unmap(page: Any, ubc: TlbUbc) -> None:
    """try_to_unmap(folio, TTU_BATCH_FLUSH): clear every PTE mapping
    ``page``, found through the reverse map, each under its PTL and no
    mmap_lock.  Flushes are deferred into ``ubc``.  Per PTE
    (try_to_unmap_one):

    1. ptep_get_and_clear; a dirty PTE makes the folio dirty;
    2. a lazily freeable anonymous folio (MADV_FREE): discarded if nobody
       but its mappings holds it and it is clean (or VM_DROPPABLE) — else
       the PTE is restored, the folio swap-backed again, and the walk stops;
    3. another anonymous folio must be in the swap cache (add_to_swap):
       the PTE becomes its swap entry (swap_duplicate), exclusive if the
       page was PageAnonExclusive, soft-dirty if the PTE was; the mm's
       anon RSS moves to MM_SWAPENTS;
    4. a file folio just loses the mapping;
    5. folio_remove_rmap_pte and the mapping's reference dropped (the
       caller's isolation reference keeps the folio until after the flush).

    The caller holds the folio lock and a reference; the folio's mapcount
    tells it whether every mapping went."""
    rcu = None
    for vma, addr in rmap_vmas(page):
        mm = vma.vm_mm
        kernel = mm.kernel
        if rcu is None:
            rcu = kernel.rcu
            await rcu.read_lock()
        got = await page_vma_mapped(vma, addr, page)
        if got is None:
            continue
        pt, idx, pte = got
        no_ptl = mm.config.knob("try_to_unmap_no_ptl")
        pte = await ptep_get_and_clear(pt, idx)          # A/D bits as the MMU left them
        ubc.add(mm, addr, pte_write(pte))
        if pte_dirty(pte):
            page.dirty = True                              # folio_mark_dirty
        if page.anon:
            if page.lazyfree:
                droppable = bool(vma.vm_flags & VM_DROPPABLE)
                if page.refcount == 1 + page.mapcount and (not page.dirty or droppable):
                    new = 0                                # discard
                else:
                    await store_item(pt, pt.entries, idx, pte)   # set_pte_at(pteval)
                    if not droppable:
                        _set_swapbacked(kernel, page)
                    if not no_ptl:
                        await pt.ptl.unlock()
                    break
            else:
                entry = page.swap
                if not page.swapcache or swap_duplicate(kernel, entry) < 0:
                    await store_item(pt, pt.entries, idx, pte)
                    if not no_ptl:
                        await pt.ptl.unlock()
                    break
                new = swp_entry_to_pte(entry)
                if page.anon_exclusive:
                    new = pte_swp_mkexclusive(new)
                    page.anon_exclusive = False            # folio_try_share_anon_rmap_pte
                if pte_soft_dirty(pte):
                    new = pte_swp_mksoft_dirty(new)
                mm.rss["swap"] += 1
            if new:
                await store_item(pt, pt.entries, idx, new)
            else:
                pt.nr -= 1
        else:
            pt.nr -= 1
        mm.rss[rss_kind(page)] -= 1
        page.mapcount -= 1                                 # folio_remove_rmap_pte
        if page.mapcount == 0:
            page.anon_exclusive = False
        kernel.mem.put_page(page)                          # the mapping's reference
        if not no_ptl:
            await pt.ptl.unlock()
    if rcu is not None:
        await rcu.read_unlock()


def _set_swapbacked(kernel: Any, page: Any) -> None:
    """folio_set_swapbacked(): a redirtied MADV_FREE page is anonymous
    memory again (and moves to the anon LRU)."""
    page.lazyfree = False
    if page.lru is not None:
        lru_move(kernel.mem, page, page.active)
